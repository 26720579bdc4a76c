"""Delivering events to webhooks, off every request's path.

Each delivery (a row written with its event, :mod:`hutch.store.events`) is claimed by a
conditional update, so any number of hutch processes may run a deliverer and each delivery
is attempted by one at a time. An attempt POSTs the stored body with::

    X-Hutch-Event: sandbox.paused
    X-Hutch-Delivery: whd_…
    X-Hutch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the secret>

A 2xx answer delivers it; anything else (an error status, a refused or timed-out
connection, a receiver address that is not allowed) is retried after ``retry_s``, doubled
each time up to ten minutes, until ``max_attempts``; then it is ``failed``. The attempts
are in the delivery log (``GET /v1/webhooks/{id}/deliveries``).

Receivers must be on public addresses: the name is resolved here and the connection made
to the address that was checked (so a DNS answer cannot swap in another), unless the
address is in ``HUTCH_WEBHOOK_ALLOW_PRIVATE``. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Sequence
from datetime import timedelta
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import delete, or_, select, update

from hutch.core.webhooks import WebhookService
from hutch.store.db import Database
from hutch.store.models import EventRecord, WebhookDelivery, WebhookRecord, utcnow

__all__ = ["WebhookDeliverer", "sign"]

log = logging.getLogger(__name__)

_BATCH = 16
_MAX_WAIT_S = 600.0
_PRUNE_EVERY_S = 60.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Hutch-Signature`` value: what a receiver recomputes to trust a delivery."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class ReceiverRefused(Exception):
    """The receiver's address is not one hutch may send to."""


class WebhookDeliverer:
    def __init__(
        self,
        db: Database,
        webhooks: WebhookService,
        *,
        allowed: Sequence[IPv4Network],
        timeout_s: float,
        max_attempts: int,
        retry_s: float,
        retention: timedelta,
        poll_s: float = 0.5,
    ) -> None:
        self._db = db
        self._webhooks = webhooks
        self._allowed = tuple(allowed)
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._retry_s = retry_s
        self._retention = retention
        self._poll_s = poll_s
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, trust_env=False)

    async def close(self) -> None:
        await self._client.aclose()

    async def run_forever(self) -> None:
        pruned = 0.0
        while True:
            try:
                if time.monotonic() - pruned >= _PRUNE_EVERY_S:
                    await self.prune()
                    pruned = time.monotonic()
                if not await self.deliver_due():
                    await asyncio.sleep(self._poll_s)
            except asyncio.CancelledError:
                raise
            except Exception:  # the store was away: try again later, never die
                log.exception("webhook deliveries failed this round")
                await asyncio.sleep(self._poll_s * 4)

    async def deliver_due(self) -> int:
        """Attempts every due delivery this process can claim; how many it attempted."""
        claimed = await self._claim()
        if claimed:
            await asyncio.gather(*(self._attempt(delivery_id) for delivery_id in claimed))
        return len(claimed)

    async def _claim(self) -> list[str]:
        now = utcnow()
        free = or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < now)
        async with self._db.sessions() as session:
            due = (
                await session.scalars(
                    select(WebhookDelivery.id)
                    .where(
                        WebhookDelivery.state == "pending",
                        WebhookDelivery.next_attempt_at <= now,
                        free,
                    )
                    .order_by(WebhookDelivery.next_attempt_at)
                    .limit(_BATCH)
                )
            ).all()
        claimed = []
        hold = now + timedelta(seconds=self._timeout_s * 2 + 30)
        for delivery_id in due:
            async with self._db.sessions.begin() as session:
                done = await session.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id == delivery_id, WebhookDelivery.state == "pending")
                    .where(free)
                    .values(claimed_until=hold)
                )
            if done.rowcount == 1:  # type: ignore[attr-defined]
                claimed.append(delivery_id)
        return claimed

    async def _attempt(self, delivery_id: str) -> None:
        async with self._db.sessions() as session:
            delivery = await session.get(WebhookDelivery, delivery_id)
            hook = await session.get(WebhookRecord, delivery.webhook_id) if delivery else None
        if delivery is None or hook is None:
            return  # the webhook was deleted meanwhile
        status: int | None = None
        error: str | None = None
        try:
            # One deadline for the whole attempt: httpx's timeout is per read, so a receiver
            # trickling its answer would otherwise hold this process's deliveries forever.
            async with asyncio.timeout(self._timeout_s):
                status = await self._post(hook, delivery)
            if not 200 <= status < 300:
                error = f"the receiver answered {status}"
        except ReceiverRefused as exc:
            error = str(exc)
        except (httpx.TimeoutException, TimeoutError):
            error = f"no answer within {self._timeout_s:g} s"
        except httpx.HTTPError as exc:
            error = f"could not connect: {exc or type(exc).__name__}"
        except Exception as exc:  # an unsendable URL, say: recorded, never left claimed
            log.warning("webhook delivery %s could not be sent", delivery_id, exc_info=True)
            error = f"could not send: {exc or type(exc).__name__}"
        await self._record(delivery, status, error)

    async def _post(self, hook: WebhookRecord, delivery: WebhookDelivery) -> int:
        parts = urlsplit(hook.url)
        host = parts.hostname or ""
        address = await self._vetted_address(host, parts.port or _default_port(parts.scheme))
        netloc = f"[{address}]" if ":" in address else address
        if parts.port is not None:
            netloc += f":{parts.port}"
        target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        body = delivery.payload.encode()
        headers = {
            "Host": parts.netloc,
            "Content-Type": "application/json",
            "User-Agent": "hutch-webhooks/1",
            "X-Hutch-Event": delivery.event_type,
            "X-Hutch-Event-Id": delivery.event_id,
            "X-Hutch-Delivery": delivery.id,
            "X-Hutch-Signature": sign(self._webhooks.secret_of(hook), int(time.time()), body),
        }
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        # Only the status is wanted: the answer's body is never read (it could be any size).
        async with self._client.stream(
            "POST", target, content=body, headers=headers, extensions=extensions
        ) as answer:
            return answer.status_code

    async def _vetted_address(self, host: str, port: int) -> str:
        loop = asyncio.get_running_loop()
        try:
            found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ReceiverRefused(f"{host} does not resolve ({exc.strerror})") from None
        except UnicodeError:
            raise ReceiverRefused(f"{host} is not a valid host name") from None
        for *_, sockaddr in found:
            address = ipaddress.ip_address(sockaddr[0])
            if self._may_send_to(address):
                return str(address)
        shown = ", ".join(sorted({str(sockaddr[0]) for *_, sockaddr in found}))
        raise ReceiverRefused(
            f"{host} is {shown}: webhooks go to public addresses only"
            " (an operator may allow more with HUTCH_WEBHOOK_ALLOW_PRIVATE)"
        )

    def _may_send_to(self, address: IPv4Address | IPv6Address) -> bool:
        if isinstance(address, IPv6Address):
            embedded = _embedded_ipv4(address)
            if embedded is not None:  # judged as the IPv4 address it reaches
                address = embedded
            elif address in _SITE_LOCAL:  # deprecated, but routed inside some networks
                return False
        if isinstance(address, IPv4Address) and any(address in net for net in self._allowed):
            return True
        return address.is_global and not address.is_multicast

    async def _record(
        self, delivery: WebhookDelivery, status: int | None, error: str | None
    ) -> None:
        attempts = delivery.attempts + 1
        now = utcnow()
        values: dict[str, object] = {
            "attempts": attempts,
            "last_status": status,
            "last_error": error,
            "claimed_until": None,
        }
        if error is None:
            values.update(state="delivered", delivered_at=now)
        elif attempts >= self._max_attempts:
            values.update(state="failed")
        else:
            wait = min(self._retry_s * 2 ** (attempts - 1), _MAX_WAIT_S)
            values.update(next_attempt_at=now + timedelta(seconds=wait))
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == delivery.id).values(**values)
            )
        if error is not None:
            log.info("webhook delivery %s, attempt %d: %s", delivery.id, attempts, error)

    async def prune(self) -> None:
        """Events and finished deliveries older than the retention are deleted."""
        cutoff = utcnow() - self._retention
        async with self._db.sessions.begin() as session:
            await session.execute(delete(EventRecord).where(EventRecord.created_at < cutoff))
            await session.execute(
                delete(WebhookDelivery).where(
                    WebhookDelivery.state != "pending", WebhookDelivery.created_at < cutoff
                )
            )


_SITE_LOCAL = IPv6Network("fec0::/10")
_NAT64 = (IPv6Network("64:ff9b::/96"), IPv6Network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = IPv6Network("::/96")


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one carries to (mapped, 6to4, Teredo, NAT64, compatible)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in _NAT64) or address in _IPV4_COMPATIBLE:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80
