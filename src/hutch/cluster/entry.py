"""One public entry point for a cluster's preview and ingress URLs and deployed projects.

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

A deployed project's name (``{uniqueName}.{HUTCH_APPS_DOMAIN}``) is claimed the same way:
the project's live sandbox is found in the store, and the request goes to the proxy of
its host, which serves it as on one machine (the agent that ran the deploy routed the
name there, :meth:`hutch.core.previews.PreviewService.route_app`). A name no live project
has is a 404 here, so the control planes' own API name must not be under the apps domain.

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
from hutch.store.models import Host, PreviewRoute, Project, SandboxRecord, utcnow

__all__ = ["PreviewBook", "PublicEntry", "public_port"]

_NAME = re.compile(rb"^([0-9]{1,5})-([a-z0-9]{1,64})\.([^:]+)(?::[0-9]{1,5})?$")
# A project's uniqueName (hutch.api.deploy.projects.NAME_PATTERN) under the apps domain.
_APP = re.compile(rb"^([a-z0-9][a-z0-9-]{2,30}[a-z0-9])\.([^:]+)(?::[0-9]{1,5})?$")
APP_MARK = "@"
"""What :meth:`PublicEntry.token_of` puts before a project's name (tokens have no ``@``)."""
_KEEP_S = 2.0  # how long where a token lives is kept (a sandbox moves hosts rarely)
NOT_FOUND = b"no such preview (it may have expired, or its sandbox is paused or gone)\n"
NO_PROJECT = b"no such project (not deployed, deleted, or its app is not running)\n"


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
        self._apps = settings.apps_domain.lower().encode()
        self._state = state  # the worker app's state: its services, once its lifespan ran
        self._where: dict[str, tuple[float, tuple[str, str | None] | None]] = {}
        self._forwarders: dict[str, AgentForwarder] = {}

    def token_of(self, scope: Scope) -> str | None:
        """What a preview, ingress or project name in ``Host`` names: the preview's (or
        ingress's) token, or :data:`APP_MARK` and a project's name; None for anything
        else (an API request)."""
        if scope["type"] != "http":
            return None
        for name, value in scope["headers"]:
            if name == b"host":
                value = value.lower()
                found = _NAME.match(value)
                if found is not None and found.group(3) == self._domain:
                    # On one machine nginx prefers a project's exact name over the
                    # preview pattern; here the token is looked up first, then the name.
                    app = _APP.match(value)
                    if app is not None and app.group(2) == self._apps:
                        return f"{found.group(2).decode()}{APP_MARK}{app.group(1).decode()}"
                    return found.group(2).decode()
                app = _APP.match(value)
                if app is not None and app.group(2) == self._apps:
                    return APP_MARK + app.group(1).decode()
                return None
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send, token: str) -> None:
        token, mark, app = token.partition(APP_MARK)
        where = await self._where_is(token) if token else None
        if where is None and mark:
            where = await self._where_is_app(app)
        if where is None:  # (a name that fits a preview's is answered as one)
            await _plain(send, 404, NOT_FOUND if token else NO_PROJECT)
            return
        host_id, proxy = where
        if proxy is None:
            await _plain(send, 503, f"the sandbox's host {host_id} serves no previews to the "
                         "entry (its proxy is off, or on loopback: set its HUTCH_PROXY_HOST "
                         "to an address the control planes reach)\n".encode())  # fmt: skip
            return
        await self._forwarder(proxy)(scope, receive, send)

    async def _where_is_app(self, name: str) -> tuple[str, str | None] | None:
        """The host of the project ``name``'s live sandbox and its proxy (kept a moment)."""
        key = APP_MARK + name
        now = time.monotonic()
        kept = self._where.get(key)
        if kept is not None and now - kept[0] < _KEEP_S:
            return kept[1]
        services: Services = self._state.services
        async with services.db.sessions() as session:
            row = (await session.execute(
                select(Host.id, Host.proxy_address)
                .join(SandboxRecord, SandboxRecord.host_id == Host.id)
                .join(Project, Project.sandbox_id == SandboxRecord.id)
                .where(Project.unique_name == name, Project.deleted_at.is_(None))
                .where(SandboxRecord.status.in_(LIVE_STATUSES))
            )).first()  # fmt: skip
        where = (str(row[0]), row[1]) if row is not None else None
        self._keep(key, now, where)
        return where

    def _keep(self, key: str, now: float, where: tuple[str, str | None] | None) -> None:
        if len(self._where) > 10_000:
            self._where.clear()
        self._where[key] = (now, where)

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
        self._keep(token, now, where)
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
