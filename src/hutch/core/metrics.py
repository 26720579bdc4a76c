"""Per-sandbox metrics: sampled every ``metrics_interval_s`` from the kernel, kept in memory
for ``metrics_retention_s`` in a fixed-size ring per sandbox (66 bytes a sample), and the
owner's totals per sampling round beside them.

A round reads every running sandbox of this host (:func:`hutch.host.usage.read_usage`, in
one worker thread). CPU is the share of the sandbox's vCPUs it used since the previous round
(100 = all of them busy). Paused sandboxes are not read (nothing changes while frozen);
their history stays until it ages out or they are destroyed. The history is this host
agent's memory: a restart starts it afresh.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from hutch.core.identity import Principal
from hutch.host.drivers.base import Driver
from hutch.host.usage import Usage, UsageSources, read_many
from hutch.store.db import Database
from hutch.store.models import DiskAttachment, Payment, SandboxRecord, TemplateRecord

__all__ = ["MetricsService", "Sample", "Totals"]

log = logging.getLogger(__name__)

# time, cpu %, vCPUs, memory, limit, processes, disk used, disk size, sent, received
_SAMPLE = struct.Struct("<dfHqqIqqqq")
_UNSET = -1


@dataclass(frozen=True, kw_only=True, slots=True)
class Sample:
    timestamp: float
    cpu_used_pct: float
    cpu_count: int
    mem_used_bytes: int
    mem_total_bytes: int | None
    processes: int
    disk_used_bytes: int | None
    disk_total_bytes: int | None
    net_tx_bytes: int | None
    net_rx_bytes: int | None

    def pack(self) -> bytes:
        def n(value: int | None) -> int:
            return _UNSET if value is None else value

        return _SAMPLE.pack(
            self.timestamp, self.cpu_used_pct, self.cpu_count, self.mem_used_bytes,
            n(self.mem_total_bytes), self.processes, n(self.disk_used_bytes),
            n(self.disk_total_bytes), n(self.net_tx_bytes), n(self.net_rx_bytes),
        )  # fmt: skip

    @classmethod
    def unpack(cls, raw: bytes | memoryview) -> Sample:
        ts, cpu, count, mem, limit, procs, used, size, sent, received = _SAMPLE.unpack(raw)

        def o(value: int) -> int | None:
            return None if value == _UNSET else value

        return cls(
            timestamp=ts, cpu_used_pct=round(cpu, 2), cpu_count=count, mem_used_bytes=mem,
            mem_total_bytes=o(limit), processes=procs, disk_used_bytes=o(used),
            disk_total_bytes=o(size), net_tx_bytes=o(sent), net_rx_bytes=o(received),
        )  # fmt: skip


class _Ring:
    """The last ``size`` samples, packed."""

    __slots__ = ("_buffer", "_count", "_next", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._buffer = bytearray(_SAMPLE.size * size)
        self._next = 0
        self._count = 0

    def add(self, sample: Sample) -> None:
        at = self._next * _SAMPLE.size
        self._buffer[at : at + _SAMPLE.size] = sample.pack()
        self._next = (self._next + 1) % self._size
        self._count = min(self._count + 1, self._size)

    def __iter__(self) -> Iterator[Sample]:
        view = memoryview(self._buffer)
        start = (self._next - self._count) % self._size
        for i in range(self._count):
            at = (start + i) % self._size * _SAMPLE.size
            yield Sample.unpack(view[at : at + _SAMPLE.size])

    def last(self) -> Sample | None:
        if not self._count:
            return None
        at = (self._next - 1) % self._size * _SAMPLE.size
        return Sample.unpack(memoryview(self._buffer)[at : at + _SAMPLE.size])


@dataclass(frozen=True, kw_only=True, slots=True)
class Totals:
    timestamp: float
    sandboxes: int
    cpu_used_pct: float
    """Summed over the user's sampled sandboxes: 100 is one vCPU's worth busy."""
    cpu_count: int
    mem_used_bytes: int
    disk_used_bytes: int
    net_tx_bytes: int
    net_rx_bytes: int


@dataclass
class _Tracked:
    user_id: str
    ring: _Ring
    last_cpu_usec: int | None = None
    last_at: float = 0.0
    seen_at: float = 0.0


class MetricsService:
    def __init__(
        self,
        db: Database,
        driver: Driver,
        *,
        host_id: str,
        interval_s: float,
        retention_s: float,
        count_store: bool = False,
    ) -> None:
        self._db = db
        self._driver = driver
        self._host_id = host_id
        self.interval_s = interval_s
        self._retention_s = retention_s
        self._samples = max(int(retention_s / interval_s), 1)
        self._tracked: dict[str, _Tracked] = {}
        self._totals: dict[str, list[Totals]] = {}
        self._counts: dict[str, dict[tuple[str, ...], float]] = {}
        # The store's counts are for Prometheus only: read them when it is served.
        self._count_store = count_store

    async def sample_forever(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.sample_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store was away this round: the next one tries again
                log.exception("sampling sandboxes' metrics failed this round")
            await asyncio.sleep(max(self.interval_s - (time.monotonic() - started), 0.05))

    async def sample_once(self) -> None:
        if self._count_store:
            await self._count()
        async with self._db.sessions() as session:
            rows = (
                await session.execute(
                    select(
                        SandboxRecord.id,
                        SandboxRecord.user_id,
                        SandboxRecord.vcpu,
                        SandboxRecord.status,
                    ).where(
                        SandboxRecord.host_id == self._host_id,
                        SandboxRecord.status.in_(("running", "paused", "pausing", "resuming")),
                        SandboxRecord.build_of.is_(None),
                    )
                )
            ).all()
        running = [(row.id, row.user_id, row.vcpu) for row in rows if row.status == "running"]
        sources = [(sid, self._driver.usage_sources(sid)) for sid, _, _ in running]
        read = await asyncio.to_thread(_read_all, sources)
        now = time.time()
        live = {row.id for row in rows}
        for (sandbox_id, user_id, vcpu), usage in zip(running, read, strict=True):
            if usage is not None:
                self._record(sandbox_id, user_id, max(vcpu, 1), usage, now)
        for sandbox_id in [s for s in self._tracked if s not in live]:
            del self._tracked[sandbox_id]  # destroyed (or gone from this host)
        self._record_totals(running, now)

    def _record(self, sandbox_id: str, user_id: str, vcpu: int, usage: Usage, now: float) -> None:
        tracked = self._tracked.get(sandbox_id)
        if tracked is None:
            tracked = self._tracked[sandbox_id] = _Tracked(user_id, _Ring(self._samples))
        cpu = 0.0
        if tracked.last_cpu_usec is not None and now > tracked.last_at:
            spent = max(usage.cpu_usec - tracked.last_cpu_usec, 0)
            cpu = min(spent / ((now - tracked.last_at) * 1e6 * vcpu) * 100, 100.0)
        tracked.last_cpu_usec, tracked.last_at, tracked.seen_at = usage.cpu_usec, now, now
        tracked.ring.add(
            Sample(
                timestamp=now,
                cpu_used_pct=cpu,
                cpu_count=vcpu,
                mem_used_bytes=usage.mem_bytes,
                mem_total_bytes=usage.mem_limit_bytes,
                processes=usage.processes,
                disk_used_bytes=usage.disk_used_bytes,
                disk_total_bytes=usage.disk_size_bytes,
                net_tx_bytes=usage.net_tx_bytes,
                net_rx_bytes=usage.net_rx_bytes,
            )
        )

    def _record_totals(self, running: list[tuple[str, str, int]], now: float) -> None:
        sums: dict[str, dict[str, float]] = {}
        for sandbox_id, user_id, _ in running:
            tracked = self._tracked.get(sandbox_id)
            last = tracked.ring.last() if tracked is not None else None
            if last is None or last.timestamp != now:
                continue
            total = sums.setdefault(user_id, dict.fromkeys(
                ("sandboxes", "cpu", "count", "mem", "disk", "tx", "rx"), 0.0))  # fmt: skip
            total["sandboxes"] += 1
            total["cpu"] += last.cpu_used_pct * last.cpu_count
            total["count"] += last.cpu_count
            total["mem"] += last.mem_used_bytes
            total["disk"] += last.disk_used_bytes or 0
            total["tx"] += last.net_tx_bytes or 0
            total["rx"] += last.net_rx_bytes or 0
        for user_id, total in sums.items():
            series = self._totals.setdefault(user_id, [])
            series.append(
                Totals(
                    timestamp=now, sandboxes=int(total["sandboxes"]),
                    cpu_used_pct=round(total["cpu"], 2), cpu_count=int(total["count"]),
                    mem_used_bytes=int(total["mem"]), disk_used_bytes=int(total["disk"]),
                    net_tx_bytes=int(total["tx"]), net_rx_bytes=int(total["rx"]),
                )
            )  # fmt: skip
        cutoff = now - self._retention_s
        for user_id in list(self._totals):
            series = self._totals[user_id]
            while series and series[0].timestamp < cutoff:
                series.pop(0)
            if not series:
                del self._totals[user_id]

    async def _count(self) -> None:
        """What Prometheus shows of the store (every host's, so any agent may be scraped)."""
        async with self._db.sessions() as session:
            sandboxes = await session.execute(
                select(SandboxRecord.status, SandboxRecord.host_id, func.count())
                .where(SandboxRecord.status.not_in(("destroyed", "failed")))
                .group_by(SandboxRecord.status, SandboxRecord.host_id)
            )
            templates = await session.execute(
                select(TemplateRecord.status, func.count())
                .where(TemplateRecord.deleted_at.is_(None))
                .group_by(TemplateRecord.status)
            )
            disks = await session.execute(
                select(DiskAttachment.mount_status, func.count()).group_by(
                    DiskAttachment.mount_status
                )
            )
            payments = await session.scalar(select(func.count()).select_from(Payment))
        self._counts = {
            "hutch_sandboxes": {(row[0], row[1] or ""): row[2] for row in sandboxes},
            "hutch_templates": {(row[0],): row[1] for row in templates},
            "hutch_disk_attachments": {(row[0],): row[1] for row in disks},
            "hutch_payments": {(): int(payments or 0)},
        }

    def store_counts(self) -> dict[str, dict[tuple[str, ...], float]]:
        """The counts of the last round (for :mod:`hutch.api.prometheus`)."""
        return self._counts

    # -- reading ------------------------------------------------------------------------

    def latest(self, sandbox_id: str) -> Sample | None:
        """The sandbox's last sample (the caller has checked it is the user's)."""
        tracked = self._tracked.get(sandbox_id)
        return tracked.ring.last() if tracked is not None else None

    def series(self, sandbox_id: str, since: float | None) -> list[Sample]:
        tracked = self._tracked.get(sandbox_id)
        samples = list(tracked.ring) if tracked is not None else []
        return [s for s in samples if since is None or s.timestamp >= since]

    def totals(self, user: Principal, since: float | None = None) -> list[Totals]:
        series = self._totals.get(user.user_id, [])
        return [t for t in series if since is None or t.timestamp >= since]

    def describe(self) -> dict[str, Any]:
        return {"sandboxes": len(self._tracked), "interval_s": self.interval_s}


def _read_all(sources: list[tuple[str, UsageSources | None]]) -> list[Usage | None]:
    readable = [where for _, where in sources if where is not None]
    read = iter(read_many(readable))
    return [next(read) if where is not None else None for _, where in sources]
