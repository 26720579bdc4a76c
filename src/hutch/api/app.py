"""The app factory: one FastAPI app serving every dialect, built from :class:`Settings`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, Literal

from fastapi import FastAPI

from hutch import __version__
from hutch.api import console, createos, deploy, nullspace
from hutch.api.errors import install_error_handlers
from hutch.api.middleware import EnvelopeMiddleware
from hutch.api.prometheus import Live, PrometheusMiddleware, serve_metrics
from hutch.api.services import Services
from hutch.core.access_tokens import AccessTokenService
from hutch.core.computer_screens import ComputerService
from hutch.core.deploys import DeployService
from hutch.core.disks import DiskService
from hutch.core.egress_service import EgressService
from hutch.core.events import EventService
from hutch.core.hosts import HostService
from hutch.core.identity import IdentityService
from hutch.core.metrics import MetricsService
from hutch.core.networks import NetworkService
from hutch.core.previews import PreviewService
from hutch.core.processes import ProcessService
from hutch.core.ratelimit import RateLimiter
from hutch.core.sandboxes import SandboxService
from hutch.core.sealing import MasterKeyUnavailable, SealedBox, load_master_key
from hutch.core.self_signal import SelfSignals
from hutch.core.shells import ShellService
from hutch.core.snapshots import SnapshotService
from hutch.core.ssh import SshService
from hutch.core.templates.service import TemplateService
from hutch.core.tunnels import TunnelService
from hutch.core.wallets import WalletAuth
from hutch.core.webhook_delivery import WebhookDeliverer
from hutch.core.webhooks import WebhookService
from hutch.host.agent import HostAgent
from hutch.host.dns import DnsEgress
from hutch.proxy.nginx import NginxProxy, ProxyError
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.migrate import upgrade

__all__ = ["create_app"]

# Routes whose bodies are streamed files, not JSON; they have no body limit.
_UNLIMITED_BODIES = (re.compile(r"^/v1/sandboxes/[^/]+/files$"),)


log = logging.getLogger(__name__)


_NO_PROXY = "the proxy is switched off or could not start (see the server log)"


async def _start_proxy(settings: Settings) -> NginxProxy | None:
    if not settings.proxy_enabled:
        return None
    proxy = NginxProxy(listen_host=settings.proxy_host, listen_port=settings.proxy_port,
                       workdir=settings.home / "proxy")  # fmt: skip
    try:
        await proxy.start()
    except ProxyError as exc:
        log.error("preview URLs are unavailable: %s", exc)
        return None
    return proxy


def _master_box(settings: Settings, what: str) -> tuple[SealedBox | None, str]:
    """The box sealing disks' keys and webhooks' secrets, or None and why not."""
    configured = settings.disk_master_key
    try:
        key = load_master_key(
            configured.get_secret_value() if configured is not None else None,
            settings.home / "master.key",
        )
    except MasterKeyUnavailable as exc:
        log.error("%s are unavailable: %s", what, exc)
        return None, str(exc)
    return SealedBox(key), ""


def _disk_service(settings: Settings, db: Database, host: HostAgent) -> DiskService:
    """Disks work only with a master key; without one their routes answer 503 and say why."""
    if not settings.disks_enabled:
        return DiskService(db, host, None, "switched off (HUTCH_DISKS_ENABLED=false)")
    box, why = _master_box(settings, "disks")
    if box is None:
        return DiskService(db, host, None, why)
    return DiskService(db, host, box, check_interval_s=settings.disk_check_interval_s)


def _webhook_service(settings: Settings, db: Database) -> WebhookService:
    """Webhook secrets are sealed like disks' keys; without a master key creates are a 409."""
    box, _ = _master_box(settings, "webhooks")
    return WebhookService(db, box, per_user=settings.webhooks_per_user)


def _deliverer(settings: Settings, db: Database, webhooks: WebhookService) -> WebhookDeliverer:
    """The process that runs the lifespan's tasks delivers (a worker never does)."""
    return WebhookDeliverer(
        db,
        webhooks,
        allowed=settings.webhook_allowed_networks,
        timeout_s=settings.webhook_timeout_s,
        max_attempts=settings.webhook_max_attempts,
        retry_s=settings.webhook_retry_s,
        retention=timedelta(days=settings.event_retention_days),
    )


Role = Literal["all", "agent", "control"]


def create_app(settings: Settings, *, role: Role = "all") -> FastAPI:
    """Build the app. Nothing is opened until its lifespan starts (so this is cheap).

    ``role`` (:mod:`hutch.roles`): ``all`` is everything in one process (tests, the
    OpenAPI document); ``agent`` is the same app as the host agent serves it on its unix
    socket (plus the internal routes); ``control`` builds the services without starting
    any of the host's parts, for a control-plane worker that answers reads from the store
    and passes everything else to the agent.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if role == "control":
            from hutch.cluster.control import cluster_lifespan
            from hutch.roles.control import control_services

            async with control_services(settings) as services:
                app.state.services = services
                async with cluster_lifespan(app, settings, services):
                    yield
            return
        db = Database.of(settings)
        try:
            await upgrade(db)
            agent = HostAgent(settings, db)
            networks = NetworkService(settings, db, agent)
            disks = _disk_service(settings, db, agent)
            await agent.start(resolve=networks.resolve)
            sandboxes = SandboxService(settings, db, agent, networks, disks)
            egress = EgressService(settings, db, sandboxes, agent.egress)
            if agent.dns is not None:  # domain rules work through sandboxes' lookups
                agent.dns.egress = DnsEgress(
                    policy_for_ip=egress.policy_for_ip, allow_resolved=egress.allow_resolved
                )
            if settings.control_url:  # a cluster's agent: members fit the VXLAN segments
                from hutch.cluster.overlay import member_mtu

                agent.networks.member_mtu = await member_mtu(settings)
            await sandboxes.recover()
            await networks.recover()
            await disks.recover()
            await agent.warm.start()  # after recovery, which destroys what the store lacks
            monitor = asyncio.create_task(sandboxes.monitor_forever(), name="hutch-monitor")
            disk_checks = asyncio.create_task(disks.monitor_forever(), name="hutch-disk-checks")
            counters = asyncio.create_task(egress.flush_forever(), name="hutch-bandwidth")
            overlay = mover = None
            if settings.control_url:  # a cluster's agent: networks span hosts (VXLAN)
                from hutch.cluster.control import make_membership
                from hutch.cluster.drain import DrainMover, sweep_partial_moves
                from hutch.cluster.images import sweep_partial_fetches
                from hutch.cluster.overlay import Overlay

                # Root filesystems a kill -9 cut mid-fetch (cluster/images.py).
                await asyncio.to_thread(sweep_partial_fetches, settings)
                # A drain's archives a kill -9 cut mid-move (cluster/drain.py).
                await asyncio.to_thread(sweep_partial_moves, settings)

                overlay = asyncio.create_task(
                    Overlay(settings, db, agent).run_forever(
                        min(settings.heartbeat_interval_s, 1.0)
                    ),
                    name="hutch-overlay",
                )
                # Draining: hibernated gvisor sandboxes move away (cluster/drain.py).
                mover = asyncio.create_task(
                    DrainMover(settings, db, sandboxes, make_membership(settings, db))
                    .run_forever(max(settings.heartbeat_interval_s, 1.0)),
                    name="hutch-drain-mover",
                )  # fmt: skip
            proxy = await _start_proxy(settings)
            book = None
            if settings.control_url:  # a cluster's agent: its previews for the public entry
                from hutch.cluster.entry import PreviewBook

                book = PreviewBook(db)
            previews = PreviewService(settings, proxy, "" if proxy else _NO_PROXY, book=book)
            sandboxes.on_stop(previews.revoke_sandbox)
            sandboxes.on_running(previews.sync_ingress)
            previews.wake_with(sandboxes)
            ssh = SshService(db, sandboxes, agent)
            tunnels = TunnelService(sandboxes, agent, ssh)
            sandboxes.on_running(ssh.install_keys)
            sandboxes.on_stop(tunnels.close_sandbox)
            processes = ProcessService(sandboxes)
            self_signals = SelfSignals(sandboxes)
            sandboxes.on_running(self_signals.watch)
            sandboxes.on_stop(self_signals.forget)
            await sandboxes.announce_running()
            for paused in await sandboxes.paused_waking():
                await previews.sleep_ingress(paused)
            expiry = asyncio.create_task(previews.expire_forever(), name="hutch-preview-expiry")
            deploys = DeployService(settings, db, sandboxes, previews)
            await deploys.recover()
            templates = TemplateService(settings, db, sandboxes, agent)
            deploys.use_templates(templates)
            sandboxes.template_images = templates.image_for
            await templates.recover()
            webhooks = _webhook_service(settings, db)
            deliverer = _deliverer(settings, db, webhooks)
            delivering = asyncio.create_task(deliverer.run_forever(), name="hutch-webhooks")
            metrics = MetricsService(
                db,
                agent.driver,
                host_id=agent.host_id,
                interval_s=settings.metrics_interval_s,
                retention_s=settings.metrics_retention_s,
                count_store=bool(settings.metrics_addr),
            )
            sampling = asyncio.create_task(metrics.sample_forever(), name="hutch-metrics")
            scrape = None
            if settings.metrics_addr:
                scrape, _ = serve_metrics(
                    settings.metrics_addr,
                    Live(
                        store=metrics.store_counts,
                        warm_pool=agent.warm.sizes,
                        preview_routes=previews.route_count,
                    ),
                )
            app.state.services = Services(
                settings=settings,
                db=db,
                identity=IdentityService(db),
                access_tokens=AccessTokenService(db),
                hosts=HostService(db, dead_after_s=settings.host_dead_after_s),
                host_agent=agent,
                sandboxes=sandboxes,
                egress=egress,
                processes=processes,
                shells=ShellService(processes),
                ssh=ssh,
                tunnels=tunnels,
                networks=networks,
                disks=disks,
                previews=previews,
                deploys=deploys,
                templates=templates,
                snapshots=SnapshotService(settings, db, sandboxes, templates.layers),
                wallets=WalletAuth(db),
                events=EventService(db),
                metrics=metrics,
                webhooks=webhooks,
                agent_rate=RateLimiter(
                    settings.agent_requests_per_minute, per="this address and wallet"
                ),
                agent_address_rate=RateLimiter(
                    settings.agent_requests_per_minute_per_address, per="this address"
                ),
                computer=ComputerService(settings, sandboxes, previews),
            )
            if role == "agent":
                from hutch.roles.activity import ActivityFiles, activity_dir
                from hutch.roles.agent import announce

                # Workers run execs themselves and note them there (auto-pause reads it).
                sandboxes.activity_elsewhere = ActivityFiles(activity_dir(settings))
                announce(settings, proxy)
            try:
                yield
            finally:
                await templates.stop()
                await deploys.stop()
                for task in (monitor, disk_checks, counters, expiry, delivering, sampling,
                             overlay, mover):  # fmt: skip
                    if task is None:
                        continue
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await deliverer.close()
                if scrape is not None:
                    scrape.shutdown()
                    scrape.server_close()
                await egress.stop()
                await self_signals.stop()
                if proxy is not None:
                    await proxy.stop()
                await agent.stop()
        finally:
            await db.dispose()

    app = FastAPI(
        title="hutch",
        version=__version__,
        summary="A self-hosted sandbox cloud.",
        lifespan=lifespan,
        redoc_url=None,
    )
    install_error_handlers(app)

    def body_limit(method: str, path: str) -> int | None:
        if any(pattern.match(path) for pattern in _UNLIMITED_BODIES):
            return None
        if path == "/agent/deploy":
            return settings.deploy_max_body_bytes
        if path == "/v1/templates" and method == "POST":
            # The context in base64, plus the Dockerfile and the rest.
            return settings.template_max_context_bytes * 4 // 3 + 4 + 256 * 1024
        return settings.max_json_body_bytes

    app.add_middleware(EnvelopeMiddleware, body_limit=body_limit)
    app.add_middleware(PrometheusMiddleware)
    if role == "agent":
        from hutch.roles.agent import ClientAddressMiddleware, internal_router

        app.add_middleware(ClientAddressMiddleware)
        app.include_router(internal_router)
        if settings.control_url:  # over TCP, only the control plane (its host token)
            from hutch.cluster.drain import router as moves_router
            from hutch.cluster.images import router as images_router
            from hutch.cluster.joiner import AgentTokenMiddleware
            from hutch.cluster.residence import ResidenceMiddleware

            app.add_middleware(ResidenceMiddleware)  # "not here" for kept routes
            app.add_middleware(AgentTokenMiddleware)
            app.include_router(images_router)  # images other hosts lack (cluster/images.py)
            app.include_router(moves_router)  # sandboxes off a draining host (cluster/drain.py)
    if role == "control":
        from hutch.cluster.control import router as cluster_router

        app.include_router(cluster_router)
    app.include_router(createos.router)
    app.include_router(nullspace.router)
    app.include_router(deploy.router)
    app.include_router(console.router)
    _document_real_validation_errors(app)
    return app


def _document_real_validation_errors(app: FastAPI) -> None:
    """FastAPI documents a 422 for every route with parameters; hutch answers a bad request
    with a 400 in the dialect's envelope, so the document says that instead."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        for path_item in document.get("paths", {}).values():
            for operation in path_item.values():
                operation.get("responses", {}).pop("422", None)
        schemas = document.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
