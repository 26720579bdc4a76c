"""Sandbox recovery and monitoring: make the store and the host agree after a start, mark
sandboxes whose init died, auto-pause idle ones and destroy those whose timeout ran out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time

from hutch.cluster.membership import HOST_LOST_PREFIX
from hutch.core.errors import HutchError
from hutch.core.sandbox_lifecycle import SandboxLifecycle
from hutch.core.sandbox_status import SandboxStatus as S
from hutch.core.snapshot_store import SnapshotStoreError
from hutch.host.drivers.base import RuntimeState
from hutch.store import sandboxes as store
from hutch.store.models import Host, SandboxRecord, utcnow

__all__ = ["SandboxRecovery"]

log = logging.getLogger(__name__)

_RESTARTED_IN_CREATE = "the host agent restarted while the sandbox was being created"
_RESTARTED_IN_FORK = "the host agent restarted while the fork was being made"
_DIED_WHILE_DOWN = "the sandbox stopped while the host agent was down"
_BUILD_ENDED = "its template build ended when the server stopped"


class SandboxRecovery(SandboxLifecycle):
    """Recovery at a start, and the monitor that runs while the control plane does."""

    async def recover(self) -> list[str]:
        """Make the store and the host agree after a start; return what was cleaned up.

        Sandboxes that still run are adopted; those whose processes died are ``error``;
        creates and destroys that a crash interrupted are finished as ``failed`` and
        ``destroyed``; template builds' sandboxes are destroyed (no build outlives the
        server that ran it, and their owners cannot see them to delete them); anything on
        the host that the store does not know is removed.
        """
        driver = self._host.driver
        async with self._db.sessions() as session:
            records = list(await store.live_on_host(session, self._host.host_id))
        runtimes = {info.id: info for info in await driver.list_sandboxes()}
        keep: set[str] = set()
        for record in records:
            if record.build_of is not None:
                await self._disks.unmount_all(record.id)
                await driver.destroy(record.id)
                await self._networks.leave_all(record.id)
                await self._update(
                    record.id, status=S.DESTROYED, destroyed_at=utcnow(), reason=_BUILD_ENDED
                )
                continue
            runtime = runtimes.get(record.id)
            alive = runtime is not None and runtime.state != RuntimeState.STOPPED
            if record.status in (S.PAUSING, S.RESUMING, S.PAUSED) or record.hibernated:
                if await self._recover_hibernation(record, alive):
                    keep.add(record.id)
                    continue
                runtime = (await driver.get(record.id)) or runtime
                alive = runtime is not None and runtime.state != RuntimeState.STOPPED
            if record.status in (S.CREATING, S.DESTROYING, S.FORKING):
                # Finished as the interrupted step would have: off the host, out of its
                # networks and disks (a member left behind would pin its network forever).
                await self._disks.unmount_all(record.id)
                await driver.destroy(record.id)
                await self._networks.leave_all(record.id)
                if record.status == S.CREATING:
                    await self._update(record.id, status=S.FAILED, reason=_RESTARTED_IN_CREATE)
                elif record.status == S.FORKING:
                    await self._update(record.id, status=S.FAILED, reason=_RESTARTED_IN_FORK)
                else:
                    await self._update(record.id, status=S.DESTROYED, destroyed_at=utcnow())
            elif alive and (record.status != S.ERROR or _host_lost(record)):
                assert runtime is not None
                if record.ip is None or self._host.links.reserve(record.id, record.ip) is None:
                    await self._fail_and_clean(record.id, "its network address was lost")
                    continue
                keep.add(record.id)
                actual = S.PAUSED if runtime.state == RuntimeState.PAUSED else S.RUNNING
                if _host_lost(record):  # its host came back with it (hutch.cluster)
                    await self._update(record.id, status=actual, reason=None)
                elif actual != record.status:
                    await self._update(record.id, status=actual)
            else:
                # Died (or was in error) while we were down: kept, to be resumed from its
                # disk, if its address is still its own; else nothing of it can come back.
                if record.ip is None or self._host.links.reserve(record.id, record.ip) is None:
                    await self._fail_and_clean(record.id, "its network address was lost")
                    continue
                keep.add(record.id)
                if record.status != S.ERROR or _host_lost(record):
                    await self._update(record.id, status=S.ERROR, reason=_DIED_WHILE_DOWN)
        removed = await driver.cleanup(keep)
        if removed:
            log.info("recovery removed leftovers of %d sandboxes: %s", len(removed), removed)
        self._scheduler_ok_at = time.monotonic()
        return removed

    async def _host_returned(self, record: SandboxRecord, state: RuntimeState) -> None:
        """The control plane marked the sandbox ``error`` while this host was silent
        (:func:`hutch.cluster.membership.host_lost_reason`); the host is back, and so is
        the sandbox if it still runs here."""
        async with self._db.sessions() as session:
            host = await session.get(Host, self._host.host_id)
        if host is not None and host.status == "dead":
            return  # not back yet: its heartbeats do not reach the control plane
        lock = self._sandbox_locks[record.id]
        if lock.locked():
            return
        async with lock:
            current = await self._load(record.id)
            if not _host_lost(current):
                return
            if state == RuntimeState.STOPPED:
                await self._update(record.id, reason=_DIED_WHILE_DOWN)
                return
            actual = S.PAUSED if state == RuntimeState.PAUSED else S.RUNNING
            updated = await self._update(record.id, status=actual, reason=None)
            log.info("%s is %s again: its host is back", record.id, actual)
            if actual == S.RUNNING:
                await self._changed(updated)

    async def _recover_hibernation(self, record: SandboxRecord, alive: bool) -> bool:
        """A sandbox caught pausing, resuming or hibernated by a restart. With a complete
        snapshot and nothing running it is ``paused`` (hibernated): True. Otherwise a cut
        hibernate or wake is undone (a partial snapshot is never used) and the usual
        recovery takes it from there: False."""
        snapshot = self._snapshot(record.id)
        alive = await self._host.driver.recover_snapshot(record.id, snapshot)
        complete = await asyncio.to_thread((snapshot / "checkpoint.img").exists)
        if not complete and record.hibernated and not alive:
            with contextlib.suppress(SnapshotStoreError):
                complete = await self._snapshots.has(record.id)
        if alive or not complete:
            if record.hibernated:
                await self._update(record.id, hibernated=False)
            if alive and complete:
                await asyncio.to_thread(shutil.rmtree, snapshot, True)
            return False
        if record.ip is None or self._host.links.reserve(record.id, record.ip) is None:
            await self._fail_and_clean(record.id, "its network address was lost")
            return False
        if record.status != S.PAUSED or not record.hibernated:
            await self._update(record.id, status=S.PAUSED, hibernated=True,
                               paused_at=record.paused_at or utcnow())  # fmt: skip
        return True

    async def monitor_forever(self) -> None:
        """Mark sandboxes whose init died as ``error``, and auto-pause idle ones."""
        while True:
            await asyncio.sleep(self._settings.monitor_interval_s)
            try:
                await self.check_once()
                self._scheduler_ok_at = time.monotonic()
            except Exception:
                log.warning("sandbox monitor pass failed; will retry", exc_info=True)

    async def check_once(self) -> None:
        async with self._db.sessions() as session:
            records = list(await store.live_on_host(session, self._host.host_id))
        # A sandbox in error keeps its disk (to be resumed), so its timeout still counts.
        watched = [r for r in records if r.status in (S.RUNNING, S.PAUSED, S.ERROR)]
        if not watched:
            return
        runtimes = {info.id: info for info in await self._host.driver.list_sandboxes()}
        now = time.monotonic()
        for record in watched:
            if record.expires_at is not None and record.expires_at <= utcnow():
                lock = self._sandbox_locks[record.id]
                if not lock.locked():
                    async with lock:
                        with contextlib.suppress(HutchError):
                            await self._destroy(record.id)
                            log.info("destroyed %s: its timeout ran out", record.id)
                continue
            runtime = runtimes.get(record.id)
            if _host_lost(record) and runtime is not None:
                await self._host_returned(record, runtime.state)
                continue
            if record.status == S.ERROR or record.hibernated:
                continue  # (a hibernated sandbox runs nothing, as it should)
            if runtime is None or runtime.state == RuntimeState.STOPPED:
                lock = self._sandbox_locks[record.id]
                if lock.locked():
                    continue
                async with lock:
                    current = await self._load(record.id)
                    if current.status in (S.RUNNING, S.PAUSED):
                        await self._fail_and_keep(
                            record.id,
                            "the sandbox's init process exited (killed, or out of memory); "
                            "resume it to start it again from its disk",
                        )
                continue
            limit = record.auto_pause_after_seconds
            if record.status == S.RUNNING and limit:
                last = self._activity.get(record.id)
                if last is None:
                    since = record.last_resumed_at or record.running_at or record.created_at
                    last = now - (utcnow() - since).total_seconds()
                    self._activity[record.id] = last
                if now - last >= limit and self.activity_elsewhere is not None:
                    # Idle here; a control worker may have run an exec meanwhile.
                    seen = self.activity_elsewhere.last(record.id)
                    if seen is not None and seen > last:
                        self._activity[record.id] = last = seen
                if now - last >= limit:
                    lock = self._sandbox_locks[record.id]
                    if not lock.locked():
                        async with lock:
                            try:
                                await self._pause(record.id)
                                log.info("auto-paused %s after %ss idle", record.id, limit)
                            except HutchError as exc:
                                # Not paused (a gvisor checkpoint that failed leaves it
                                # running): tried again after another idle period, not
                                # at every look.
                                self._activity[record.id] = now
                                log.warning("auto-pause of %s failed: %s", record.id, exc)


def _host_lost(record: SandboxRecord) -> bool:
    """In ``error`` because the control plane lost its host (not because of the sandbox)."""
    return record.status == S.ERROR and (record.reason or "").startswith(HOST_LOST_PREFIX)
