"""The warm pool as tests see it: its prepared sandboxes on the host (their ``warm``
marker) and how many the server has ready to hand out (``hutch_warm_pool_ready``)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.postgres import free_port
from tests.support.server import HutchProcess

__all__ = ["metrics_env", "pool_ready", "prepared", "wait_for_pool"]


def metrics_env() -> dict[str, str]:
    """A server's environment for its Prometheus ``/metrics`` on a free loopback port, where
    :func:`pool_ready` reads it."""
    return {"HUTCH_METRICS_ADDR": f"127.0.0.1:{free_port()}"}


def prepared(home: Path) -> list[str]:
    """The ids of the pool's prepared sandboxes on the host (their directories' marker:
    written once a sandbox runs, before it is ready to be handed out)."""
    sandboxes = home / "sandboxes"
    if not sandboxes.is_dir():
        return []
    return sorted(d.name for d in sandboxes.iterdir() if (d / "warm").exists())


def pool_ready(server: HutchProcess) -> int:
    """Prepared sandboxes the server would hand out now: its ``hutch_warm_pool_ready``
    gauge, over every entry (the server was started with :func:`metrics_env`)."""
    assert server.metrics_addr, "the server has no HUTCH_METRICS_ADDR"
    text = httpx.get(f"http://{server.metrics_addr}/metrics", timeout=10).text
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "hutch_warm_pool_ready"
            for sample in family.samples
        )
    )


def wait_for_pool(server: HutchProcess, count: int, timeout: float = 180) -> list[str]:
    """The ids of the pool's prepared sandboxes once ``count`` are ready to be handed out,
    as the server says (a marker on the host comes before the sandbox's reference state
    is taken and it joins the ready queue, so markers alone race a create)."""
    deadline = time.monotonic() + timeout
    while (ready := _ready_now(server)) != count or len(ids := prepared(server.home)) != count:
        assert time.monotonic() < deadline, f"{ready} of {count} ready, {len(ids)} marked"
        time.sleep(0.05)
    return ids


def _ready_now(server: HutchProcess) -> int:
    """:func:`pool_ready`, or 0 while the server's ``/metrics`` does not answer yet (its
    listener may come up a moment after the API's)."""
    try:
        return pool_ready(server)
    except httpx.TransportError:
        return 0
