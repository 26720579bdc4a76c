"""Preview URLs: a sandbox's port behind an unguessable, expiring host name.

``{port}-{token}.{preview domain}`` routes, through the proxy (:mod:`hutch.proxy.nginx`),
to the sandbox's address on that port. The token is 128 random bits, so a URL cannot be
derived from the sandbox's id; the route goes when the token expires and when the sandbox
is paused, stopped or destroyed.
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

from hutch.core.errors import Conflict, InvalidInput, Unavailable
from hutch.proxy.nginx import NginxProxy, ProxyError
from hutch.settings import Settings
from hutch.store.models import SandboxRecord, utcnow

__all__ = ["Preview", "PreviewService", "new_token"]

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


class PreviewService:
    def __init__(self, settings: Settings, proxy: NginxProxy | None, unavailable: str = "") -> None:
        self._settings = settings
        self._proxy = proxy
        self._unavailable = unavailable
        self._live: dict[str, Preview] = {}
        self._by_sandbox: defaultdict[str, set[str]] = defaultdict(set)

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
        authority = f"{host}:{proxy.listen_port}"
        preview = Preview(
            sandbox_id=sandbox.id,
            port=port,
            token=token,
            host=host,
            url=f"http://{authority}/",
            websocket_url=f"ws://{authority}/",
            expires_at=utcnow() + timedelta(seconds=self._settings.preview_ttl_s),
        )
        try:
            await proxy.add_route(_route_id(token), host=host, upstream=f"{sandbox.ip}:{port}")
        except ProxyError as exc:
            raise Unavailable(str(exc)) from exc
        self._live[token] = preview
        self._by_sandbox[sandbox.id].add(token)
        return preview

    async def revoke_sandbox(self, sandbox_id: str) -> None:
        """The sandbox paused, stopped or went: its URLs stop working now."""
        for token in self._by_sandbox.pop(sandbox_id, set()):
            await self._drop(token)
        if self._proxy is not None:
            await self._proxy.remove_route(_ingress_id(sandbox_id))

    def ingress_template(self, sandbox: SandboxRecord) -> str | None:
        """``http://<port>-{token}.{domain}:{proxy port}/``, for a sandbox with ingress on."""
        if self._proxy is None or not sandbox.ingress_enabled or not sandbox.ingress_token:
            return None
        return (
            f"http://<port>-{sandbox.ingress_token}.{self._settings.preview_domain}:"
            f"{self._proxy.listen_port}/"
        )

    async def sync_ingress(self, sandbox: SandboxRecord) -> None:
        """Route the sandbox's ingress names while it runs with ingress on; else not."""
        if self._proxy is None:
            return
        await self._proxy.remove_route(_ingress_id(sandbox.id))
        if sandbox.status == "running" and sandbox.ingress_enabled and sandbox.ingress_token:
            domain = re.escape(self._settings.preview_domain)
            pattern = rf"^([0-9]{{1,5}})-{sandbox.ingress_token}\.{domain}(:[0-9]+)?$"
            try:
                await self._proxy.add_port_route(
                    _ingress_id(sandbox.id), host_pattern=pattern, address=sandbox.ip or ""
                )
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
        port = "" if proxy.listen_port == 80 else f":{proxy.listen_port}"
        return f"http://{host}{port}"

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

    async def expire_forever(self, every_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            now = utcnow()
            for token in [t for t, p in self._live.items() if p.expires_at <= now]:
                with contextlib.suppress(Exception):
                    await self._drop(token)


def new_token() -> str:
    """128 random bits, as 26 characters that fit a DNS label."""
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


def _route_id(token: str) -> str:
    return f"preview-{token}"


def _ingress_id(sandbox_id: str) -> str:
    return f"ingress-{sandbox_id}"


def _app_id(route_key: str) -> str:
    return f"app-{route_key}"
