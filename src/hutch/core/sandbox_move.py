"""Moving a hibernated gVisor sandbox from one host to another (a cluster's drain,
:mod:`hutch.cluster.drain`), as operations of the sandbox service: the cluster's code
carries the bytes and chooses the host, the service keeps its own state.

- :meth:`SandboxMoves.moving_out` (the host it leaves): under the sandbox's lock, the
  sandbox if it can move now (paused, hibernated, gVisor, this host's, in no private
  network). :meth:`Outgoing.ready` puts its snapshot in the store and gives its disk file
  once it is settled. When the block ends, the row says where the sandbox lives: if
  another host took it (even when that host's answer was lost), what is left of it here
  goes; otherwise nothing here changed.
- :meth:`SandboxMoves.moving_in` (the host it arrives at): under its lock, an address of
  this host's pool and an empty directory; the caller puts the disk file in it; then the
  rest is made here from the record (:func:`hutch.host.drivers.gvisor_adopt.take_in`)
  and the row becomes this host's, still paused and hibernated: a resume fetches the
  snapshot and restores it. A failure leaves nothing here, and the row as it was.
- :meth:`SandboxMoves.let_go_of_moved`: what is left here of sandboxes whose row another
  host holds (a move whose end was not seen here).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from hutch.core.errors import Conflict, Unavailable
from hutch.core.sandbox_lifecycle import SandboxLifecycle
from hutch.core.sandbox_status import SandboxStatus as S
from hutch.core.snapshot_store import S3SnapshotStore
from hutch.host.addresses import PoolExhausted
from hutch.host.drivers.base import DriverError
from hutch.host.drivers.gvisor import GvisorDriver
from hutch.host.drivers.gvisor_adopt import disk_file, leaving_disk, take_in
from hutch.store.models import NetworkMember, SandboxRecord

__all__ = ["Incoming", "Outgoing", "SandboxMoves"]


@dataclass
class Outgoing:
    """A sandbox leaving this host; ``ready()`` gives its disk file to send."""

    record: SandboxRecord
    ready: Callable[[], Awaitable[Path]]
    moved: bool = False
    """Set when the block ends: whether another host holds it now."""


@dataclass
class Incoming:
    """A sandbox arriving: its disk file goes at ``disk``; ``record`` is the row, this
    host's once the block ends without an error."""

    record: SandboxRecord
    disk: Path


class SandboxMoves(SandboxLifecycle):
    @property
    def host_id(self) -> str:
        """This host's id (in a cluster, as it joined)."""
        return self._host.host_id

    def draining(self) -> bool:
        """Whether this host is a cluster's and draining (its sandboxes should leave)."""
        joiner = self._host.joiner
        return joiner is not None and joiner.status == "draining"

    @property
    def s3_snapshots(self) -> S3SnapshotStore | None:
        """The S3 snapshot store, when this host keeps snapshots there (what a move needs)."""
        store = self._snapshots
        return store if isinstance(store, S3SnapshotStore) else None

    async def movable_here(self) -> list[str]:
        """This host's hibernated gVisor sandboxes (candidates to move)."""
        async with self._db.sessions() as session:
            return list(await session.scalars(
                select(SandboxRecord.id).where(
                    SandboxRecord.host_id == self._host.host_id,
                    SandboxRecord.status == S.PAUSED, SandboxRecord.hibernated.is_(True),
                    SandboxRecord.runtime == "gvisor",
                )
            ))  # fmt: skip

    def _gvisor(self) -> GvisorDriver:
        runtimes = self._host.runtimes
        if runtimes is None:
            raise Conflict("this host cannot run gvisor sandboxes (HUTCH_DRIVER is not runc)")
        try:
            driver = runtimes.for_runtime("gvisor")
        except DriverError as exc:
            raise Conflict(f"this host cannot run gvisor sandboxes: {exc}") from exc
        if not isinstance(driver, GvisorDriver):
            raise Conflict("this host cannot run gvisor sandboxes")
        return driver

    def _hibernated_of(self, record: SandboxRecord, host_id: str) -> bool:
        return (record.host_id == host_id and record.status == S.PAUSED
                and record.hibernated and record.runtime == "gvisor")  # fmt: skip

    @contextlib.asynccontextmanager
    async def moving_out(self, sandbox_id: str) -> AsyncIterator[Outgoing | None]:
        """The sandbox, if it can leave this host now (None if it changed meanwhile);
        Conflict if it cannot leave at all (a member of a private network)."""
        store = self.s3_snapshots
        async with self._sandbox_locks[sandbox_id]:
            record = await self._load(sandbox_id)
            if store is None or not self._hibernated_of(record, self._host.host_id):
                yield None
                return
            async with self._db.sessions() as session:
                member = await session.scalar(
                    select(NetworkMember.sandbox_id).where(NetworkMember.sandbox_id == sandbox_id)
                )
            if member is not None:
                raise Conflict("it is a member of a private network (not moved across hosts)")
            driver = self._gvisor()

            async def ready() -> Path:
                if not await store.has(sandbox_id):
                    await store.put(sandbox_id, self._snapshot(sandbox_id))
                return await leaving_disk(driver, sandbox_id)

            out = Outgoing(record=record, ready=ready)
            try:
                yield out
            finally:
                # The row says where it lives (also when the other host's answer was lost).
                now = await self._load(sandbox_id)
                if self._elsewhere(now):
                    out.moved = True
                    await self._let_go(sandbox_id)

    async def _let_go(self, sandbox_id: str) -> None:
        """What is left here of a sandbox another host holds now (lock held)."""
        await self._stopped(sandbox_id)
        await self._host.driver.destroy(sandbox_id)
        self._host.links.release(sandbox_id)
        self._activity.pop(sandbox_id, None)
        await asyncio.to_thread(shutil.rmtree, self._snapshot(sandbox_id), True)

    async def let_go_of_moved(self) -> list[str]:
        """Remove what is left here of sandboxes whose row is another host's (a move whose
        end this host did not see: the other host's answer was lost); return their ids."""
        directory = self._gvisor_directory()
        if directory is None:
            return []
        names = await asyncio.to_thread(
            lambda: [p.name for p in directory.iterdir() if not p.name.startswith(".")]
        )
        elsewhere: list[str] = []
        async with self._db.sessions() as session:  # one read per 500 directories
            for at in range(0, len(names), 500):
                elsewhere += await session.scalars(
                    select(SandboxRecord.id).where(
                        SandboxRecord.id.in_(names[at : at + 500]),
                        SandboxRecord.host_id.is_not(None),
                        SandboxRecord.host_id != self._host.host_id,
                    )
                )
        released = []
        for sandbox_id in elsewhere:
            async with self._sandbox_locks[sandbox_id]:
                record = await self._load(sandbox_id)
                left = await asyncio.to_thread((directory / sandbox_id).exists)
                if self._elsewhere(record) and left:
                    await self._let_go(sandbox_id)
                    released.append(sandbox_id)
        return released

    def _gvisor_directory(self) -> Path | None:
        try:
            return self._gvisor().sandboxes
        except Conflict:
            return None

    @contextlib.asynccontextmanager
    async def moving_in(self, sandbox_id: str, from_host: str) -> AsyncIterator[Incoming]:
        """Take in a hibernated sandbox of ``from_host``: see the module's docstring."""
        if self.s3_snapshots is None:
            raise Conflict("this host has no S3 snapshot store (HUTCH_SNAPSHOT_STORE)")
        driver = self._gvisor()
        async with self._sandbox_locks[sandbox_id]:
            record = await self._load(sandbox_id)
            if not self._hibernated_of(record, from_host):
                raise Conflict(f"sandbox {sandbox_id} is not a hibernated sandbox of {from_host}")
            disk = disk_file(driver, sandbox_id)
            directory = disk.parent
            try:
                await asyncio.to_thread(directory.mkdir, parents=True)
            except FileExistsError:
                raise Conflict(
                    f"sandbox {sandbox_id} already has a directory on this host"
                ) from None
            incoming = Incoming(record=record, disk=disk)
            try:
                try:
                    link = self._host.links.allocate(sandbox_id)
                except PoolExhausted:
                    raise Unavailable("this host has no free sandbox addresses left") from None
                yield incoming
                try:
                    await take_in(driver, self.spec_of(record, link))
                except DriverError as exc:
                    raise Conflict(f"sandbox {sandbox_id} could not be taken in: {exc}") from exc
                incoming.record = await self._update(
                    sandbox_id, host_id=self._host.host_id, ip=str(link.sandbox)
                )
            except BaseException:
                self._host.links.release(sandbox_id)
                await asyncio.to_thread(shutil.rmtree, directory, True)
                raise
