"""Fork: a new sandbox from a paused one (CreateOS §4.3).

The child gets its own id, name, address, bandwidth ledger and ``forked_from``; the
overrides in :class:`~hutch.core.sandbox_requests.ForkOptions` replace what it would
inherit. From a hibernated gvisor source the child goes on from the snapshot: the same
processes, memory and files, each copy on its own from then on (``fork_mode``
``processes``). From a runc source (frozen in memory, which cannot be copied) or a gvisor
source paused in memory, the child is a fresh start on a copy of the source's disk
(``files``). The source stays paused and untouched; it cannot be resumed or destroyed
while a fork of it is being made (409). The child joins none of the source's private
networks (its addresses there are the source's) and none of its S3 disks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from hutch.core.egress import parse_rules
from hutch.core.errors import Conflict, InvalidInput, Unavailable
from hutch.core.identity import Principal
from hutch.core.ids import new_id
from hutch.core.names import generate_name
from hutch.core.previews import new_token
from hutch.core.sandbox_lifecycle import SandboxLifecycle
from hutch.core.sandbox_requests import ForkOptions, check_envs
from hutch.core.sandbox_status import SandboxStatus as S
from hutch.core.snapshot_store import SnapshotStoreError
from hutch.core.sshkeys import normalise_keys
from hutch.host.addresses import PoolExhausted
from hutch.host.drivers.base import DriverError
from hutch.store.models import SandboxRecord, utcnow

__all__ = ["SandboxForks"]

log = logging.getLogger(__name__)


class SandboxForks(SandboxLifecycle):
    """Forking paused sandboxes."""

    _forking: Counter[str]

    def forks_in_progress(self, sandbox_id: str) -> int:
        if not hasattr(self, "_forking"):
            self._forking = Counter()
        return self._forking[sandbox_id]

    async def fork(self, user: Principal, ident: str, options: ForkOptions) -> SandboxRecord:
        """Make a child of the user's paused sandbox ``ident`` and return it (``running``,
        or ``paused`` with ``start_paused``). A source that is not paused is a 409 and
        stays as it was; a child that cannot be started is ``failed`` with the reason."""
        source = await self.get(user, ident)
        self._check_fork(options)
        async with self._sandbox_locks[source.id]:
            source = await self._load(source.id)
            await self._refuse_if_moved(source)
            if source.status != S.PAUSED:
                raise Conflict(f"sandbox is {source.status}; only a paused sandbox can be "
                               "forked (pause it first)", field="status")  # fmt: skip
            self.forks_in_progress(source.id)
            self._forking[source.id] += 1
        try:
            return await self._fork(user, source, options)
        finally:
            self._forking[source.id] -= 1
            if self._forking[source.id] <= 0:
                del self._forking[source.id]

    def _check_fork(self, options: ForkOptions) -> None:
        if options.envs is not None:
            check_envs(options.envs)
        if options.egress is not None:
            parse_rules(options.egress, deny=self._settings.deny_set)
        quota = options.bandwidth_quota_bytes
        if quota is not None and quota < -1:
            raise InvalidInput("bandwidth_quota_bytes must be -1 (unmetered) or more",
                               field="bandwidth_quota_bytes")  # fmt: skip

    async def _fork(
        self, user: Principal, source: SandboxRecord, options: ForkOptions
    ) -> SandboxRecord:
        ingress = (
            source.ingress_enabled if options.ingress_enabled is None else options.ingress_enabled
        )
        keys = source.ssh_pubkeys if options.ssh_pubkeys is None else options.ssh_pubkeys
        envs = dict(source.envs if options.envs is None else options.envs)
        child_id = new_id("sb_")
        try:
            link = self._host.links.allocate(child_id)
        except PoolExhausted as exc:
            raise Unavailable("this host has no free sandbox addresses left") from exc
        record = SandboxRecord(
            id=child_id, user_id=user.user_id, name=generate_name(), status=S.FORKING,
            host_id=self._host.host_id, shape=source.shape, rootfs=source.rootfs,
            vcpu=source.vcpu, mem_mib=source.mem_mib, disk_mib=source.disk_mib,
            ip=str(link.sandbox), envs=envs,
            egress=list(source.egress if options.egress is None else options.egress),
            bandwidth_quota_bytes=(
                self._settings.bandwidth_quota_bytes
                if options.bandwidth_quota_bytes is None
                else options.bandwidth_quota_bytes
            ),
            ingress_enabled=ingress, ingress_token=new_token() if ingress else None,
            auto_pause_after_seconds=source.auto_pause_after_seconds,
            auto_resume=source.auto_resume,
            ssh_pubkeys=normalise_keys(keys), region=source.region,
            created_by=user.key_id, forked_from=source.id, runtime=source.runtime,
        )  # fmt: skip
        try:  # the cap is held by the insert itself (see _insert_new)
            await self._insert_new(record, capped=not options.start_paused, named=False)
        except Exception:
            self._host.links.release(child_id)
            raise
        snapshot = self._snapshot(source.id) if source.hibernated else None
        spec = self.spec_of(record, link)
        started = time.monotonic()
        async with self._sandbox_locks[child_id]:
            try:
                if snapshot is not None:
                    await self._snapshots.fetch(source.id, snapshot)
                forked, _ = await asyncio.gather(
                    self._host.driver.fork(source.id, spec, snapshot),
                    self._creating(record),
                    return_exceptions=True,
                )
                if isinstance(forked, BaseException):
                    raise forked
            except Exception as exc:
                known = isinstance(exc, DriverError | SnapshotStoreError)
                reason = str(exc) if known else "internal error"
                if not known:
                    log.exception("forking %s into %s failed", source.id, child_id)
                await self._stopped(child_id)
                self._host.links.release(child_id)
                await self._update(child_id, status=S.FAILED, reason=f"fork failed: {reason}")
                raise Unavailable(f"the fork could not be started: {reason}",
                                  code="fork_failed") from exc  # fmt: skip
            now = utcnow()
            self._activity[child_id] = time.monotonic()
            child = await self._changed(
                await self._update(
                    child_id, status=S.RUNNING, running_at=now,
                    spawn_ms=round((time.monotonic() - started) * 1000),
                    fork_mode="processes" if snapshot is not None else "files",
                )
            )  # fmt: skip
            if options.start_paused:
                child = await self._pause(child_id)
            return child
