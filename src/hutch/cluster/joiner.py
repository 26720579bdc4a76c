"""An agent's side of the cluster: join the control plane, then heartbeat.

``hutch agent --control URL --token T`` joins with the operator's join token and gets a
host token back (kept in memory: a restarted agent joins again). Every heartbeat carries
the host token and the machine's report (:class:`~hutch.cluster.membership.HostReport`).
The control plane presents the same host token to this agent on every request it passes
on (:data:`AGENT_TOKEN_HEADER`), which :class:`AgentTokenMiddleware` checks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import os
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from hutch.cluster.membership import HostReport
from hutch.cluster.tls import TlsUnusable, client_context, explain, tls_enabled
from hutch.host.images import built_images
from hutch.host.machine import read_memory
from hutch.roles.paths import agent_info_path
from hutch.settings import Settings

__all__ = [
    "AGENT_TOKEN_HEADER",
    "AgentTokenMiddleware",
    "JoinFailed",
    "Joiner",
    "agent_url",
    "local_templates",
    "proxy_address",
]

log = logging.getLogger(__name__)

AGENT_TOKEN_HEADER = b"x-hutch-agent-token"


class JoinFailed(Exception):
    """The control plane refused this agent, or could not be reached; the message says why."""


def agent_url(settings: Settings) -> str:
    scheme = "https" if tls_enabled(settings) else "http"
    return settings.agent_url or f"{scheme}://{settings.agent_listen}"


def local_templates(home: Path) -> list[str]:
    """Ids of the template images on this host (``$HUTCH_HOME/template-images``)."""
    directory = home / "template-images"
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.json") if not p.stem.endswith(".build"))


def proxy_address(settings: Settings) -> str:
    """``host:port`` where this host's preview proxy serves the public entry (its port
    from what the agent announced once the proxy started); empty while there is none."""
    try:
        port = json.loads(agent_info_path(settings).read_text())["proxy_port"]
    except (OSError, ValueError, KeyError):
        return ""
    if not isinstance(port, int):
        return ""
    host = settings.proxy_host
    if host in ("0.0.0.0", "::", ""):  # every address: the one the control plane uses
        host = urlsplit(agent_url(settings)).hostname or ""
    if not host or host == "localhost" or host.startswith("127.") or host == "::1":
        return ""  # no one else reaches it: the entry says so for this host's sandboxes
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Joiner:
    """Joins ``settings.control_url`` and heartbeats there."""

    def __init__(self, settings: Settings, *, host_id: str, runtimes: list[str]) -> None:
        self._settings = settings
        self.host_id = host_id
        self.runtimes = runtimes
        self.token: str | None = None
        self.status = "active"
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # With HUTCH_TLS_*: our certificate shown, the control plane's checked (the CA).
            try:
                verify: ssl.SSLContext | bool = (
                    client_context(self._settings) if tls_enabled(self._settings) else True
                )
            except TlsUnusable as exc:
                raise JoinFailed(str(exc)) from None
            self._client = httpx.AsyncClient(
                base_url=self._settings.control_url.rstrip("/"), timeout=10, verify=verify
            )
        return self._client

    async def report(self) -> HostReport:
        memory = await asyncio.to_thread(read_memory)
        rootfses = await asyncio.to_thread(built_images, self._settings.images_path)
        templates = await asyncio.to_thread(local_templates, self._settings.home)
        return HostReport(
            id=self.host_id, address=agent_url(self._settings),
            labels=dict(self._settings.host_labels), runtimes=self.runtimes,
            rootfses=rootfses, templates=templates, free_mib=memory.available_mib,
            total_mib=memory.total_mib,
            capacity_mib=self._settings.host_capacity_mib or memory.total_mib,
            cpus=os.cpu_count() or 1, proxy=await asyncio.to_thread(proxy_address, self._settings),
        )  # fmt: skip

    async def join(self) -> None:
        """Join (JoinFailed says why not); sets :attr:`token`."""
        secret = self._settings.join_token
        if secret is None:
            raise JoinFailed("--control needs --token (a join token: hutch hosts token create)")
        if tls_enabled(self._settings) and not self._settings.control_url.startswith("https://"):
            raise JoinFailed("HUTCH_TLS_* is set: --control must be the control plane's "
                             f"https:// URL, not {self._settings.control_url}")  # fmt: skip
        if tls_enabled(self._settings) and not agent_url(self._settings).startswith("https://"):
            raise JoinFailed("HUTCH_TLS_* is set: HUTCH_AGENT_URL must be https://, not "
                             f"{self._settings.agent_url}")  # fmt: skip
        body = dataclasses.asdict(await self.report())
        answer = await self._post("/internal/v1/hosts/join", body, secret.get_secret_value())
        self.token = str(answer["host_token"])
        self.status = str(answer.get("status", "active"))

    async def heartbeat(self) -> None:
        if self.token is None:
            await self.join()
            return
        body = dataclasses.asdict(await self.report())
        try:
            answer = await self._post(f"/internal/v1/hosts/{self.host_id}/heartbeat", body,
                                      self.token)  # fmt: skip
        except JoinFailed as exc:
            if "join it again" not in str(exc):
                raise
            log.warning("the control plane forgot this host (%s); joining again", exc)
            self.token = None
            await self.join()
            return
        self.status = str(answer.get("status", "active"))

    async def _post(self, path: str, body: dict[str, Any], token: str) -> dict[str, Any]:
        try:
            answer = await self._http().post(
                path, json=body, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as exc:
            raise JoinFailed(f"cannot reach the control plane at {self._settings.control_url}: "
                             f"{explain(exc)}") from None  # fmt: skip
        try:
            payload = answer.json()
        except ValueError:
            payload = {}
        if answer.status_code != 200:
            message = payload.get("data") or payload.get("message") or answer.text[:200]
            raise JoinFailed(f"the control plane refused ({answer.status_code}): {message}")
        data = payload.get("data", {})
        assert isinstance(data, dict)
        return data

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class AgentTokenMiddleware:
    """Requests over TCP must carry this agent's host token in :data:`AGENT_TOKEN_HEADER`
    (the control planes have it, and other agents for image fetches and drain moves);
    others get a 401 and reach nothing. Requests on the
    home's unix socket (0700 directory) need none. The token is read from the app's
    services (``host_agent.joiner``) once its lifespan has joined."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not _over_tcp(scope):
            await self.app(scope, receive, send)
            return
        presented = next((v for k, v in scope["headers"] if k == AGENT_TOKEN_HEADER), b"")
        services = getattr(scope["app"].state, "services", None) if "app" in scope else None
        joiner = getattr(getattr(services, "host_agent", None), "joiner", None)
        token = joiner.token if joiner is not None else None
        if token is None or not hmac.compare_digest(presented, token.encode()):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            body = b'{"status":"fail","data":{"token":"this agent answers only its control plane"}}'
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _over_tcp(scope: Scope) -> bool:
    server = scope.get("server")
    return bool(server) and isinstance(server, (tuple, list)) and isinstance(server[1], int)
