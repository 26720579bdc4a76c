"""Preview URLs: a sandbox's port behind an unguessable, expiring host name.

``{port}-{token}.{preview domain}`` routes, through the proxy (:mod:`hutch.proxy.nginx`),
to the sandbox's address on that port. The token is 128 random bits, so a URL cannot be
derived from the sandbox's id; the route goes when the token expires and when the sandbox
is paused, stopped or destroyed.

Wake on traffic: when a sandbox with ``auto_resume`` pauses, its preview and ingress routes
are not dropped but put to sleep (:meth:`NginxProxy.set_wake`): a request for one is held
by the proxy while the :class:`Waker` resumes the sandbox, then answered by it; when the
sandbox runs again its routes are awake (plain proxying) once more.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import secrets
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from hutch.cluster.tls import url_scheme
from hutch.core.errors import Conflict, HutchError, InvalidInput, Unavailable
from hutch.proxy.nginx import NginxProxy, ProxyError
from hutch.settings import Settings
from hutch.store.models import SandboxRecord, utcnow

__all__ = ["Preview", "PreviewBook", "PreviewService", "Waker", "new_token"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Preview:
    sandbox_id: str
    port: int
    token: str
    host: str
    url: str
    websocket_url: str
    expires_at: datetime


class Waker(Protocol):
    """What wakes sandboxes for their previews (the sandbox service)."""

    async def wakes_on_traffic(self, sandbox_id: str) -> bool:
        """Whether the sandbox, pausing or paused, is to be woken by a request."""

    async def wake_for_traffic(self, sandbox_id: str) -> None:
        """Resume it (on its owner's behalf); a :class:`HutchError` says why not."""


class PreviewBook(Protocol):
    """Where preview tokens are written for a cluster's public entry (hutch.cluster.entry)."""

    async def add(self, token: str, sandbox_id: str, expires_at: datetime) -> None: ...

    async def remove(self, token: str) -> None: ...

    async def purge(self) -> None: ...


class PreviewService:
    def __init__(
        self,
        settings: Settings,
        proxy: NginxProxy | None,
        unavailable: str = "",
        *,
        book: PreviewBook | None = None,
    ) -> None:
        self._settings = settings
        self._proxy = proxy
        self._book = book  # a cluster's agent: its previews, for the public entry
        self._unavailable = unavailable
        self._live: dict[str, Preview] = {}
        self._by_sandbox: defaultdict[str, set[str]] = defaultdict(set)
        self._waker: Waker | None = None

    def route_count(self) -> int:
        """Routes the proxy serves now (previews and ingress)."""
        return self._proxy.route_count() if self._proxy is not None else 0

    def wake_with(self, waker: Waker) -> None:
        """Let requests for a paused ``auto_resume`` sandbox's previews wake it."""
        self._waker = waker
        if self._proxy is not None:
            self._proxy.wake = self._wake

    async def _wake(self, sandbox_id: str) -> str | None:
        """For the proxy: None once the sandbox runs, else why it was not woken (and, if
        it no longer wakes on traffic, its routes go as they would have at its pause)."""
        if self._waker is None:
            return "previews do not wake sandboxes here"
        try:
            await self._waker.wake_for_traffic(sandbox_id)
        except Conflict as exc:
            if not await self._sleeps(sandbox_id):
                await self._revoke(sandbox_id)
            return exc.message
        except HutchError as exc:
            return exc.message
        return None

    def check_available(self) -> None:
        self._the_proxy()

    def _the_proxy(self) -> NginxProxy:
        if self._proxy is None:
            raise Unavailable(f"previews are not available on this host: {self._unavailable}")
        return self._proxy

    async def expose(self, sandbox: SandboxRecord, port: int) -> Preview:
        proxy = self._the_proxy()
        if not 1 <= port <= 65535:
            raise InvalidInput("port must be between 1 and 65535", field="port")
        if sandbox.status != "running" or not sandbox.ip:
            raise Conflict(
                f"sandbox is {sandbox.status}; only a running sandbox can be previewed",
                field="status",
            )
        token = new_token()
        host = f"{port}-{token}.{self._settings.preview_domain}"
        authority = f"{host}:{self._public_port()}"
        preview = Preview(
            sandbox_id=sandbox.id,
            port=port,
            token=token,
            host=host,
            url=f"{url_scheme(self._settings)}://{authority}/",
            websocket_url=f"{url_scheme(self._settings).replace('http', 'ws')}://{authority}/",
            expires_at=utcnow() + timedelta(seconds=self._settings.preview_ttl_s),
        )
        try:
            await proxy.add_route(_route_id(token), host=host, upstream=f"{sandbox.ip}:{port}")
        except ProxyError as exc:
            raise Unavailable(str(exc)) from exc
        self._live[token] = preview
        self._by_sandbox[sandbox.id].add(token)
        if self._book is not None:
            await self._book.add(token, sandbox.id, preview.expires_at)
        return preview

    def _public_port(self) -> int:
        """The port URLs name: the cluster's public entry's, else this proxy's."""
        return self._settings.public_proxy_port or self._the_proxy().listen_port

    async def revoke_sandbox(self, sandbox_id: str) -> None:
        """The sandbox paused, stopped or went: its URLs stop working now, unless it is
        pausing with ``auto_resume``: then they stay, asleep (a request wakes it)."""
        if self._proxy is not None and await self._sleeps(sandbox_id):
            ids = [_route_id(token) for token in self._by_sandbox.get(sandbox_id, ())]
            await self._proxy.set_wake([*ids, _ingress_id(sandbox_id)], sandbox_id)
            return
        await self._revoke(sandbox_id)

    async def _sleeps(self, sandbox_id: str) -> bool:
        if self._waker is None:
            return False
        try:
            return await self._waker.wakes_on_traffic(sandbox_id)
        except HutchError:
            return False

    async def _revoke(self, sandbox_id: str) -> None:
        for token in self._by_sandbox.pop(sandbox_id, set()):
            await self._drop(token)
        if self._proxy is not None:
            await self._proxy.remove_route(_ingress_id(sandbox_id))

    async def sleep_ingress(self, sandbox: SandboxRecord) -> None:
        """At a start: route a paused ``auto_resume`` sandbox's ingress names, asleep (its
        previews are gone with the server that made them)."""
        if self._proxy is not None and sandbox.ingress_enabled and sandbox.ingress_token:
            await self._route_ingress(sandbox, wake=sandbox.id)

    def ingress_template(self, sandbox: SandboxRecord) -> str | None:
        """``http://<port>-{token}.{domain}:{proxy port}/``, for a sandbox with ingress on."""
        if self._proxy is None or not sandbox.ingress_enabled or not sandbox.ingress_token:
            return None
        return (
            f"{url_scheme(self._settings)}://<port>-{sandbox.ingress_token}."
            f"{self._settings.preview_domain}:{self._public_port()}/"
        )

    async def sync_ingress(self, sandbox: SandboxRecord) -> None:
        """Route the sandbox's ingress names while it runs with ingress on; else not. Its
        previews, asleep while it was paused, are awake again."""
        if self._proxy is None:
            return
        if sandbox.status != "running":
            await self._proxy.remove_route(_ingress_id(sandbox.id))
            return
        ids = [_route_id(token) for token in self._by_sandbox.get(sandbox.id, ())]
        try:
            await self._proxy.set_wake(ids, "")
        except ProxyError:
            log.warning("could not wake the previews of %s", sandbox.id, exc_info=True)
        if sandbox.ingress_enabled and sandbox.ingress_token:
            await self._route_ingress(sandbox, wake="")
        else:
            await self._proxy.remove_route(_ingress_id(sandbox.id))

    async def _route_ingress(self, sandbox: SandboxRecord, *, wake: str) -> None:
        assert self._proxy is not None
        domain = re.escape(self._settings.preview_domain)
        pattern = rf"^([0-9]{{1,5}})-{sandbox.ingress_token}\.{domain}(:[0-9]+)?$"
        try:
            await self._proxy.add_port_route(_ingress_id(sandbox.id), host_pattern=pattern,
                                             address=sandbox.ip or "", wake=wake)  # fmt: skip
        except ProxyError:
            log.warning("could not route ingress of %s", sandbox.id, exc_info=True)

    async def route_app(self, route_key: str, name: str, upstream: str) -> str:
        """Serve a deployed project at ``http://{name}.{apps domain}``; its URL."""
        proxy = self._the_proxy()
        host = f"{name}.{self._settings.apps_domain}"
        try:
            await proxy.add_route(_app_id(route_key), host=host, upstream=upstream)
        except ProxyError as exc:
            raise Unavailable(str(exc)) from exc
        # In a cluster with a public entry the URL names it: any control plane passes the
        # name to this host's proxy (hutch.cluster.entry).
        public = self._public_port()
        scheme = url_scheme(self._settings)
        port = "" if public == {"http": 80, "https": 443}[scheme] else f":{public}"
        return f"{scheme}://{host}{port}"

    async def unroute_app(self, route_key: str) -> None:
        if self._proxy is not None:
            try:
                await self._proxy.remove_route(_app_id(route_key))
            except ProxyError as exc:
                raise Unavailable(str(exc)) from exc

    async def _drop(self, token: str) -> None:
        preview = self._live.pop(token, None)
        if preview is not None:
            self._by_sandbox.get(preview.sandbox_id, set()).discard(token)
        if self._proxy is not None:
            await self._proxy.remove_route(_route_id(token))
        if self._book is not None:
            with contextlib.suppress(Exception):  # it expires by itself
                await self._book.remove(token)

    async def expire_forever(self, every_s: float = 1.0) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(every_s)
            now = utcnow()
            for token in [t for t, p in self._live.items() if p.expires_at <= now]:
                with contextlib.suppress(Exception):
                    await self._drop(token)
            rounds += 1
            if self._book is not None and rounds % 60 == 0:  # what restarted agents left
                with contextlib.suppress(Exception):
                    await self._book.purge()


def new_token() -> str:
    """128 random bits, as 26 characters that fit a DNS label."""
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


def _route_id(token: str) -> str:
    return f"preview-{token}"


def _ingress_id(sandbox_id: str) -> str:
    return f"ingress-{sandbox_id}"


def _app_id(route_key: str) -> str:
    return f"app-{route_key}"
