"""One public entry point for a cluster's preview and ingress URLs.

On one machine a preview (``{port}-{token}.{HUTCH_PREVIEW_DOMAIN}``) is served by that
machine's proxy (nginx, :mod:`hutch.proxy.nginx`). In a cluster the URL names the public
entry instead (``HUTCH_PUBLIC_PROXY_PORT``: the control planes' port, or their load
balancer's), and **any control plane** answers it: :class:`PublicEntry` reads the token
from the request's ``Host``, finds the sandbox it belongs to in the store (an ingress
token is the sandbox's own; a preview's is in ``preview_routes``, written by the agent
that made it: :class:`PreviewBook`), and passes the request, unbuffered and with its
``Host`` as it came, to the proxy of the host the sandbox lives on (its address and port
come with the agent's heartbeats). That proxy does what it does on one machine: route to
the sandbox, or hold the request while a paused ``auto_resume`` sandbox wakes. WebSockets
are spliced through as for the API (:mod:`hutch.roles.forward`).

The hop from the control plane to a host's proxy is plain HTTP (the preview's own bytes,
as a browser sent them; no token of the cluster's travels on it).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from starlette.types import Receive, Scope, Send

from hutch.api.services import Services
from hutch.core.sandbox_status import LIVE_STATUSES
from hutch.roles.forward import AgentForwarder
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.models import Host, PreviewRoute, SandboxRecord, utcnow

__all__ = ["PreviewBook", "PublicEntry", "public_port"]

_NAME = re.compile(rb"^([0-9]{1,5})-([a-z0-9]{1,64})\.([^:]+)(?::[0-9]{1,5})?$")
_KEEP_S = 2.0  # how long where a token lives is kept (a sandbox moves hosts rarely)
NOT_FOUND = b"no such preview (it may have expired, or its sandbox is paused or gone)\n"


def public_port(settings: Settings, own: int) -> int:
    """The port preview and ingress URLs name: the public entry's, else the proxy's own."""
    return settings.public_proxy_port or own


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class PreviewBook:
    """Where a cluster's preview tokens live: one ``preview_routes`` row per preview,
    written by the agent that made it, so that any control plane finds its sandbox."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, token: str, sandbox_id: str, expires_at: datetime) -> None:
        async with self._db.sessions.begin() as session:
            session.add(PreviewRoute(token_hash=_token_hash(token), sandbox_id=sandbox_id,
                                     expires_at=expires_at))  # fmt: skip

    async def remove(self, token: str) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(
                delete(PreviewRoute).where(PreviewRoute.token_hash == _token_hash(token))
            )

    async def purge(self) -> None:
        """Forget expired previews (a restarted agent's are never removed one by one)."""
        async with self._db.sessions.begin() as session:
            await session.execute(delete(PreviewRoute).where(PreviewRoute.expires_at <= utcnow()))


class PublicEntry:
    """An ASGI app for requests whose ``Host`` is a preview or ingress name (see
    :meth:`claims`): passed to the proxy of the sandbox's host (module docstring)."""

    def __init__(self, settings: Settings, state: Any) -> None:
        self._domain = settings.preview_domain.lower().encode()
        self._state = state  # the worker app's state: its services, once its lifespan ran
        self._where: dict[str, tuple[float, tuple[str, str | None] | None]] = {}
        self._forwarders: dict[str, AgentForwarder] = {}

    def token_of(self, scope: Scope) -> str | None:
        """The token of a preview or ingress name in ``Host``; None for anything else."""
        if scope["type"] != "http":
            return None
        for name, value in scope["headers"]:
            if name == b"host":
                found = _NAME.match(value.lower())
                if found is not None and found.group(3) == self._domain:
                    return found.group(2).decode()
                return None
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send, token: str) -> None:
        where = await self._where_is(token)
        if where is None:
            await _plain(send, 404, NOT_FOUND)
            return
        host_id, proxy = where
        if proxy is None:
            await _plain(send, 503, f"the sandbox's host {host_id} serves no previews to the "
                         "entry (its proxy is off, or on loopback: set its HUTCH_PROXY_HOST "
                         "to an address the control planes reach)\n".encode())  # fmt: skip
            return
        await self._forwarder(proxy)(scope, receive, send)

    async def _where_is(self, token: str) -> tuple[str, str | None] | None:
        """The host the token's sandbox is on and its proxy's ``host:port``; None when
        the token is no live sandbox's (kept for a moment: every request asks)."""
        now = time.monotonic()
        kept = self._where.get(token)
        if kept is not None and now - kept[0] < _KEEP_S:
            return kept[1]
        services: Services = self._state.services
        live = SandboxRecord.status.in_(LIVE_STATUSES)
        async with services.db.sessions() as session:
            row = (await session.execute(
                select(Host.id, Host.proxy_address)
                .join(SandboxRecord, SandboxRecord.host_id == Host.id)
                .where(SandboxRecord.ingress_token == token, SandboxRecord.ingress_enabled, live)
            )).first()  # fmt: skip
            if row is None:
                row = (await session.execute(
                    select(Host.id, Host.proxy_address)
                    .join(SandboxRecord, SandboxRecord.host_id == Host.id)
                    .join(PreviewRoute, PreviewRoute.sandbox_id == SandboxRecord.id)
                    .where(PreviewRoute.token_hash == _token_hash(token), live)
                    .where(PreviewRoute.expires_at > utcnow())
                )).first()  # fmt: skip
        where = (str(row[0]), row[1]) if row is not None else None
        if len(self._where) > 10_000:
            self._where.clear()
        self._where[token] = (now, where)
        return where

    def _forwarder(self, proxy: str) -> AgentForwarder:
        known = self._forwarders.get(proxy)
        if known is not None:
            return known
        host, _, port = proxy.rpartition(":")
        host = host.strip("[]")

        async def opener() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await asyncio.wait_for(
                asyncio.open_connection(host, int(port), limit=1 << 18), timeout=5
            )

        forwarder = AgentForwarder(None, wait_s=2.0, opener=opener)
        self._forwarders[proxy] = forwarder
        return forwarder

    async def aclose(self) -> None:
        for forwarder in self._forwarders.values():
            await forwarder.aclose()


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
