"""Prometheus: ``/metrics`` on an operator address (``HUTCH_METRICS_ADDR``), never on the
public API's port.

What is exported (``hutch_`` names; see the README's table and ``grafana/hutch.json``):
request counts and latencies per route (the route's template, so ids never become labels),
sandboxes by status and host, template builds by status, disk attachments by mount status,
payments, the warm pool, preview routes, and how long sandbox operations took. Counters and
histograms live in this process; when several processes serve (``PROMETHEUS_MULTIPROC_DIR``
set, as ``hutch serve`` does for its roles), prometheus-client's multiprocess mode adds them
up across processes at each scrape.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "Live",
    "PrometheusMiddleware",
    "serve_metrics",
]

log = logging.getLogger(__name__)

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "hutch_http_requests", "Requests answered, by route template, method and status.",
    ["route", "method", "status"],
)  # fmt: skip
REQUEST_SECONDS = Histogram(
    "hutch_http_request_duration_seconds",
    "Time to the response's first byte (streams: until they start), by route template.",
    ["route", "method"],
    buckets=_BUCKETS,
)
OPERATION_SECONDS = Histogram(
    "hutch_sandbox_operation_seconds",
    "How long successful sandbox operations took through the API, request to answer.",
    ["operation"],
    buckets=_BUCKETS,
)
# The routes that do one operation and answer when it is done.
_OPERATIONS = {
    ("POST", "/v1/sandboxes"): "create",
    ("POST", "/nullspace/v1/sandboxes"): "create",
    ("POST", "/v1/sandboxes/{sandbox_id}/exec"): "exec",
    ("POST", "/nullspace/v1/sandboxes/{sandbox_id}/exec"): "exec",
    ("POST", "/v1/sandboxes/{sandbox_id}/pause"): "pause",
    ("POST", "/v1/sandboxes/{sandbox_id}/resume"): "resume",
    ("POST", "/v1/sandboxes/{sandbox_id}/fork"): "fork",
}


PASSED_ON = b"x-hutch-to-agent"
"""On a worker's answer that is never sent: the request goes to the host agent, which
counts it (:mod:`hutch.roles.local_exec`)."""


def observe_request(template: str, method: str, status: int, seconds: float) -> None:
    """Count one request as :class:`PrometheusMiddleware` does (for answers made without
    the app: :mod:`hutch.roles.answers`)."""
    REQUEST_SECONDS.labels(template, method).observe(seconds)
    operation = _OPERATIONS.get((method, template))
    if operation is not None and 200 <= status < 300:
        OPERATION_SECONDS.labels(operation).observe(seconds)
    REQUESTS.labels(template, method, str(status)).inc()


class PrometheusMiddleware:
    """Counts and times every HTTP request by the route it matched (``unmatched`` else)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500
        passed_on = False

        async def timed(message: Message) -> None:
            nonlocal status, passed_on
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if any(name == PASSED_ON for name, _ in message.get("headers", ())):
                    passed_on = True
                    await send(message)
                    return
                took = time.monotonic() - started
                template = _template(scope)
                REQUEST_SECONDS.labels(template, scope["method"]).observe(took)
                operation = _OPERATIONS.get((scope["method"], template))
                if operation is not None and 200 <= status < 300:
                    OPERATION_SECONDS.labels(operation).observe(took)
            await send(message)

        try:
            await self.app(scope, receive, timed)
        finally:
            if not passed_on:
                REQUESTS.labels(_template(scope), scope["method"], str(status)).inc()


def _template(scope: Scope) -> str:
    """The matched route's path template (ids never become labels); ``unmatched`` else."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "unmatched"


@dataclass
class Live:
    """Gauges read at each scrape from what this process holds (the host agent's)."""

    store: Callable[[], Mapping[str, Mapping[tuple[str, ...], float]]] = dict
    """Counts the metrics sampler last read from the store: metric name → labels → value."""
    warm_pool: Callable[[], Mapping[str, int]] = dict
    preview_routes: Callable[[], int] = lambda: 0


_STORE_GAUGES = {
    "hutch_sandboxes": ("Sandboxes by status and host.", ("status", "host")),
    "hutch_templates": ("Templates by status (pending and building are the build queue).",
                        ("status",)),
    "hutch_disk_attachments": ("Disk attachments by mount status (error: failed mounts).",
                               ("mount_status",)),
    "hutch_payments": ("On-chain payments that bought deploy credits.", ()),
}  # fmt: skip


class _LiveCollector(Collector):
    def __init__(self, live: Live) -> None:
        self._live = live

    def collect(self) -> Iterable[Metric]:
        counts = self._live.store()
        for name, (documentation, labels) in _STORE_GAUGES.items():
            family = GaugeMetricFamily(name, documentation, labels=list(labels))
            for values, value in counts.get(name, {}).items():
                family.add_metric(list(values), value)
            yield family
        pool = GaugeMetricFamily(
            "hutch_warm_pool_ready", "Prepared sandboxes waiting, by image:shape.", labels=["pool"]
        )
        for name, size in self._live.warm_pool().items():
            pool.add_metric([name], size)
        yield pool
        yield GaugeMetricFamily(
            "hutch_preview_routes", "Preview and ingress routes in the proxy.",
            value=self._live.preview_routes(),
        )  # fmt: skip


class _Everything(Collector):
    """This process's own metrics (or, with several processes, all of theirs) and the
    live gauges."""

    def __init__(self, live: Live) -> None:
        self._live = _LiveCollector(live)
        self._own: Collector
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            self._own = MultiProcessCollector(None)  # type: ignore[no-untyped-call]
        else:
            self._own = REGISTRY

    def collect(self) -> Iterable[Metric]:
        yield from self._own.collect()
        yield from self._live.collect()


def serve_metrics(address: str, live: Live) -> tuple[WSGIServer, Thread]:
    """Serve ``/metrics`` on ``host:port`` from a thread; ``server.shutdown()`` stops it."""
    host, _, port = address.rpartition(":")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Everything(live))
    server, thread = start_http_server(
        int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry
    )
    log.info("Prometheus metrics on http://%s/metrics", address)
    return server, thread
