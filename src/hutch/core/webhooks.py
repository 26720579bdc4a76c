"""Users' webhooks: where their events are POSTed, and the log of each delivery.

A webhook names a URL (http or https), the event types it wants (``["*"]`` for all) and a
secret: given, or made and shown once. Deliveries are made by
:class:`hutch.core.webhook_delivery.WebhookDeliverer`, never on a request's path.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import func, select

from hutch.core.errors import Conflict, InvalidInput, NotFound
from hutch.core.identity import Principal
from hutch.core.ids import new_id
from hutch.core.sealing import SealedBox
from hutch.store.db import Database
from hutch.store.events import EVENT_TYPES
from hutch.store.models import WebhookDelivery, WebhookRecord, utcnow

__all__ = ["CreatedWebhook", "WebhookService", "check_url"]

_MIN_SECRET = 16
_MAX_SECRET = 256


@dataclass(frozen=True, kw_only=True)
class CreatedWebhook:
    record: WebhookRecord
    secret: str


def check_url(url: str) -> str:
    """The URL as given, or :class:`InvalidInput` saying what is wrong with it."""
    if len(url) > 2048:
        raise InvalidInput("url is longer than 2048 characters", field="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"url is not a URL ({exc})", field="url") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput("url must start with http:// or https://", field="url")
    if not parts.hostname:
        raise InvalidInput("url has no host", field="url")
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in url):
        raise InvalidInput("url must not hold spaces or control characters", field="url")
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        raise InvalidInput(
            "url's host is not a valid name (empty label, or one over 63 characters)",
            field="url",
        ) from None
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("url must not carry a user or password; use the secret", field="url")
    if port == 0:
        raise InvalidInput("url's port must be 1-65535", field="url")
    return url


def _check_events(events: list[str]) -> list[str]:
    if not events:
        raise InvalidInput('events must name at least one type, or ["*"] for all', field="events")
    unknown = [kind for kind in events if kind != "*" and kind not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(
            f"unknown event type {unknown[0]!r}; known: *, {', '.join(EVENT_TYPES)}",
            field="events",
        )
    return sorted(set(events))


class WebhookService:
    def __init__(self, db: Database, box: SealedBox | None, *, per_user: int) -> None:
        self._db = db
        self._box = box
        self._per_user = per_user

    def secret_of(self, record: WebhookRecord) -> str:
        assert self._box is not None
        return self._box.open(record.secret_sealed, context=record.id).decode()

    async def create(
        self,
        user: Principal,
        *,
        url: str,
        events: list[str],
        secret: str | None,
        description: str,
    ) -> CreatedWebhook:
        if self._box is None:
            raise Conflict(
                "webhooks need the master key (HUTCH_DISK_MASTER_KEY or $HUTCH_HOME/master.key)",
                code="webhooks_unavailable",
            )
        check_url(url)
        wanted = _check_events(events)
        if secret is not None and not _MIN_SECRET <= len(secret) <= _MAX_SECRET:
            raise InvalidInput(
                f"secret must be {_MIN_SECRET}-{_MAX_SECRET} characters (or leave it out"
                " and one is made)",
                field="secret",
            )
        secret = secret or "whsec_" + secrets.token_urlsafe(32)
        record_id = new_id("wh_")
        record = WebhookRecord(
            id=record_id,
            user_id=user.user_id,
            url=url,
            events=wanted,
            secret_sealed=self._box.seal(secret.encode(), context=record_id),
            description=description,
            created_at=utcnow(),
        )
        async with self._db.sessions.begin() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(WebhookRecord)
                .where(WebhookRecord.user_id == user.user_id)
            )
            if int(count or 0) >= self._per_user:
                raise Conflict(
                    f"you have {count} webhooks, the most allowed; delete one first",
                    code="limit_reached",
                )
            session.add(record)
        return CreatedWebhook(record=record, secret=secret)

    async def list_for(
        self, user: Principal, *, limit: int, offset: int
    ) -> tuple[list[WebhookRecord], int]:
        mine = WebhookRecord.user_id == user.user_id
        async with self._db.sessions() as session:
            total = await session.scalar(
                select(func.count()).select_from(WebhookRecord).where(mine)
            )
            rows = await session.scalars(
                select(WebhookRecord)
                .where(mine)
                .order_by(WebhookRecord.created_at, WebhookRecord.id)
                .limit(limit)
                .offset(offset)
            )
            return list(rows), int(total or 0)

    async def get(self, user: Principal, webhook_id: str) -> WebhookRecord:
        async with self._db.sessions() as session:
            record = await session.get(WebhookRecord, webhook_id)
        if record is None or record.user_id != user.user_id:
            raise NotFound(f"no webhook {webhook_id!r}", code="not_found")
        return record

    async def update(
        self,
        user: Principal,
        webhook_id: str,
        *,
        url: str | None,
        events: list[str] | None,
        description: str | None,
    ) -> WebhookRecord:
        if url is not None:
            check_url(url)
        wanted = _check_events(events) if events is not None else None
        async with self._db.sessions.begin() as session:
            record = await session.get(WebhookRecord, webhook_id, with_for_update=True)
            if record is None or record.user_id != user.user_id:
                raise NotFound(f"no webhook {webhook_id!r}", code="not_found")
            if url is not None:
                record.url = url
            if wanted is not None:
                record.events = wanted
            if description is not None:
                record.description = description
        return record

    async def delete(self, user: Principal, webhook_id: str) -> None:
        """Its pending deliveries go with it."""
        async with self._db.sessions.begin() as session:
            record = await session.get(WebhookRecord, webhook_id)
            if record is None or record.user_id != user.user_id:
                raise NotFound(f"no webhook {webhook_id!r}", code="not_found")
            await session.delete(record)

    async def deliveries(
        self, user: Principal, webhook_id: str, *, limit: int, offset: int
    ) -> tuple[list[WebhookDelivery], int]:
        """Newest first."""
        await self.get(user, webhook_id)
        mine = WebhookDelivery.webhook_id == webhook_id
        async with self._db.sessions() as session:
            total = await session.scalar(
                select(func.count()).select_from(WebhookDelivery).where(mine)
            )
            rows = await session.scalars(
                select(WebhookDelivery)
                .where(mine)
                .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
                .limit(limit)
                .offset(offset)
            )
            return list(rows), int(total or 0)
