"""Caddy (Debian's ``caddy``) as the data path of preview URLs, driven by its admin API.

hutch starts one Caddy per instance with an empty HTTP server on the proxy address and an
admin endpoint on a loopback port of its own, then adds and removes routes at run time:
each route matches one host name and proxies (HTTP/1.1, WebSocket, streamed both ways) to
a sandbox's address. A last route answers 404 for every name nobody was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import socket
from pathlib import Path
from typing import Any

import httpx

__all__ = ["CaddyProxy", "ProxyError"]

log = logging.getLogger(__name__)

SERVER = "preview"


class ProxyError(Exception):
    """Caddy could not be started or refused a change; the message says why."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class CaddyProxy:
    def __init__(self, *, listen_host: str, listen_port: int, workdir: Path) -> None:
        self.listen_host = listen_host
        self.listen_port = listen_port or free_port(listen_host)
        self.admin_port = free_port()
        self.workdir = workdir
        self._proc: asyncio.subprocess.Process | None = None
        self._admin = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.admin_port}",
                                        timeout=5.0)  # fmt: skip

    def _config(self) -> dict[str, Any]:
        not_found = {
            "handle": [{"handler": "static_response", "status_code": 404,
                        "body": "no such preview (it may have expired)\n"}],
        }  # fmt: skip
        return {
            "admin": {"listen": f"127.0.0.1:{self.admin_port}"},
            "logging": {"logs": {"default": {"level": "ERROR"}}},
            "apps": {"http": {"servers": {SERVER: {
                "listen": [f"{self.listen_host}:{self.listen_port}"],
                "automatic_https": {"disable": True},
                "routes": [not_found],
            }}}},
        }  # fmt: skip

    async def start(self) -> None:
        caddy = shutil.which("caddy")
        if caddy is None:
            raise ProxyError("caddy is not installed (make run installs it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "caddy.json"
        config.write_text(json.dumps(self._config()))
        output = (self.workdir / "caddy.log").open("ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                caddy, "run", "--config", str(config),
                stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output,
                env={"HOME": str(self.workdir), "XDG_DATA_HOME": str(self.workdir),
                     "XDG_CONFIG_HOME": str(self.workdir)},
            )  # fmt: skip
        finally:
            output.close()
        for _ in range(100):
            if self._proc.returncode is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if (await self._admin.get("/config/")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
        tail = (self.workdir / "caddy.log").read_text(errors="replace")[-800:]
        await self.stop()
        raise ProxyError(f"caddy did not start: {tail}")

    async def stop(self) -> None:
        await self._admin.aclose()
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                async with asyncio.timeout(5):
                    await self._proc.wait()
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        self._proc = None

    async def add_route(self, route_id: str, *, host: str, upstream: str) -> None:
        """Proxy requests for ``host`` to ``upstream`` (``ip:port``), ahead of the 404."""
        route = {
            "@id": route_id,
            "match": [{"host": [host]}],
            "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": upstream}]}],
            "terminal": True,
        }
        answer = await self._admin.put(f"/config/apps/http/servers/{SERVER}/routes/0",
                                       json=route)  # fmt: skip
        if answer.status_code >= 300:
            raise ProxyError(f"caddy refused the route: {answer.text[:300]}")

    async def add_port_route(self, route_id: str, *, host_pattern: str, address: str) -> None:
        """Proxy requests whose host matches ``host_pattern`` (a regexp whose first group is
        the port) to that port of ``address``."""
        route = {
            "@id": route_id,
            "match": [{"header_regexp": {"Host": {"name": "port", "pattern": host_pattern}}}],
            "handle": [{"handler": "reverse_proxy",
                        "upstreams": [{"dial": f"{address}:{{http.regexp.port.1}}"}]}],
            "terminal": True,
        }  # fmt: skip
        answer = await self._admin.put(f"/config/apps/http/servers/{SERVER}/routes/0",
                                       json=route)  # fmt: skip
        if answer.status_code >= 300:
            raise ProxyError(f"caddy refused the route: {answer.text[:300]}")

    async def remove_route(self, route_id: str) -> None:
        """Drop a route; a missing one is fine."""
        with contextlib.suppress(httpx.HTTPError):
            await self._admin.delete(f"/id/{route_id}")
