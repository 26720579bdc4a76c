"""Placement: which host a new sandbox goes to.

A host is a candidate when it is ``active`` (not draining, heartbeat within
``HUTCH_HOST_DEAD_AFTER_S``), is the ``host_id`` asked for (if any), carries every label of
the ``node_selector``, and offers the runtime. A host that holds the image (a catalog
rootfs it has built, or the template's image) is preferred; one that lacks it is a
candidate too, as long as some live host (active or draining) holds it to fetch it from
(:mod:`hutch.cluster.images`): the hosts that hold it are sampled first, and in a sample
a host that lacks it ranks after every one that has it and fits (a fetch costs the create
seconds, a rebuild never happens). Among the candidates, hutch takes a random sample of
:data:`SAMPLE` and places on the least loaded of those where the shape fits:

- *fits*: the shape's memory is within the host's real free memory and within its
  capacity less what its live sandboxes and pending placements hold; its vCPUs within
  ``cpus * HUTCH_CPU_OVERCOMMIT`` less theirs;
- *least loaded*: the smallest share of its capacity committed.

Why a sample of three (E2B's orchestrator does the same): looking at a few random hosts
costs about the same with 10 hosts or 10,000 (three host rows locked and one aggregate
over them, not a scan of every host's sandboxes; the hosts' slow-changing facts are
cached for a second), and it avoids herding: several control planes placing at once with a
global "least loaded" would all pick the same emptiest host, while random samples spread
them and still land on a lightly loaded host with high probability (the "power of two
choices"). When no host in a sample fits, the next sample is tried, so a create fails
only when no candidate fits at all.

On PostgreSQL the sampled host rows are locked with ``SELECT … FOR UPDATE SKIP LOCKED``
while the decision is made and its :class:`~hutch.store.models.PlacementHold` written:
two control planes never count the same free room twice, and neither waits on the other
(a host locked by another placement is left out of this one's sample). The whole sample
is one statement there, the ``hutch_place`` function (migration 0021: lock, read what the
locked hosts hold in a fresh snapshot, pick, write the hold), sent on the placer's own
autocommit connections: one round trip a sample. The hold is released when the create
ends (:meth:`Placer.release`) and expires on its own after :data:`HOLD_S` if the control
plane died meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Text, cast, delete, func, insert, select, text, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from hutch.cluster.oneshot import OneShot
from hutch.core.errors import Unavailable
from hutch.core.ids import new_id
from hutch.core.sandbox_status import LIVE_STATUSES
from hutch.store.db import Database
from hutch.store.models import Host, PlacementHold, SandboxRecord, utcnow

__all__ = ["HOLD_S", "SAMPLE", "Placed", "PlacementRequest", "Placer"]

log = logging.getLogger(__name__)

SAMPLE = 3
HOLD_S = 300.0
_RECHECK_S = 0.25
_PLACE = text(
    "SELECT * FROM hutch_place(:ids, :capacity, :cpus, :holds, :mem, :vcpu, :overcommit, "
    ":live, :fresh, :now, :wait, :hold_id, :until)"
)


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
    sources: tuple[str, ...] = ()
    """When the host lacks the image: live hosts that hold it (to fetch it from)."""


@dataclass(frozen=True)
class _Candidate:
    id: str
    address: str | None
    labels: dict[str, str]
    images: frozenset[str]
    runtimes: frozenset[str]
    capacity_mib: int
    cpus: int
    active: bool = True
    """False: draining (no placements; still a host to fetch an image from)."""


class Placer:
    """Places creates. Keep one per process: it caches the hosts' slow-changing facts
    (labels, images, capacity) and re-reads them in the background every ``refresh_s``
    (a placement never waits for that read but the first), so a decision reads three host
    rows, not all of them; what can change at any moment (status, heartbeat, free memory,
    what is placed there) is read, under the row lock, for the sampled hosts only."""

    def __init__(
        self, db: Database, *, dead_after_s: float, cpu_overcommit: float,
        rng: random.Random | None = None, refresh_s: float = 1.0, oneshot: OneShot | None = None,
    ) -> None:  # fmt: skip
        self._db = db
        self._dead_after = timedelta(seconds=dead_after_s)
        self._overcommit = cpu_overcommit
        self._rng = rng or random.Random()
        self._refresh_s = refresh_s
        self._known: _Directory | None = None
        self._read_at = -1e9
        self._reading = asyncio.Lock()
        self._refreshing: asyncio.Task[None] | None = None
        self._locking = db.url.get_backend_name() == "postgresql"
        self._oneshot = oneshot or OneShot.of(db)  # one statement, one round trip
        self._decoded: dict[tuple[Any, ...], _Candidate] = {}  # by the row it came from

    async def _read(self) -> None:
        fresh = utcnow() - self._dead_after
        # The JSON columns as text (compared with the last read's before any decoding).
        query = select(
            Host.id, Host.address, cast(Host.labels, Text), cast(Host.rootfses, Text),
            cast(Host.templates, Text), cast(Host.runtimes, Text), Host.capacity_mib,
            Host.total_mib, Host.cpus, Host.status,
        ).where(Host.status.in_(("active", "draining")), Host.heartbeat_at >= fresh)  # fmt: skip
        started = time.monotonic()
        async with self._db.engine.connect() as conn:
            rows = [tuple(r) for r in await conn.execute(query)]
        # Decoded only where a row changed since the last read (a heartbeat changes none
        # of these): with 1,000 hosts, decoding every row took ~12 ms of CPU a second,
        # holding the interpreter from the placements meanwhile, thread or not.
        kept = self._decoded
        changed = sum(1 for row in rows if row not in kept)
        if not changed and len(rows) == len(kept) and self._known is not None:
            self._read_at = started  # the same hosts: keep the candidates worked out
            return
        if changed > _DECODE_INLINE:
            decoded = await asyncio.to_thread(_candidates_of, rows, kept)
        else:
            decoded = _candidates_of(rows, kept)
        self._decoded = decoded
        self._known = _Directory(list(decoded.values()))
        self._read_at = started

    async def _refresh(self) -> None:
        try:
            async with self._reading:
                await self._read()
        except Exception:  # the one known stays in use; the next placement tries again
            log.warning("reading the hosts for placement failed", exc_info=True)

    async def _directory(self) -> _Directory:
        known = self._known
        if known is None:  # nothing to go on yet: read now
            async with self._reading:
                if self._known is None:
                    await self._read()
            assert self._known is not None
            return self._known
        stale = time.monotonic() - self._read_at >= self._refresh_s
        if stale and (self._refreshing is None or self._refreshing.done()):
            # Read again in the background; this placement uses what is known (the rows
            # it picks are checked under their locks anyway).
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
        return known

    def forget(self) -> None:
        """Read the hosts again before the next placement (one joined, drained or died)."""
        self._known = None

    async def place(self, want: PlacementRequest) -> Placed:
        """The host for ``want``, with room held there; Unavailable (503) saying why none
        fits."""
        directory = await self._directory()
        pick = directory.candidates(want)
        if not pick.holders and time.monotonic() - self._read_at > _RECHECK_S:
            # No host known to hold the image: a template that became ready a moment ago
            # may be in a heartbeat since. Read the hosts again before refusing.
            self.forget()
            pick = (await self._directory()).candidates(want)
        seen = _Seen(holders=pick.holders)
        now = utcnow()
        # Those that hold the image first (each part in random order, drawn lazily: three
        # at a time, not a shuffle of every host): a fetch only when none of them fits.
        order = _drawn(self._rng, pick.holding, pick.lacking)
        # First every sample, passing over hosts another placement holds locked; then
        # those, waiting for their locks (so a burst on a small cluster never fails for
        # want of a free row). One sample's locks at a time, in id order: no deadlock.
        for wait in (False, True):
            samples = _chunks(order, SAMPLE) if not wait else _chunks(iter(seen.busy), SAMPLE)
            if wait:
                seen.busy = []
            for sample in samples:
                placed = await self._try(sample, want, now, wait, seen)
                if placed is not None:
                    return placed
        if seen.gone:
            self.forget()
        raise Unavailable(_why_none(pick.hosts, pick.count, want, seen))

    async def _try(
        self, sample: list[_Candidate], want: PlacementRequest, now: datetime, wait: bool,
        seen: _Seen,
    ) -> Placed | None:  # fmt: skip
        """Lock ``sample``'s rows, and place on the least loaded one that fits (holding
        its room, committed); None, with the locks let go, when none does."""
        ids = {c.id: c for c in sample}
        hold_id = new_id("ph_")
        if self._locking:
            free, used, chosen = await self._try_in_one(sample, want, now, wait, hold_id)
            best = ids[chosen] if chosen is not None else None
        else:
            free, used, best = await self._try_in_three(ids, want, now, hold_id, seen)
        missing = [c for c in sample if c.id not in free]
        # Passed over: locked by another placement (first pass), or no longer active.
        (seen.busy if self._locking and not wait else seen.gone).extend(missing)
        if best is None:
            self._best(free, ids, used, want, seen)  # (only to say why none fits)
            return None
        sources = () if _holds(best, want) else tuple(h for h in seen.holders if h != best.id)
        return Placed(host_id=best.id, address=best.address, hold_id=hold_id, sources=sources)

    async def _try_in_one(
        self, sample: list[_Candidate], want: PlacementRequest, now: datetime, wait: bool,
        hold_id: str,
    ) -> tuple[dict[str, int], dict[str, tuple[int, int]], str | None]:  # fmt: skip
        """PostgreSQL: the whole decision is one statement, ``hutch_place`` (migration
        0021): lock the rows (``FOR UPDATE``, ``SKIP LOCKED`` unless ``wait``), read what
        they hold in a fresh snapshot, pick the least loaded that fits and write its hold,
        committed with the statement. One round trip instead of six (a pool ping, BEGIN,
        three statements, COMMIT), each a wait for the server's process on a busy host."""
        ordered = sorted(sample, key=lambda c: c.id)
        params = {
            "ids": [c.id for c in ordered], "capacity": [c.capacity_mib for c in ordered],
            "cpus": [c.cpus for c in ordered], "holds": [_holds(c, want) for c in ordered],
            "mem": want.mem_mib, "vcpu": want.vcpu, "overcommit": float(self._overcommit),
            "live": [str(s) for s in LIVE_STATUSES], "fresh": now - self._dead_after,
            "now": now, "wait": wait, "hold_id": hold_id,
            "until": now + timedelta(seconds=HOLD_S),
        }  # fmt: skip
        rows = await self._oneshot.rows(_PLACE, params)
        free = {str(r[0]): int(r[1]) for r in rows}
        used = {str(r[0]): (int(r[2]), int(r[3])) for r in rows}
        chosen = next((str(r[0]) for r in rows if r[4]), None)
        return free, used, chosen

    async def aclose(self) -> None:
        await self._oneshot.aclose()

    async def _try_in_three(
        self, ids: dict[str, _Candidate], want: PlacementRequest, now: datetime, hold_id: str,
        seen: _Seen,
    ) -> tuple[dict[str, int], dict[str, tuple[int, int]], _Candidate | None]:  # fmt: skip
        """SQLite (no row locks): read the rows and what they hold, then write the hold.
        Only the insert takes SQLite's write lock (the driver begins no transaction for a
        read), so placements at once may count the same room: a cluster's store is
        PostgreSQL."""
        query = (
            select(Host.id, Host.free_mib)
            .where(Host.id.in_(ids), Host.status == "active")
            .where(Host.heartbeat_at >= now - self._dead_after)
            .order_by(Host.id)
        )
        async with self._db.engine.connect() as conn:  # Core: no ORM session per decision
            free = {host_id: int(mib) for host_id, mib in await conn.execute(query)}
            used = await _committed(conn, list(free), now)
            best = self._best(free, ids, used, want, _Seen())
            if best is None:
                await conn.rollback()
                return free, used, None
            await conn.execute(insert(PlacementHold).values(
                id=hold_id, host_id=best.id, mem_mib=want.mem_mib, vcpu=want.vcpu,
                expires_at=now + timedelta(seconds=HOLD_S)))  # fmt: skip
            await conn.commit()
        return free, used, best

    def _best(
        self, free: dict[str, int], ids: dict[str, _Candidate],
        used: dict[str, tuple[int, int]], want: PlacementRequest, seen: _Seen,
    ) -> _Candidate | None:  # fmt: skip
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
            load += 0 if _holds(host, want) else 1  # after every host that has the image
            if best is None or load < best[0]:
                best = (load, host)
        return best[1] if best is not None else None

    async def release(self, placed: Placed) -> None:
        """Drop the hold once the create ended (its sandbox now counts, or it failed)."""
        drop = delete(PlacementHold).where(PlacementHold.id == placed.hold_id)
        if self._locking:
            await self._oneshot.rows(drop)
            return
        async with self._db.engine.begin() as conn:
            await conn.execute(drop)


_DECODE_INLINE = 64  # up to this many changed rows are decoded without a thread


def _candidates_of(
    rows: list[tuple[Any, ...]], kept: dict[tuple[Any, ...], _Candidate]
) -> dict[tuple[Any, ...], _Candidate]:
    """Each row's candidate: the one decoded from the same row before, else decoded now."""

    def listed(text: str | None) -> list[str]:
        return list(json.loads(text)) if text else []

    out: dict[tuple[Any, ...], _Candidate] = {}
    for row in rows:
        known = kept.get(row)
        if known is None:
            hid, address, labels, rootfses, templates, runtimes, capacity, total, cpus, status = row
            known = _Candidate(
                id=hid, address=address, labels=dict(json.loads(labels)) if labels else {},
                images=frozenset(listed(rootfses) + listed(templates)),
                runtimes=frozenset(listed(runtimes)), capacity_mib=capacity or total,
                cpus=cpus, active=status == "active",
            )  # fmt: skip
        out[row] = known
    return out


@dataclass(frozen=True)
class _Pick:
    hosts: list[_Candidate]
    """Active hosts (the one ``host_id`` names, if any)."""
    holding: list[_Candidate]
    lacking: list[_Candidate]
    holders: tuple[str, ...]
    """Every live host that holds the image (active or draining): where to fetch it."""

    @property
    def count(self) -> int:
        return len(self.holding) + len(self.lacking)


class _Directory:
    """The hosts as last read, and the candidates of each kind of request among them
    (kept until the next read: a burst of creates of one shape filters the hosts once)."""

    def __init__(self, hosts: list[_Candidate]) -> None:
        self.hosts = hosts
        self.active = [h for h in hosts if h.active]
        self.by_id = {h.id: h for h in self.active}
        self._picks: dict[tuple[object, ...], _Pick] = {}

    def candidates(self, want: PlacementRequest) -> _Pick:
        key = (want.host_id, want.image, want.runtime, tuple(sorted(want.node_selector.items())))
        pick = self._picks.get(key)
        if pick is None:
            if want.host_id:
                one = self.by_id.get(want.host_id)
                hosts = [one] if one is not None else []
            else:
                hosts = self.active
            holders = tuple(sorted(h.id for h in self.hosts if _holds(h, want)))
            suited = [h for h in hosts if _suits(h, want)] if holders else []
            holding = [h for h in suited if _holds(h, want)]
            lacking = [h for h in suited if not _holds(h, want)]
            pick = _Pick(hosts=hosts, holding=holding, lacking=lacking, holders=holders)
            if len(self._picks) >= 1024:
                self._picks.clear()
            self._picks[key] = pick
        return pick


def _drawn(rng: random.Random, *parts: list[_Candidate]) -> Iterator[_Candidate]:
    """Each part's hosts in random order, one part after the other, drawn as needed (a
    partial Fisher-Yates shuffle: three draws cost three steps, whatever the part's size)."""
    for part in parts:
        pool = list(part)
        for i in range(len(pool)):
            j = rng.randrange(i, len(pool))
            pool[i], pool[j] = pool[j], pool[i]
            yield pool[i]


def _chunks(items: Iterator[_Candidate], size: int) -> Iterator[list[_Candidate]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


@dataclass
class _Seen:
    """What a placement found on its way: why hosts did not fit, which were locked by
    another placement, which were no longer active."""

    holders: tuple[str, ...] = ()
    tight: list[str] = field(default_factory=list)
    busy: list[_Candidate] = field(default_factory=list)
    gone: list[_Candidate] = field(default_factory=list)


def _suits(host: _Candidate, want: PlacementRequest) -> bool:
    return all(host.labels.get(k) == v for k, v in want.node_selector.items()) and (
        not want.runtime or want.runtime in host.runtimes
    )


def _holds(host: _Candidate, want: PlacementRequest) -> bool:
    return not want.image or want.image in host.images


def _why_none(hosts: list[_Candidate], candidates: int, want: PlacementRequest, seen: _Seen) -> str:
    if want.host_id and not hosts:
        return f"host {want.host_id!r} is not an active host (see GET /v1/hosts)"
    if not hosts or (not seen.tight and seen.gone):
        return "no host is active (every host is draining, dead or gone; see GET /v1/hosts)"
    if not candidates:
        wanted = []
        if want.node_selector:
            pairs = ", ".join(f"{k}={v}" for k, v in sorted(want.node_selector.items()))
            wanted.append(f"labels {pairs}")
        if want.image and not seen.holders:
            wanted.append(f"the image {want.image!r}")
        if want.runtime:
            wanted.append(f"the runtime {want.runtime!r}")
        return f"no active host has {' and '.join(wanted)}"
    tight = "; ".join(sorted(seen.tight)[:5])
    if any("vCPU" in t for t in seen.tight) and not any("MiB" in t for t in seen.tight):
        return f"no host has {want.vcpu} vCPU free ({tight})"
    return f"no host has {want.mem_mib} MiB free ({tight})"


async def _committed(
    conn: AsyncConnection, hosts: list[str], now: datetime
) -> dict[str, tuple[int, int]]:
    """``{host: (MiB, vCPU)}`` held by live sandboxes and unexpired holds (one statement:
    both sums, over the index on the sandboxes' host and status)."""
    if not hosts:
        return {}
    used: dict[str, tuple[int, int]] = {}
    live = (
        select(SandboxRecord.host_id, func.sum(SandboxRecord.mem_mib), func.sum(SandboxRecord.vcpu))
        .where(SandboxRecord.host_id.in_(hosts), SandboxRecord.status.in_(LIVE_STATUSES))
        .group_by(SandboxRecord.host_id)
    )
    holds = (
        select(PlacementHold.host_id, func.sum(PlacementHold.mem_mib), func.sum(PlacementHold.vcpu))
        .where(PlacementHold.host_id.in_(hosts), PlacementHold.expires_at > now)
        .group_by(PlacementHold.host_id)
    )
    result: Any = await conn.execute(union_all(live, holds))
    for host_id, mem, vcpu in result:
        old = used.get(host_id, (0, 0))
        used[host_id] = (old[0] + int(mem or 0), old[1] + int(vcpu or 0))
    return used
