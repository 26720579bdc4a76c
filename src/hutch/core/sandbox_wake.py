"""Wake on traffic: a paused sandbox with ``auto_resume`` resumed for a request to one of
its preview or ingress URLs (the proxy holds the request meanwhile, :mod:`hutch.core.previews`).
Exec, files and processes wake it through :meth:`SandboxLifecycle._auto_resume` instead.

Also the later hibernate of a gvisor sandbox that a pause could only freeze in memory
(connections in TIME_WAIT, :class:`~hutch.host.drivers.gvisor.CannotHibernate`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hutch.core.errors import Conflict, Unavailable
from hutch.core.identity import Principal
from hutch.core.sandbox_lifecycle import SandboxLifecycle
from hutch.core.sandbox_status import SandboxStatus as S
from hutch.core.snapshot_store import SnapshotStoreError
from hutch.host.drivers.base import DriverError
from hutch.host.drivers.gvisor import CannotHibernate, HibernateFailed
from hutch.store import sandboxes as store
from hutch.store.models import SandboxRecord

__all__ = ["SandboxWake"]

log = logging.getLogger(__name__)


class SandboxWake(SandboxLifecycle):
    async def wakes_on_traffic(self, sandbox_id: str) -> bool:
        """Whether a request to the sandbox's previews is to wake it: it is pausing or
        paused, with ``auto_resume``, and still this host's (one a drain moved away has its
        URLs routed, asleep, by the host that took it)."""
        record = await self._load(sandbox_id)
        if self._elsewhere(record):
            return False
        return bool(record.auto_resume) and record.status in (S.PAUSING, S.PAUSED)

    async def wake_for_traffic(self, sandbox_id: str) -> None:
        """Resume the sandbox for a request to its previews, on its owner's behalf (the
        owner's running cap applies). Raises :class:`Conflict` when it does not wake on
        traffic, and what a resume raises when it cannot be resumed."""
        record = await self._load(sandbox_id)
        if record.status == S.RUNNING:
            return
        if not record.auto_resume:
            raise Conflict(f"sandbox {record.name} is {record.status} and does not wake on "
                           "traffic (auto_resume is off)", field="status")  # fmt: skip
        log.info("waking %s for a preview request (auto_resume)", sandbox_id)
        owner = Principal(user_id=record.user_id, user_name="", is_admin=False, key_id="")
        await self.resume_transition(owner, sandbox_id)

    async def paused_waking(self) -> list[SandboxRecord]:
        """This host's paused sandboxes that wake on traffic (their ingress is routed,
        asleep, at a start)."""
        async with self._db.sessions() as session:
            records = await store.live_on_host(session, self._host.host_id)
        return [r for r in records if r.status == S.PAUSED and r.auto_resume]

    async def _not_hibernated(self, sandbox_id: str, exc: HibernateFailed) -> Unavailable:
        """After a checkpoint that failed: a sandbox that still runs is ``running`` again
        as it was (its egress policy and the like back, as at a resume), else ``error``,
        saying what is left (its files: a resume starts it again from its disk). Returns
        what the pause answers."""
        if exc.running:
            await self._changed(await self._update(sandbox_id, status=S.RUNNING))
            return Unavailable(f"the sandbox could not be hibernated ({exc}); it still runs "
                               "as it was", headers={"Retry-After": "60"})  # fmt: skip
        why = (f"{exc}; runsc stopped the sandbox: its processes are lost, its files are "
               "kept on its disk (resume starts it again from them)")  # fmt: skip
        await self._update(sandbox_id, status=S.ERROR, reason=why)
        return Unavailable(f"the sandbox could not be hibernated: {why}")

    def _hibernate_later(self, sandbox_id: str, delay_s: float, attempt: int = 1) -> None:
        """Hibernate a sandbox paused in memory once what stopped it has gone (connections
        in TIME_WAIT age out); still paused in memory if it cannot be (tried 3 times)."""

        async def later() -> None:
            await asyncio.sleep(delay_s + 1)
            async with self._sandbox_locks[sandbox_id]:
                record = await self._load(sandbox_id)
                if record.status != S.PAUSED or record.hibernated:
                    return
                try:
                    await self._host.driver.hibernate(sandbox_id, self._snapshot(sandbox_id))
                except CannotHibernate as exc:
                    await self._driver_step(sandbox_id, "paused", self._host.driver.pause)
                    if exc.retry_after_s is not None and attempt < 3:
                        self._hibernate_later(sandbox_id, exc.retry_after_s, attempt + 1)
                    await self._update(
                        sandbox_id, reason=f"paused in memory, not hibernated: {exc}"
                    )
                    return
                except HibernateFailed as exc:
                    if not exc.running:  # (ERROR, saying what is left)
                        await self._not_hibernated(sandbox_id, exc)
                        return
                    # Running again (the hibernate thawed it): frozen again, as it was.
                    await self._driver_step(sandbox_id, "paused", self._host.driver.pause)
                    await self._update(
                        sandbox_id, reason=f"paused in memory, not hibernated: {exc}"
                    )
                    return
                except DriverError as exc:
                    await self._update(sandbox_id, status=S.ERROR, reason=str(exc))
                    return
                await self._networks.unplug(sandbox_id)
                with contextlib.suppress(SnapshotStoreError):
                    await self._snapshots.put(sandbox_id, self._snapshot(sandbox_id))
                await self._update(sandbox_id, hibernated=True, reason=None)
                log.info("%s is hibernated (it was paused in memory)", sandbox_id)

        task = asyncio.create_task(later(), name=f"hutch-hibernate-later-{sandbox_id}")
        self._later.add(task)
        task.add_done_callback(self._later.discard)
