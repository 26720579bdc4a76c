"""``/v1/sandboxes/{id}/metrics``, ``/v1/metrics`` and their timeseries (CreateOS §17.6)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from hutch.api.createos.responses import AUTH_ERRORS
from hutch.api.deps import CurrentUser, ServicesDep
from hutch.api.envelopes import JSend, JSendFail
from hutch.core.events import aware_time
from hutch.core.metrics import Sample, Totals

__all__ = ["router"]

router = APIRouter(tags=["metrics"], responses={**AUTH_ERRORS})

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": JSendFail, "description": "No such sandbox (or not yours)."}
}
_SINCE = Query(
    max_length=64,
    description="From this ISO 8601 time (with a zone), or this many seconds ago (a number);"
    " default: all that is kept.",
)


class SampleOut(BaseModel):
    timestamp: datetime
    cpu_used_pct: float = Field(description="Share of the sandbox's vCPUs used (100: all busy).")
    cpu_count: int
    mem_used_bytes: int = Field(description="The working set (without droppable file cache).")
    mem_total_bytes: int | None = Field(description="The shape's memory limit.")
    disk_used_bytes: int | None
    disk_total_bytes: int | None
    net_rx_bytes: int | None = Field(description="Received by the sandbox since it started.")
    net_tx_bytes: int | None = Field(description="Sent by the sandbox since it started.")
    processes: int

    @classmethod
    def of(cls, sample: Sample) -> SampleOut:
        return cls(
            timestamp=datetime.fromtimestamp(sample.timestamp, UTC),
            cpu_used_pct=sample.cpu_used_pct, cpu_count=sample.cpu_count,
            mem_used_bytes=sample.mem_used_bytes, mem_total_bytes=sample.mem_total_bytes,
            disk_used_bytes=sample.disk_used_bytes, disk_total_bytes=sample.disk_total_bytes,
            net_rx_bytes=sample.net_rx_bytes, net_tx_bytes=sample.net_tx_bytes,
            processes=sample.processes,
        )  # fmt: skip


class SandboxMetrics(BaseModel):
    sandbox_id: str
    status: str
    interval_s: float = Field(description="How often running sandboxes are sampled.")
    metrics: SampleOut | None = Field(
        description="The latest sample; null before the first one (or on a driver that"
        " cannot read usage)."
    )
    history: list[SampleOut] | None = Field(
        default=None, description="With since=: the samples from then on, oldest first."
    )


class SandboxSeries(BaseModel):
    sandbox_id: str
    interval_s: float
    samples: list[SampleOut] = Field(description="Oldest first.")


class TotalsOut(BaseModel):
    timestamp: datetime
    sandboxes: int = Field(description="Running sandboxes sampled in that round.")
    cpu_used_pct: float = Field(description="Summed: 100 is one vCPU's worth busy.")
    cpu_count: int
    mem_used_bytes: int
    disk_used_bytes: int
    net_rx_bytes: int
    net_tx_bytes: int

    @classmethod
    def of(cls, totals: Totals) -> TotalsOut:
        return cls(
            timestamp=datetime.fromtimestamp(totals.timestamp, UTC),
            sandboxes=totals.sandboxes, cpu_used_pct=totals.cpu_used_pct,
            cpu_count=totals.cpu_count, mem_used_bytes=totals.mem_used_bytes,
            disk_used_bytes=totals.disk_used_bytes, net_rx_bytes=totals.net_rx_bytes,
            net_tx_bytes=totals.net_tx_bytes,
        )  # fmt: skip


class StatusCounts(BaseModel):
    running: int
    paused: int
    total: int


class UserMetrics(BaseModel):
    counts: StatusCounts
    interval_s: float
    usage: TotalsOut | None = Field(description="The latest round's totals; null when none ran.")


class UserSeries(BaseModel):
    interval_s: float
    samples: list[TotalsOut]


def _since(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        return time.time() - float(value)
    except ValueError:
        pass
    when = aware_time(value, "since must be an ISO 8601 time or a number of seconds ago")
    return when.timestamp()


@router.get(
    "/v1/sandboxes/{sandbox_id}/metrics",
    summary="A sandbox's CPU, memory, disk and traffic now",
    responses={**_NOT_FOUND},
)
async def sandbox_metrics(
    sandbox_id: str,
    user: CurrentUser,
    services: ServicesDep,
    since: Annotated[str | None, _SINCE] = None,
) -> JSend[SandboxMetrics]:
    """The latest sample; with ``since``, the window of history from then too."""
    start = _since(since)
    record = await services.sandboxes.get(user, sandbox_id)
    sample = services.metrics.latest(record.id)
    history = None
    if since is not None:
        history = [SampleOut.of(s) for s in services.metrics.series(record.id, start)]
    return JSend(
        data=SandboxMetrics(
            sandbox_id=record.id,
            status=record.status,
            interval_s=services.metrics.interval_s,
            metrics=SampleOut.of(sample) if sample is not None else None,
            history=history,
        )
    )


@router.get(
    "/v1/sandboxes/{sandbox_id}/metrics/timeseries",
    summary="A sandbox's samples over time",
    responses={**_NOT_FOUND, 400: {"model": JSendFail, "description": "A bad since."}},
)
async def sandbox_timeseries(
    sandbox_id: str,
    user: CurrentUser,
    services: ServicesDep,
    since: Annotated[str | None, _SINCE] = None,
) -> JSend[SandboxSeries]:
    record = await services.sandboxes.get(user, sandbox_id)
    samples = services.metrics.series(record.id, _since(since))
    return JSend(
        data=SandboxSeries(
            sandbox_id=record.id,
            interval_s=services.metrics.interval_s,
            samples=[SampleOut.of(s) for s in samples],
        )
    )


@router.get("/v1/metrics", summary="Your sandboxes' totals now")
async def user_metrics(user: CurrentUser, services: ServicesDep) -> JSend[UserMetrics]:
    stats = await services.identity.sandbox_stats(user.user_id)
    series = services.metrics.totals(user, time.time() - 2 * services.metrics.interval_s)
    return JSend(
        data=UserMetrics(
            counts=StatusCounts(running=stats.running, paused=stats.paused, total=stats.total),
            interval_s=services.metrics.interval_s,
            usage=TotalsOut.of(series[-1]) if series else None,
        )
    )


@router.get(
    "/v1/metrics/timeseries",
    summary="Your sandboxes' totals over time",
    responses={400: {"model": JSendFail, "description": "A bad since."}},
)
async def user_timeseries(
    user: CurrentUser, services: ServicesDep, since: Annotated[str | None, _SINCE] = None
) -> JSend[UserSeries]:
    samples = services.metrics.totals(user, _since(since))
    return JSend(
        data=UserSeries(
            interval_s=services.metrics.interval_s, samples=[TotalsOut.of(t) for t in samples]
        )
    )
