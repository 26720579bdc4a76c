"""The shared core of the sandbox service: its state, listeners and store helpers.

The service is put together from this base and one part per concern
(:mod:`hutch.core.sandbox_lifecycle`, :mod:`hutch.core.sandbox_exec`,
:mod:`hutch.core.sandbox_recovery`); :class:`hutch.core.sandboxes.SandboxService` is the whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hutch.core.disks import DiskService
from hutch.core.errors import Conflict, NotFound, RateLimited, Unavailable
from hutch.core.identity import Principal
from hutch.core.ids import new_id
from hutch.core.names import generate_name
from hutch.core.networks import NetworkService
from hutch.core.sandbox_status import SandboxStatus as S
from hutch.core.snapshot_store import snapshot_store
from hutch.host.agent import HostAgent
from hutch.host.drivers.base import DriverError, SandboxMissing
from hutch.host.drivers.gvisor import HibernateFailed
from hutch.settings import Settings
from hutch.store import sandboxes as store
from hutch.store.cache import ReadCache
from hutch.store.db import Database
from hutch.store.models import Host, SandboxRecord, utcnow

__all__ = ["COUNTED", "MOVED_HEADER", "SandboxBase"]

MOVED_HEADER = "X-Hutch-Lives-On"
"""On the 503 that refuses a request about a sandbox another host took: that host's id."""

log = logging.getLogger(__name__)

# Statuses that count toward the per-user cap: the sandbox holds CPU and memory. A fork's
# child counts from its insert (``forking``): it starts running at the fork's end, with no
# check of its own, so creates, resumes and forks made meanwhile must see it.
COUNTED = (S.CREATING, S.FORKING, S.RUNNING, S.RESUMING, S.PAUSING)


class ActivityElsewhere(Protocol):
    """Activity in sandboxes seen by other processes of this host
    (:class:`hutch.roles.activity.ActivityFiles`)."""

    def last(self, sandbox_id: str) -> float | None:
        """The latest, on ``time.monotonic()``'s clock; None if none was seen."""

    def forget(self, sandbox_id: str) -> None: ...


class SandboxBase:
    """The state every part of :class:`~hutch.core.sandboxes.SandboxService` shares: the
    store, the host agent, the locks, the listeners, and the store helpers."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        host: HostAgent,
        networks: NetworkService,
        disks: DiskService,
    ) -> None:
        self._settings = settings
        self._db = db
        self._host = host
        self._networks = networks
        self._disks = disks
        self._shapes = {shape.id: shape for shape in settings.shapes}
        self._snapshots = snapshot_store(settings)
        self._sandbox_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._activity: dict[str, float] = {}
        # Activity other processes of this host saw (a control worker's execs); read by
        # the monitor before it pauses a sandbox for being idle.
        self.activity_elsewhere: ActivityElsewhere | None = None
        self._later: set[asyncio.Task[None]] = set()  # hibernates deferred (gvisor)
        # When the monitor (the scheduler of auto-pause, expiry and error detection) last
        # finished a pass, or recovery did; None before either.
        self._scheduler_ok_at: float | None = None
        self._stop_listeners: list[Callable[[str], Awaitable[None]]] = []
        self._running_listeners: list[Callable[[SandboxRecord], Awaitable[None]]] = []
        self._creating_listeners: list[Callable[[SandboxRecord], Awaitable[None]]] = []
        # (user id, id or name) -> record, for the exec and file paths.
        self._running_records: ReadCache[tuple[str, str], SandboxRecord] = ReadCache(db)
        # (user id, template id or name) -> the image id a create uses, or NotFound; set
        # by the template service (hutch.core.templates).
        self.template_images: Callable[[str, str], Awaitable[str]] | None = None

    def _touch(self, sandbox_id: str) -> None:
        """Note activity in a sandbox now (exec and files; auto-pause counts from it)."""
        self._activity[sandbox_id] = time.monotonic()

    def scheduler_last_ok_s_ago(self) -> float | None:
        """Seconds since the monitor (or, at start, recovery) last finished a pass."""
        if self._scheduler_ok_at is None:
            return None
        return time.monotonic() - self._scheduler_ok_at

    def on_running(self, listener: Callable[[SandboxRecord], Awaitable[None]]) -> None:
        """Call ``listener(record)`` when a sandbox starts or resumes, when it is changed,
        and for every running sandbox at a start."""
        self._running_listeners.append(listener)

    async def _changed(self, record: SandboxRecord) -> SandboxRecord:
        for listener in self._running_listeners:
            try:
                await listener(record)
            except Exception:
                log.warning("a running listener failed for %s", record.id, exc_info=True)
        return record

    async def announce_running(self) -> None:
        """Tell the running listeners about every sandbox running here (after a start)."""
        async with self._db.sessions() as session:
            records = await store.live_on_host(session, self._host.host_id)
        for record in records:
            if record.status == S.RUNNING:
                await self._changed(record)

    def on_creating(self, listener: Callable[[SandboxRecord], Awaitable[None]]) -> None:
        """Call ``listener(record)`` while a new sandbox is being started, beside the
        driver (so it adds no time to a create); if the start fails, the stop listeners
        are called. (The egress policy is installed this way, before the first packet.)"""
        self._creating_listeners.append(listener)

    async def _creating(self, record: SandboxRecord) -> None:
        for listener in self._creating_listeners:
            try:
                await listener(record)
            except Exception:
                log.warning("a creating listener failed for %s", record.id, exc_info=True)

    def on_stop(self, listener: Callable[[str], Awaitable[None]]) -> None:
        """Call ``listener(sandbox_id)`` whenever a sandbox pauses, fails or is destroyed."""
        self._stop_listeners.append(listener)

    async def _stopped(self, sandbox_id: str) -> None:
        for listener in self._stop_listeners:
            try:
                await listener(sandbox_id)
            except Exception:
                log.warning("a stop listener failed for %s", sandbox_id, exc_info=True)

    async def _auto_resume(self, user: Principal, record: SandboxRecord) -> SandboxRecord | None:
        """Overridden by the lifecycle: resume a paused sandbox that asked for it."""
        return None

    async def _not_hibernated(self, sandbox_id: str, exc: HibernateFailed) -> Unavailable:
        """Overridden by :mod:`~hutch.core.sandbox_wake`: the sandbox's state after a
        checkpoint that failed, and the pause's answer."""
        raise NotImplementedError

    def _hibernate_later(self, sandbox_id: str, delay_s: float, attempt: int = 1) -> None:
        """Overridden by :mod:`~hutch.core.sandbox_wake`: hibernate a sandbox paused in
        memory once what stopped it has gone."""

    # -- reading ------------------------------------------------------------------------

    async def get(self, user: Principal, ident: str, *, builds: bool = False) -> SandboxRecord:
        """The user's sandbox by id or name; another user's is :class:`NotFound`, as is a
        missing one, and a template build's sandbox unless ``builds`` (the platform's own
        use: the owner never sees those)."""
        async with self._db.sessions() as session:
            record = await store.find_for_user(session, user.user_id, ident, builds=builds)
        if record is None:
            raise NotFound(f"no sandbox {ident!r}", field="sandbox")
        return record

    def _over_cap(self) -> RateLimited:
        cap = self._settings.max_running_per_user
        return RateLimited(f"you have {cap} running sandboxes, the most allowed; "
                           "pause or delete one first", headers={"Retry-After": "5"})  # fmt: skip

    async def _insert_new(self, record: SandboxRecord, *, capped: bool, named: bool) -> None:
        """Write a new sandbox's record: within its user's running cap if ``capped``
        (:class:`RateLimited` otherwise), checked by the insert itself, so that creates at
        once (from any process) never pass it and wait for no lock of ours. A live name the
        user already has: :class:`Conflict` if they gave it (``named``), else another
        generated name is tried; any other constraint the row fails raises its
        ``IntegrityError`` at once."""
        cap = self._settings.max_running_per_user if capped else None
        for attempt in range(50):
            try:
                inserted = await self._db.write(
                    lambda session: store.insert_within_cap(
                        session, record, counted=COUNTED, cap=cap
                    )
                )
            except IntegrityError as exc:
                if not store.is_live_name_clash(exc):
                    raise  # another constraint (a taken id, a user gone): no name helps
                if named:
                    raise Conflict(f"you already have a sandbox named {record.name!r}",
                                   field="name") from None  # fmt: skip
                record.name = generate_name()
                if attempt >= 20:
                    record.name = f"{record.name}-{new_id('')[-4:].lower()}"
                continue
            if not inserted:
                raise self._over_cap()
            return
        raise Unavailable("could not find a free name; give one with 'name'")

    async def _resuming_within_cap(self, record: SandboxRecord) -> None:
        """Mark a paused sandbox ``resuming``, within its user's running cap (checked by
        the update itself, as :meth:`_insert_new`'s insert)."""
        cap = self._settings.max_running_per_user
        moved = await self._db.write(
            lambda session: store.set_status_within_cap(
                session, record.id, record.user_id, S.RESUMING, counted=COUNTED, cap=cap
            )
        )
        if not moved:
            raise self._over_cap()

    async def _driver_step(
        self, sandbox_id: str, done: str, step: Callable[[str], Awaitable[None]]
    ) -> None:
        """Run a driver step; if it fails, the sandbox is ``error`` with the reason (503)."""
        try:
            await step(sandbox_id)
        except DriverError as exc:
            await self._update(sandbox_id, status=S.ERROR, reason=str(exc))
            raise Unavailable(f"the sandbox could not be {done}: {exc}") from exc

    async def _fail_and_clean(self, sandbox_id: str, reason: str) -> None:
        """``error``, and nothing of it left on the host (it cannot come back)."""
        await self._update(sandbox_id, status=S.ERROR, reason=reason)
        await self._stopped(sandbox_id)
        with contextlib.suppress(DriverError, SandboxMissing):
            await self._host.driver.destroy(sandbox_id)
        self._forget(sandbox_id)

    async def _fail_and_keep(self, sandbox_id: str, reason: str) -> None:
        """``error``, its disk, address and networks kept, so that a resume can start it
        again from its disk (its processes are gone)."""
        await self._update(sandbox_id, status=S.ERROR, reason=reason)
        await self._stopped(sandbox_id)
        self._activity.pop(sandbox_id, None)

    def _forget(self, sandbox_id: str) -> None:
        self._host.links.release(sandbox_id)
        self._activity.pop(sandbox_id, None)
        if self.activity_elsewhere is not None:
            self.activity_elsewhere.forget(sandbox_id)
        self._sandbox_locks.pop(sandbox_id, None)

    # -- store helpers ------------------------------------------------------------------

    async def lives_elsewhere(self, sandbox_id: str | None) -> bool:
        """Whether the sandbox is another host's (in a cluster): its background work
        (builds, deploys) is that host's agent's, never this one's."""
        if not sandbox_id or not self._settings.control_url:
            return False  # one machine: every sandbox is this agent's
        async with self._db.sessions() as session:
            record = await session.get(SandboxRecord, sandbox_id)
        return record is not None and record.host_id not in (None, self._host.host_id)

    def _elsewhere(self, record: SandboxRecord) -> bool:
        """Whether the row is another host's now (a drain moved it meanwhile:
        :mod:`hutch.cluster.drain`): this host must not resume or wake it."""
        return record.host_id not in (None, self._host.host_id)

    async def _refuse_if_moved(self, record: SandboxRecord) -> None:
        """:class:`Unavailable` (retry) when the row is another live host's now: a drain
        moved it while this request waited on the sandbox's lock, and acting here would
        touch the copy this host let go of, never the one that runs (the client's retry
        is routed to that host). A row of a host that left (removed or silent past
        ``HUTCH_HOST_DEAD_AFTER_S``) stays anyone's to act on: any agent destroys such a
        sandbox (:mod:`hutch.cluster.routing`)."""
        if not self._elsewhere(record):
            return
        async with self._db.sessions() as session:
            host = await session.get(Host, record.host_id)
        fresh = utcnow() - timedelta(seconds=self._settings.host_dead_after_s)
        if host is None or host.status == "dead" or host.heartbeat_at < fresh:
            return
        raise self._moved_away(record)

    @staticmethod
    def _moved_away(record: SandboxRecord) -> Unavailable:
        """The refusal of a request about a sandbox another host took: retry, and (for a
        control plane that routed it here from what it kept) where it lives now
        (:mod:`hutch.cluster.residence` turns it into a ``421``)."""
        return Unavailable(f"sandbox {record.name} now lives on host {record.host_id}; "
                           "try again", headers={"Retry-After": "1",
                                                 MOVED_HEADER: str(record.host_id)})  # fmt: skip

    async def _load(self, sandbox_id: str) -> SandboxRecord:
        async with self._db.sessions() as session:
            record = await session.get(SandboxRecord, sandbox_id)
        if record is None:
            raise NotFound(f"no sandbox {sandbox_id!r}", field="sandbox")
        return record

    async def _update(self, sandbox_id: str, **changes: Any) -> SandboxRecord:
        def change(session: Session) -> SandboxRecord:
            record = session.get(SandboxRecord, sandbox_id)
            if record is None:
                raise NotFound(f"no sandbox {sandbox_id!r}", field="sandbox")
            for key, value in changes.items():
                setattr(record, key, value)
            return record

        return await self._db.write(change)
