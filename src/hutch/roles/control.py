"""``hutch control``: a stateless API worker in front of the host agent.

A worker answers the reads that need nothing but the store itself (a sandbox, the list of
sandboxes, whoami, shapes, rootfs, hosts, the OpenAPI document; a repeated read of a
sandbox from what it kept while the store is unchanged: :mod:`hutch.roles.answers`), runs
an exec of a sandbox running on its host itself (:mod:`hutch.roles.local_exec`), and passes
every other request to the host agent, unbuffered (:mod:`hutch.roles.forward`). It keeps
no state of its own: the key cache is a :class:`~hutch.store.cache.ReadCache`, emptied by
any commit of any process (a revoked key fails at every worker on its next request), and
everything held in memory (sessions, tasks, the monitor, previews' routes) lives in the
agent. So any number of workers can share one listening socket, and a killed one costs
only the requests it was answering.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hutch.api.services import Services
from hutch.api.upgrade import PassThroughH11Protocol
from hutch.cluster.tls import url_scheme, uvicorn_tls
from hutch.core.access_tokens import AccessTokenService
from hutch.core.deploys import DeployService
from hutch.core.egress_service import EgressService
from hutch.core.events import EventService
from hutch.core.hosts import HostService
from hutch.core.identity import IdentityService
from hutch.core.metrics import MetricsService
from hutch.core.networks import NetworkService
from hutch.core.previews import PreviewService
from hutch.core.processes import ProcessService
from hutch.core.ratelimit import RateLimiter
from hutch.core.shells import ShellService
from hutch.core.snapshots import SnapshotService
from hutch.core.ssh import SshService
from hutch.core.templates.service import TemplateService
from hutch.core.tunnels import TunnelService
from hutch.core.wallets import WalletAuth
from hutch.host.agent import HostAgent
from hutch.roles.activity import ActivityFiles, activity_dir
from hutch.roles.answers import SANDBOX_PATH, SandboxAnswers
from hutch.roles.exec_answer import answer_exec
from hutch.roles.forward import AgentForwarder
from hutch.roles.local_exec import EXEC_PATH, WorkerSandboxes, exec_here_or_agent
from hutch.roles.paths import agent_info_path, agent_socket
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.models import SandboxRecord

__all__ = ["LOCAL_ROUTES", "WORKER_HEADER", "ControlApp", "control_services", "run_worker"]

WORKER_HEADER = b"x-hutch-worker"

LOCAL_ROUTES = re.compile(
    r"^/(v1/sandboxes(/by-ip)?(/[^/]+)?|v1/(shapes|rootfs|hosts|whoami|networks|disks)"
    r"|openapi\.json|docs)$"
)
"""GET paths a worker answers itself: each reads only the store (and settings). (The lists
of networks and disks too: passed on, they were a tenth of the agent's event loop under
bench/load.py's 20 clients, beside the creates it alone can run.)"""

INTERNAL_PREFIX = "/internal/"
"""The agent's routes for the other roles (:data:`hutch.roles.agent.internal_router`),
never passed on from a client."""


class _AgentProxyPort:
    """The agent's preview proxy port, from the file it writes at start (re-read when the
    file changes, so a restarted agent on another port is followed)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: int | None = None
        self._port: int | None = None

    def get(self) -> int | None:
        try:
            stamp = self._path.stat().st_mtime_ns
        except OSError:
            return self._port
        if stamp != self._stamp:
            try:
                self._port = json.loads(self._path.read_text())["proxy_port"]
                self._stamp = stamp
            except (OSError, ValueError, KeyError):
                pass
        return self._port


class ControlPreviews(PreviewService):
    """The worker's view of previews: only :meth:`ingress_template`, with the agent's
    proxy port. Everything that changes routes runs in the agent."""

    def __init__(self, settings: Settings, port: _AgentProxyPort) -> None:
        super().__init__(settings, None, "previews are served by the host agent")
        self._port = port

    def ingress_template(self, sandbox: SandboxRecord) -> str | None:
        port = self._settings.public_proxy_port or self._port.get()  # a cluster: its entry
        if port is None or not sandbox.ingress_enabled or not sandbox.ingress_token:
            return None
        return (f"{url_scheme(self._settings)}://<port>-{sandbox.ingress_token}."
                f"{self._settings.preview_domain}:{port}/")  # fmt: skip


@asynccontextmanager
async def control_services(settings: Settings) -> AsyncIterator[Services]:
    """The services of a worker: built like the agent's, none of the host's parts started
    (no driver, DNS, firewall, monitor or task runs here; the routes that would use them
    are passed to the agent)."""
    db = Database.of(settings)
    try:
        # No migration here: the agent migrates the store at its start (serve waits for
        # it), and N workers racing it for the schema lock would only slow everyone.
        agent = HostAgent(settings, db)
        networks = NetworkService(settings, db, agent)
        from hutch.api.app import _disk_service, _webhook_service

        disks = _disk_service(settings, db, agent)
        sandboxes = WorkerSandboxes(settings, db, agent, networks, disks)
        sandboxes.activity = ActivityFiles(activity_dir(settings))
        previews = ControlPreviews(settings, _AgentProxyPort(agent_info_path(settings)))
        ssh = SshService(db, sandboxes, agent)
        processes = ProcessService(sandboxes)
        deploys = DeployService(settings, db, sandboxes, previews)
        templates = TemplateService(settings, db, sandboxes, agent)
        yield Services(
            settings=settings,
            db=db,
            identity=IdentityService(db),
            access_tokens=AccessTokenService(db),
            hosts=HostService(db, dead_after_s=settings.host_dead_after_s),
            host_agent=agent,
            sandboxes=sandboxes,
            egress=EgressService(settings, db, sandboxes, agent.egress),
            processes=processes,
            shells=ShellService(processes),
            ssh=ssh,
            tunnels=TunnelService(sandboxes, agent, ssh),
            networks=networks,
            disks=disks,
            previews=previews,
            deploys=deploys,
            templates=templates,
            snapshots=SnapshotService(settings, db, sandboxes, templates.layers),
            wallets=WalletAuth(db),
            events=EventService(db),
            metrics=MetricsService(
                db,
                agent.driver,
                host_id=agent.host_id,
                interval_s=settings.metrics_interval_s,
                retention_s=settings.metrics_retention_s,
            ),
            webhooks=_webhook_service(settings, db),
            agent_rate=RateLimiter(1, per="unused in a worker"),
            agent_address_rate=RateLimiter(1, per="unused in a worker"),
        )
    finally:
        await db.dispose()


class ControlApp:
    """The worker's ASGI app: :data:`LOCAL_ROUTES` to the local app, the rest to the agent."""

    def __init__(self, settings: Settings) -> None:
        from hutch.api.app import create_app

        self.local = create_app(settings, role="control")
        self.forwarder: ASGIApp = AgentForwarder(
            agent_socket(settings), wait_s=settings.agent_wait_s
        )
        if settings.cluster:  # each request to its host's agent (hook: hutch.cluster)
            from hutch.cluster.routing import ClusterRouter

            self.forwarder = ClusterRouter(settings, self.local.state)
        self.entry = None
        if settings.cluster:  # preview and ingress names: to the sandbox's host's proxy
            from hutch.cluster.entry import PublicEntry

            self.entry = PublicEntry(settings, self.local.state)
        self.answers = SandboxAnswers(_AgentProxyPort(agent_info_path(settings)).get)
        self._max_body = settings.max_json_body_bytes
        # In a cluster, a sandbox's guest agent is on its host, not beside this worker.
        self._exec_here = not settings.cluster
        # Which worker answered (its pid): for operators reading logs, and for tests.
        self._tag = (WORKER_HEADER, str(os.getpid()).encode())

    async def _answer_exec(self, scope: Scope, body: bytes, send: Send) -> bool:
        return await answer_exec(scope, body, send, services=self.local.state.services)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.local(scope, receive, send)
            return
        if self.entry is not None and (token := self.entry.token_of(scope)) is not None:
            await self.entry(scope, receive, send, token)  # (hook: hutch.cluster.entry)
            return

        async def send_tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), self._tag]
            await send(message)

        if scope["path"].startswith(INTERNAL_PREFIX):
            # The agent's own routes (its pid, host, warm pool) are for the processes that
            # share its socket, never a client: this app has none of them, so a 404.
            await self.local(scope, receive, _access_logged(scope, send_tagged))
        elif scope["method"] == "GET" and SANDBOX_PATH.match(scope["path"]):
            await self.answers(scope, receive, _access_logged(scope, send_tagged),
                               app=self.local, services=self.local.state.services)  # fmt: skip
        elif scope["method"] == "GET" and LOCAL_ROUTES.match(scope["path"]):
            await self.local(scope, receive, _access_logged(scope, send_tagged))
        elif self._exec_here and scope["method"] == "POST" and EXEC_PATH.match(scope["path"]):
            # Run here if the sandbox runs on this host (its common form without the
            # framework: hutch.roles.exec_answer), else by the agent, which then writes
            # the access log line (as for everything it answers).
            await exec_here_or_agent(
                scope, receive, send_tagged, local=self.local,
                logged=lambda send: _access_logged(scope, send),
                agent=self.forwarder, max_body=self._max_body, plain=self._answer_exec,
            )  # fmt: skip
        else:  # the agent writes the access log line of what it answers
            await self.forwarder(scope, receive, send_tagged)


# Not uvicorn.access: uvicorn detaches that logger in a worker (``access_log=False``
# sets its propagate off), which silently dropped every line written here.
_access = logging.getLogger("hutch.access")


def _access_logged(scope: Scope, send: Send) -> Send:
    """uvicorn's access line for a request the worker answered itself (workers run with
    uvicorn's own access log off, or every passed-through request would be logged twice),
    written in the request's context so JSON logs carry its request id and user."""
    status = 0

    async def logged(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            client = scope.get("client")
            where = f"{client[0]}:{client[1]}" if client else "-"
            query = scope.get("query_string", b"").decode("latin-1")
            path = scope["path"] + (f"?{query}" if query else "")
            _access.info('%s - "%s %s HTTP/%s" %d', where, scope["method"], path,
                         scope["http_version"], status)  # fmt: skip

    return logged


async def run_worker(settings: Settings, *, listener: socket.socket, log_level: str) -> int:
    """Serve on ``listener`` (shared by every worker) until SIGTERM/SIGINT."""
    config = uvicorn.Config(
        ControlApp(settings),
        log_level=log_level,
        log_config=None,  # uvicorn's loggers go through hutch's (hutch.logs)
        lifespan="on",
        http=PassThroughH11Protocol,
        ws="none",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        access_log=False,
        **uvicorn_tls(settings),  # a cluster's control plane with HUTCH_TLS_*: https
    )
    server = uvicorn.Server(config)
    try:
        await server.serve(sockets=[listener])
    except SystemExit as exc:
        return int(exc.code or 1)
    return 0 if server.started else 1
