"""Placement: which host a new sandbox goes to.

A host is a candidate when it is ``active`` (not draining, heartbeat within
``HUTCH_HOST_DEAD_AFTER_S``), is the ``host_id`` asked for (if any), carries every label of
the ``node_selector``, offers the runtime, and holds the image (a catalog rootfs it has
built, or the template's image). Among the candidates, hutch takes a random sample of
:data:`SAMPLE` and places on the least loaded of those where the shape fits:

- *fits*: the shape's memory is within the host's real free memory and within its
  capacity less what its live sandboxes and pending placements hold; its vCPUs within
  ``cpus * HUTCH_CPU_OVERCOMMIT`` less theirs;
- *least loaded*: the smallest share of its capacity committed.

Why a sample of three (E2B's orchestrator does the same): looking at a few random hosts
costs about the same with 10 hosts or 10,000 (three host rows locked and two aggregates
over them, not a scan of every host's sandboxes; the hosts' slow-changing facts are
cached for a second), and it avoids herding: several control planes placing at once with a
global "least loaded" would all pick the same emptiest host, while random samples spread
them and still land on a lightly loaded host with high probability (the "power of two
choices"). When no host in a sample fits, the next sample is tried, so a create fails
only when no candidate fits at all.

On PostgreSQL the sampled host rows are locked with ``SELECT … FOR UPDATE SKIP LOCKED``
while the decision is made and its :class:`~hutch.store.models.PlacementHold` written:
two control planes never count the same free room twice, and neither waits on the other
(a host locked by another placement is left out of this one's sample). The hold is
released when the create ends (:meth:`Placer.release`) and expires on its own after
:data:`HOLD_S` if the control plane died meanwhile.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hutch.core.errors import Unavailable
from hutch.core.ids import new_id
from hutch.core.sandbox_status import LIVE_STATUSES
from hutch.store.db import Database
from hutch.store.models import Host, PlacementHold, SandboxRecord, utcnow

__all__ = ["HOLD_S", "SAMPLE", "Placed", "PlacementRequest", "Placer"]

SAMPLE = 3
HOLD_S = 300.0


@dataclass(frozen=True, kw_only=True)
class PlacementRequest:
    mem_mib: int
    vcpu: int
    image: str
    """A catalog rootfs (``devbox:1``) or a template id; empty: no image condition."""
    runtime: str = ""
    host_id: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Placed:
    host_id: str
    address: str | None
    hold_id: str


@dataclass(frozen=True)
class _Candidate:
    id: str
    address: str | None
    labels: dict[str, str]
    images: frozenset[str]
    runtimes: frozenset[str]
    capacity_mib: int
    cpus: int


class Placer:
    """Places creates. Keep one per process: it caches the hosts' slow-changing facts
    (labels, images, capacity) for ``refresh_s``, so a decision reads three host rows, not
    all of them; what can change at any moment (status, heartbeat, free memory, what is
    placed there) is read, under the row lock, for the sampled hosts only."""

    def __init__(
        self, db: Database, *, dead_after_s: float, cpu_overcommit: float,
        rng: random.Random | None = None, refresh_s: float = 1.0,
    ) -> None:  # fmt: skip
        self._db = db
        self._dead_after = timedelta(seconds=dead_after_s)
        self._overcommit = cpu_overcommit
        self._rng = rng or random.Random()
        self._refresh_s = refresh_s
        self._hosts: list[_Candidate] = []
        self._read_at = -1e9
        self._reading = asyncio.Lock()

    async def _directory(self) -> list[_Candidate]:
        if time.monotonic() - self._read_at < self._refresh_s:
            return self._hosts
        async with self._reading:
            if time.monotonic() - self._read_at >= self._refresh_s:
                fresh = utcnow() - self._dead_after
                query = select(
                    Host.id, Host.address, Host.labels, Host.rootfses, Host.templates,
                    Host.runtimes, Host.capacity_mib, Host.total_mib, Host.cpus,
                ).where(Host.status == "active", Host.heartbeat_at >= fresh)  # fmt: skip
                async with self._db.sessions() as session:
                    rows = (await session.execute(query)).all()
                self._hosts = [
                    _Candidate(id=r.id, address=r.address, labels=dict(r.labels or {}),
                               images=frozenset((r.rootfses or []) + (r.templates or [])),
                               runtimes=frozenset(r.runtimes or []),
                               capacity_mib=r.capacity_mib or r.total_mib, cpus=r.cpus)
                    for r in rows
                ]  # fmt: skip
                self._read_at = time.monotonic()
        return self._hosts

    def forget(self) -> None:
        """Read the hosts again at the next placement (one joined, drained or died)."""
        self._read_at = -1e9

    async def place(self, want: PlacementRequest) -> Placed:
        """The host for ``want``, with room held there; Unavailable (503) saying why none
        fits."""
        hosts = await self._directory()
        if want.host_id:
            hosts = [h for h in hosts if h.id == want.host_id]
        candidates = [h for h in hosts if _suits(h, want)]
        self._rng.shuffle(candidates)
        seen = _Seen()
        now = utcnow()
        async with self._db.sessions.begin() as session:
            # First every sample, passing over hosts another placement holds locked; then
            # those, waiting for their locks (so a burst on a small cluster never fails
            # for want of a free row). One sample's locks at a time: no deadlock.
            for pool, wait in ((candidates, False), (seen.busy, True)):
                for start in range(0, len(pool), SAMPLE):
                    sample = pool[start : start + SAMPLE]
                    placed = await self._try(session, sample, want, now, wait, seen)
                    if placed is not None:
                        return placed
        if seen.gone:
            self.forget()
        raise Unavailable(_why_none(hosts, candidates, want, seen))

    async def _try(
        self, session: AsyncSession, sample: list[_Candidate], want: PlacementRequest,
        now: datetime, wait: bool, seen: _Seen,
    ) -> Placed | None:  # fmt: skip
        """Lock ``sample``'s rows, and place on the least loaded one that fits (holding
        its room); None, with the locks let go, when none does."""
        locking = self._db.url.get_backend_name() == "postgresql"
        savepoint = await session.begin_nested() if locking else None
        ids = {c.id: c for c in sample}
        query = (
            select(Host.id, Host.free_mib)
            .where(Host.id.in_(ids), Host.status == "active")
            .where(Host.heartbeat_at >= now - self._dead_after)
            .order_by(Host.id)  # one lock order for every placement: no deadlock
        )
        if locking:
            query = query.with_for_update(skip_locked=not wait)
        free = {host_id: int(mib) for host_id, mib in await session.execute(query)}
        missing = [c for c in sample if c.id not in free]
        # Passed over: locked by another placement (first pass), or no longer active.
        (seen.busy if locking and not wait else seen.gone).extend(missing)
        used = await _committed(session, set(free), now)
        best: tuple[float, _Candidate] | None = None
        for host_id in sorted(free):
            host = ids[host_id]
            mem, vcpu = used.get(host_id, (0, 0))
            room = min(free[host_id], host.capacity_mib - mem)
            cpu_room = host.cpus * self._overcommit - vcpu
            if want.mem_mib > room:
                seen.tight.append(f"{host_id} has {max(room, 0)} MiB free")
                continue
            if host.cpus and want.vcpu > cpu_room:
                seen.tight.append(f"{host_id} has {max(cpu_room, 0):g} vCPU free")
                continue
            load = (mem + want.mem_mib) / max(host.capacity_mib, 1)
            if best is None or load < best[0]:
                best = (load, host)
        if best is None:
            if savepoint is not None:
                await savepoint.rollback()
            return None
        until = now + timedelta(seconds=HOLD_S)
        hold = PlacementHold(id=new_id("ph_"), host_id=best[1].id, mem_mib=want.mem_mib,
                             vcpu=want.vcpu, expires_at=until)  # fmt: skip
        session.add(hold)
        if savepoint is not None:
            await savepoint.commit()
        return Placed(host_id=best[1].id, address=best[1].address, hold_id=hold.id)

    async def release(self, placed: Placed) -> None:
        """Drop the hold once the create ended (its sandbox now counts, or it failed)."""
        async with self._db.sessions.begin() as session:
            await session.execute(delete(PlacementHold).where(PlacementHold.id == placed.hold_id))


@dataclass
class _Seen:
    """What a placement found on its way: why hosts did not fit, which were locked by
    another placement, which were no longer active."""

    tight: list[str] = field(default_factory=list)
    busy: list[_Candidate] = field(default_factory=list)
    gone: list[_Candidate] = field(default_factory=list)


def _suits(host: _Candidate, want: PlacementRequest) -> bool:
    return (
        all(host.labels.get(k) == v for k, v in want.node_selector.items())
        and (not want.runtime or want.runtime in host.runtimes)
        and (not want.image or want.image in host.images)
    )


def _why_none(
    hosts: list[_Candidate], candidates: list[_Candidate], want: PlacementRequest, seen: _Seen
) -> str:
    if want.host_id and not hosts:
        return f"host {want.host_id!r} is not an active host (see GET /v1/hosts)"
    if not hosts or (not seen.tight and seen.gone):
        return "no host is active (every host is draining, dead or gone; see GET /v1/hosts)"
    if not candidates:
        wanted = []
        if want.node_selector:
            pairs = ", ".join(f"{k}={v}" for k, v in sorted(want.node_selector.items()))
            wanted.append(f"labels {pairs}")
        if want.image:
            wanted.append(f"the image {want.image!r}")
        if want.runtime:
            wanted.append(f"the runtime {want.runtime!r}")
        return f"no active host has {' and '.join(wanted)}"
    tight = "; ".join(sorted(seen.tight)[:5])
    if any("vCPU" in t for t in seen.tight) and not any("MiB" in t for t in seen.tight):
        return f"no host has {want.vcpu} vCPU free ({tight})"
    return f"no host has {want.mem_mib} MiB free ({tight})"


async def _committed(
    session: AsyncSession, hosts: set[str], now: datetime
) -> dict[str, tuple[int, int]]:
    """``{host: (MiB, vCPU)}`` held by live sandboxes and unexpired holds."""
    if not hosts:
        return {}
    used: dict[str, tuple[int, int]] = {}
    live = await session.execute(
        select(SandboxRecord.host_id, func.sum(SandboxRecord.mem_mib), func.sum(SandboxRecord.vcpu))
        .where(SandboxRecord.host_id.in_(hosts), SandboxRecord.status.in_(LIVE_STATUSES))
        .group_by(SandboxRecord.host_id)
    )
    holds = await session.execute(
        select(PlacementHold.host_id, func.sum(PlacementHold.mem_mib), func.sum(PlacementHold.vcpu))
        .where(PlacementHold.host_id.in_(hosts), PlacementHold.expires_at > now)
        .group_by(PlacementHold.host_id)
    )
    for host_id, mem, vcpu in [*live, *holds]:
        old = used.get(host_id, (0, 0))
        used[host_id] = (old[0] + int(mem or 0), old[1] + int(vcpu or 0))
    return used
