"""``hutch agent``: this machine's host agent, serving on a unix socket.

The agent owns everything that lives on the machine or in one process's memory: the
driver and its sandboxes, links, private networks, the firewall and egress, DNS, disks,
the preview proxy, the monitor, recovery at start, and the sessions and tasks held in
memory (shells, processes, tunnels, self-signal watchers, template builds, deploy
pipelines). It serves the whole API on ``$HUTCH_HOME/run/agent.sock`` (a 0700 directory,
so only root and the home's owner reach it), plus the internal routes below; control
workers pass to it what they do not answer themselves (:mod:`hutch.roles.control`).
``docs/roles.md`` documents the internal API.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from pathlib import Path
from typing import IO, Any

import uvicorn
from fastapi import APIRouter, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from hutch.api.services import Services
from hutch.api.upgrade import UpgradingH11Protocol
from hutch.cluster.tls import TlsOnTcpServer, TlsUnusable, server_context, tls_enabled
from hutch.proxy.nginx import NginxProxy
from hutch.roles.forward import CLIENT_HEADER
from hutch.roles.paths import agent_info_path, agent_socket, run_dir
from hutch.settings import Settings

__all__ = [
    "ClientAddressMiddleware",
    "announce",
    "internal_router",
    "run_agent",
]

log = logging.getLogger(__name__)


def announce(settings: Settings, proxy: NginxProxy | None) -> None:
    """Write :func:`agent_info_path` once the agent's services are up (atomically)."""
    info = {"pid": os.getpid(), "proxy_port": proxy.listen_port if proxy is not None else None}
    path = agent_info_path(settings)
    scratch = path.with_suffix(f".{os.getpid()}.tmp")
    scratch.write_text(json.dumps(info))
    scratch.replace(path)


class ClientAddressMiddleware:
    """Takes the client's address from :data:`CLIENT_HEADER`, which the control plane sets
    on everything it passes through (the agent's socket is not reachable by anyone else)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            for name, value in scope["headers"]:
                if name == CLIENT_HEADER:
                    host, _, port = value.decode("latin-1").rpartition(":")
                    scope = dict(scope)
                    scope["client"] = (host, int(port) if port.isdigit() else 0)
                    break
        await self.app(scope, receive, send)


internal_router = APIRouter(prefix="/internal/v1", include_in_schema=False)


@internal_router.get("/info")
async def agent_info(request: Request) -> dict[str, Any]:
    """Who is serving: the agent's pid, its host id, its preview proxy's port, and the
    warm pool (``HostAgent.warm``: prepared sandboxes ready by ``image:shape``), ``null``
    when there is no pool."""
    services: Services = request.app.state.services
    agent = services.host_agent
    warm = agent.warm
    pool = None
    if warm.enabled:
        pool = {"ready": warm.sizes()}
    return {
        "pid": os.getpid(),
        "host_id": agent.host_id,
        "proxy_port": json.loads(agent_info_path(services.settings).read_text())["proxy_port"],
        "warm_pool": pool,
    }


class AgentRunning(Exception):
    """Another agent serves this home."""


@contextlib.contextmanager
def _agent_lock(settings: Settings) -> Any:
    """One agent per home, whatever its driver (the runc driver's own lock, taken later by
    :class:`~hutch.host.agent.HostAgent`, says the same)."""
    path = run_dir(settings) / "agent.lock"
    handle: IO[str] = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise AgentRunning(
                f"another hutch agent is running with the home {settings.home} (pid {holder})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


async def run_agent(settings: Settings, *, log_level: str) -> int:
    """Serve the agent until SIGTERM/SIGINT; the exit code says whether it started."""
    directory = run_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    from hutch.api.app import create_app

    try:
        with _agent_lock(settings):
            socket_path = agent_socket(settings)
            with contextlib.suppress(FileNotFoundError):
                socket_path.unlink()
            agent_info_path(settings).unlink(missing_ok=True)
            # A cluster's agent serves its home's socket and, for the control plane, TCP.
            sockets: list[socket.socket] | None = None
            if settings.control_url:
                try:
                    # (TCP first: uvicorn's "running on" line reads the first one's port.)
                    sockets = [_tcp_listener(settings.agent_listen), _unix_listener(socket_path)]
                except (OSError, ValueError) as exc:
                    log.error("cannot listen on HUTCH_AGENT_LISTEN=%s: %s",
                              settings.agent_listen, exc)  # fmt: skip
                    return 1
            config = uvicorn.Config(
                create_app(settings, role="agent"),
                uds=None if sockets else str(socket_path),
                host=sockets[0].getsockname()[0] if sockets else "127.0.0.1",
                port=sockets[0].getsockname()[1] if sockets else 8000,
                log_level=log_level,
                log_config=None,
                lifespan="on",
                http=UpgradingH11Protocol,
                proxy_headers=False,
                server_header=False,
                date_header=False,
                timeout_graceful_shutdown=10,
            )
            server = uvicorn.Server(config)
            if sockets and tls_enabled(settings):  # the control plane's port: TLS (cluster)
                try:
                    context = server_context(settings, require_client=True)
                except TlsUnusable as exc:
                    log.error("%s", exc)
                    return 1
                server = TlsOnTcpServer(config, context=context, tls_sockets=sockets[:1])
            try:
                await server.serve(sockets=sockets)
            except SystemExit as exc:
                return int(exc.code or 1)
            finally:
                agent_info_path(settings).unlink(missing_ok=True)
                for sock in sockets or ():
                    sock.close()
            return 0 if server.started else 1
    except AgentRunning as exc:
        log.error("%s; stop it first, or use another --home", exc)
        return 1


def _unix_listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    path.chmod(0o600)
    sock.listen(2048)
    return sock


def _tcp_listener(address: str) -> socket.socket:
    """``host:port`` (``[v6]:port``), bound and listening."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("expected host:port")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose
    # proto says TCP, and accepted sockets take the listener's. With it on, an answer
    # written in two parts (head, body) waited for the control plane's delayed ACK:
    # +65 ms on every request passed to a cluster's agent.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock
