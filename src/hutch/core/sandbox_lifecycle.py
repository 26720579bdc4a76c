"""Sandbox lifecycle: create, change, pause, resume and destroy.

Every status change is written before the step that follows it, so a control plane killed
at any point finds enough at its next start to finish or undo it (see
:mod:`hutch.core.sandbox_recovery`). Operations on one sandbox are serialised by its lock.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from hutch.core.catalog import ROOTFS_CATALOG, Shape
from hutch.core.disks import DiskRef
from hutch.core.egress import parse_rules
from hutch.core.errors import Conflict, InvalidInput, Unavailable
from hutch.core.identity import Principal
from hutch.core.ids import new_id
from hutch.core.names import generate_name, name_problem
from hutch.core.previews import new_token
from hutch.core.sandbox_requests import (
    MAX_AUTO_PAUSE_S,
    MIN_DISK_MIB,
    SandboxCreate,
    SandboxPatch,
    Transition,
    check_envs,
)
from hutch.core.sandbox_status import SandboxStatus as S
from hutch.core.sandbox_warm import Created, SandboxWarm
from hutch.core.snapshot_store import SnapshotStoreError
from hutch.core.sshkeys import normalise_keys
from hutch.host.addresses import PoolExhausted
from hutch.host.disks import DiskMountError
from hutch.host.drivers.base import DriverError, LinkAddress, SandboxMissing, SandboxSpec
from hutch.host.drivers.gvisor import CannotHibernate, HibernateFailed
from hutch.host.images import built_images
from hutch.host.networks import NetworkError
from hutch.store import sandboxes as store
from hutch.store.models import NetworkRecord, SandboxRecord, utcnow

__all__ = ["SandboxLifecycle"]

log = logging.getLogger(__name__)


class SandboxLifecycle(SandboxWarm):
    """Create, change, pause, resume and destroy sandboxes."""

    # -- create ---------------------------------------------------------------------

    async def create(self, user: Principal, request: SandboxCreate) -> SandboxRecord:
        """Start a sandbox and return it running. A failed start leaves a ``failed`` record
        with the reason, and nothing on the host."""
        return (await self.create_reporting(user, request)).record

    async def create_reporting(self, user: Principal, request: SandboxCreate) -> Created:
        """:meth:`create`, saying whether the sandbox came from the warm pool."""
        with self._host.warm.creating():  # the pool's refills wait meanwhile
            return await self._create(user, request)

    async def _create(self, user: Principal, request: SandboxCreate) -> Created:
        shape, rootfs, disk_mib = await self._check_create(request, user)
        runtime = self._check_runtime(request.runtime)
        ssh_pubkeys = normalise_keys(request.ssh_pubkeys)
        networks = await self._networks.find_all(user, request.networks)
        disks = await self._disks.check_refs(user, request.disks)
        # No lock: the insert holds the cap (store.insert_within_cap), and a generated
        # name that is taken is drawn again.
        prepared = self._take_warm(request, runtime=runtime, rootfs=rootfs, shape=shape,
                                   disk_mib=disk_mib)  # fmt: skip
        sandbox_id = prepared.id if prepared is not None else new_id("sb_")
        try:
            link = prepared.link if prepared else self._host.links.allocate(sandbox_id)
        except PoolExhausted as exc:
            raise Unavailable("this host has no free sandbox addresses left") from exc
        record = SandboxRecord(
            id=sandbox_id,
            user_id=user.user_id,
            name=request.name or generate_name(),
            status=S.CREATING,
            host_id=self._host.host_id,
            shape=shape.id,
            rootfs=rootfs,
            vcpu=shape.vcpu,
            mem_mib=shape.mem_mib,
            disk_mib=disk_mib,
            ip=str(link.sandbox),
            envs=dict(request.envs),
            egress=list(request.egress),
            bandwidth_quota_bytes=self._settings.bandwidth_quota_bytes,
            ingress_enabled=request.ingress_enabled,
            ingress_token=new_token() if request.ingress_enabled else None,
            auto_pause_after_seconds=request.auto_pause_after_seconds,
            ssh_pubkeys=ssh_pubkeys,
            runtime=runtime,
            auto_resume=request.auto_resume,
            build_of=request.build_of,
            region=self._settings.region,
            created_by=user.key_id,
            expires_at=(
                utcnow() + timedelta(seconds=request.timeout_s)
                if request.timeout_s is not None
                else None
            ),
        )
        try:
            await self._insert_new(record, capped=request.build_of is None,
                                   named=request.name is not None)  # fmt: skip
        except Exception:  # not written: nothing of it is kept
            if prepared is not None:
                self._host.warm.give_back(prepared)
            else:
                self._host.links.release(sandbox_id)
            raise
        name = record.name

        spec = SandboxSpec(
            id=sandbox_id,
            hostname=name,
            rootfs=rootfs,
            vcpu=shape.vcpu,
            mem_mib=shape.mem_mib,
            disk_mib=disk_mib,
            link=link,
            env=dict(request.envs),
            pids_limit=self._settings.pids_limit,
            runtime=runtime,
            # A runtime whose kernel reads its interfaces only at start (gvisor) joins its
            # networks before its first process.
            on_link=None if self._live_networks(runtime) else self._joiner(record, networks),
        )
        if not self._live_networks(runtime):
            networks = []
        started = time.monotonic()
        warm = False
        async with self._sandbox_locks[sandbox_id]:
            try:
                if prepared is not None:
                    warm = await self._start_warm(prepared, spec, record)
                else:
                    created, _ = await asyncio.gather(
                        self._host.driver.create(spec), self._creating(record),
                        return_exceptions=True,
                    )  # fmt: skip
                    if isinstance(created, BaseException):
                        raise created
                await self._join_all(record, networks, user, disks)
            except Exception as exc:
                known = isinstance(exc, DriverError | NetworkError | DiskMountError)
                reason = str(exc) if known else "internal error"
                if not known:
                    log.exception("creating %s failed", sandbox_id)
                await asyncio.shield(self._networks.leave_all(sandbox_id))
                await self._stopped(sandbox_id)
                self._host.links.release(sandbox_id)
                await self._update(sandbox_id, status=S.FAILED, reason=reason)
                raise Unavailable(
                    f"the sandbox could not be started: {reason}", code="create_failed"
                ) from exc
            spawn_ms = round((time.monotonic() - started) * 1000)
            now = utcnow()
            self._activity[sandbox_id] = time.monotonic()
            running = await self._changed(
                await self._update(sandbox_id, status=S.RUNNING, spawn_ms=spawn_ms, running_at=now)
            )
            return Created(record=running, warm=warm)

    async def _join_all(
        self,
        record: SandboxRecord,
        networks: Sequence[NetworkRecord],
        user: Principal,
        disks: Sequence[DiskRef],
    ) -> None:
        """Attach a just-started sandbox to its networks and disks, or take it down again."""
        try:
            for network in networks:
                await self._networks.join(record, network)
            await self._disks.mount_all(record.id, user, disks)
        except BaseException:
            await asyncio.shield(self._disks.unmount_all(record.id))
            await asyncio.shield(self._host.driver.destroy(record.id))
            await asyncio.shield(self._networks.leave_all(record.id))
            raise

    def _check_runtime(self, runtime: str | None) -> str:
        """The runtime a new sandbox gets; 400 when this host cannot run it."""
        chosen = runtime or self._settings.default_runtime
        runtimes = self._host.runtimes
        available = runtimes.available() if runtimes is not None else {"runc": None}
        if chosen not in available:
            raise InvalidInput(f"unknown runtime {chosen!r}; one of runc, gvisor", field="runtime")
        if (why := available[chosen]) is not None:
            raise InvalidInput(f"the {chosen} runtime is not available on this host: {why}",
                               field="runtime")  # fmt: skip
        return chosen

    def _live_networks(self, runtime: str) -> bool:
        runtimes = self._host.runtimes
        if runtimes is None:
            return True
        return runtimes.for_runtime(runtime).capabilities.live_networks

    def _joiner(
        self, record: SandboxRecord, networks: Sequence[NetworkRecord]
    ) -> Callable[[], Awaitable[None]]:
        async def join() -> None:
            for network in networks:
                await self._networks.join(record, network)

        return join

    async def _check_create(
        self, request: SandboxCreate, user: Principal
    ) -> tuple[Shape, str, int]:
        shape = self._shapes.get(request.shape)
        if shape is None:
            known = ", ".join(self._shapes)
            raise InvalidInput(f"unknown shape {request.shape!r}; one of {known}", field="shape")
        rootfs = request.rootfs or self._settings.default_rootfs
        if rootfs not in {image.name for image in ROOTFS_CATALOG}:
            if self.template_images is None:
                known = ", ".join(image.name for image in ROOTFS_CATALOG)
                raise InvalidInput(f"unknown rootfs {rootfs!r}; one of {known}", field="rootfs")
            # The user's own template (hutch.core.templates): its newest ready version.
            rootfs = await self.template_images(user.user_id, rootfs)
        elif rootfs not in await asyncio.to_thread(built_images, self._settings.images_path):
            raise InvalidInput(
                f"rootfs {rootfs!r} is not built on this host; the operator can build it with "
                f"'hutch images build {rootfs}'",
                field="rootfs",
            )
        disk_mib = request.disk_mib or shape.default_disk_mib
        if not MIN_DISK_MIB <= disk_mib <= self._settings.max_disk_mib:
            raise InvalidInput(
                f"disk_mib must be between {MIN_DISK_MIB} and {self._settings.max_disk_mib} "
                "(HUTCH_MAX_DISK_MIB)",
                field="disk_mib",
            )
        if request.name is not None and (problem := name_problem(request.name)):
            raise InvalidInput(problem, field="name")
        check_envs(request.envs)
        # Egress rules (hutch.core.egress): enforced from the first packet by the egress
        # service's running listener (hutch.core.egress_service).
        parse_rules(request.egress, deny=self._settings.deny_set)
        self._check_auto_pause(request.auto_pause_after_seconds)
        if request.timeout_s is not None:
            check_timeout(request.timeout_s, self._settings.sandbox_max_timeout_s)
        if request.bandwidth_quota_bytes:
            raise InvalidInput(
                "bandwidth_quota_bytes cannot be set at create; the deployment's default "
                "applies (add to it with POST /v1/sandboxes/{id}/bandwidth/recharge)",
                field="bandwidth_quota_bytes",
            )
        self._check_placement(request)
        return shape, rootfs, disk_mib

    def _check_placement(self, request: SandboxCreate) -> None:
        """``host_id``, ``region`` and ``node_selector`` against this deployment: one host,
        one region, the host's labels from ``HUTCH_HOST_LABELS``."""
        here = self._host.host_id
        if request.host_id and request.host_id != here:
            raise InvalidInput(
                f"no host {request.host_id!r}; this deployment has one host, {here!r} "
                "(see GET /v1/hosts)",
                field="host_id",
            )
        region = self._settings.region
        if request.region and request.region != region:
            raise InvalidInput(
                f"region {request.region!r} is not served here; this deployment is region "
                f"{region!r} (there is no cross-region placement)",
                field="region",
            )
        labels = self._settings.host_labels
        unmet = {k: v for k, v in request.node_selector.items() if labels.get(k) != v}
        if unmet:
            wanted = ", ".join(f"{k}={v}" for k, v in sorted(unmet.items()))
            have = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "no labels"
            raise InvalidInput(
                f"no host satisfies node_selector ({wanted}); the only host, {here!r}, has {have}",
                field="node_selector",
            )

    def _check_auto_pause(self, seconds: int | None) -> None:
        low = self._settings.auto_pause_min_s
        if seconds is not None and not low <= seconds <= MAX_AUTO_PAUSE_S:
            raise InvalidInput(
                f"auto_pause_after_seconds must be between {low} and {MAX_AUTO_PAUSE_S} "
                "(leave it out, or send null, for no auto-pause)",
                field="auto_pause_after_seconds",
            )

    # -- change -------------------------------------------------------------------------

    async def patch(self, user: Principal, ident: str, patch: SandboxPatch) -> SandboxRecord:
        record = await self.get(user, ident)
        changes: dict[str, Any] = {}
        if patch.name is not None and patch.name != record.name:
            if problem := name_problem(patch.name):
                raise InvalidInput(problem, field="name")
            changes["name"] = patch.name
        if patch.disable_auto_pause and patch.auto_pause_after_seconds is not None:
            raise InvalidInput(
                "give either auto_pause_after_seconds or disable_auto_pause, not both",
                field="disable_auto_pause",
            )
        if patch.auto_pause_after_seconds is not None:
            self._check_auto_pause(patch.auto_pause_after_seconds)
            changes["auto_pause_after_seconds"] = patch.auto_pause_after_seconds
        if patch.disable_auto_pause and record.auto_pause_after_seconds is not None:
            changes["auto_pause_after_seconds"] = None
        if patch.auto_resume is not None and patch.auto_resume != record.auto_resume:
            changes["auto_resume"] = patch.auto_resume
        if patch.ingress_enabled is not None:
            changes["ingress_enabled"] = patch.ingress_enabled
            if patch.ingress_enabled and not record.ingress_token:
                changes["ingress_token"] = new_token()
        if not changes:
            return record
        if record.status in (S.DESTROYED, S.FAILED):
            raise Conflict(f"sandbox is {record.status}; it can no longer change", field="status")
        async with self._sandbox_locks[record.id]:
            await self._refuse_if_moved(await self._load(record.id))
            try:
                updated = await self._update(record.id, **changes)
            except IntegrityError as exc:
                if not store.is_live_name_clash(exc):
                    raise
                raise Conflict(
                    f"you already have a sandbox named {patch.name!r}", field="name"
                ) from None
            if "name" in changes and updated.status in (S.RUNNING, S.PAUSED):
                # The name is also the hostname: the running sandbox takes it at once.
                try:
                    await self._host.driver.rename(record.id, updated.name)
                except DriverError as exc:
                    await self._update(record.id, name=record.name)
                    raise Unavailable(f"the sandbox could not be renamed: {exc}") from exc
        return await self._changed(updated)

    async def destroy(self, user: Principal, ident: str, *, builds: bool = False) -> SandboxRecord:
        """Destroy the sandbox and everything of it on the host. Idempotent. ``builds``:
        a template build's sandbox may be named (the platform's own use)."""
        record = await self.get(user, ident, builds=builds)
        async with self._sandbox_locks[record.id]:
            await self._refuse_if_moved(await self._load(record.id))
            return await self._destroy(record.id)

    async def _destroy(self, sandbox_id: str) -> SandboxRecord:
        record = await self._load(sandbox_id)
        if record.status in (S.DESTROYED, S.FAILED):
            return record
        self._no_fork_of(sandbox_id)
        await self._update(record.id, status=S.DESTROYING)
        await self._stopped(record.id)
        await self._disks.unmount_all(record.id)
        await self._driver_step(record.id, "destroyed", self._host.driver.destroy)
        await self._networks.leave_all(record.id)
        await asyncio.to_thread(shutil.rmtree, self._snapshot(record.id), True)
        if record.hibernated:
            await self._forget_snapshot(record.id)
        self._forget(record.id)
        return await self._update(record.id, status=S.DESTROYED, destroyed_at=utcnow())

    async def destroy_from_inside(self, sandbox_id: str, *, reason: str) -> SandboxRecord:
        """Destroy, as the owner's destroy does, because the sandbox asked (self-signal);
        ``reason`` is kept on the record."""
        async with self._sandbox_locks[sandbox_id]:
            if (await self._load(sandbox_id)).status not in (S.DESTROYED, S.FAILED):
                await self._update(sandbox_id, reason=reason)  # seen from the first step
            return await self._destroy(sandbox_id)

    async def set_timeout(self, user: Principal, ident: str, timeout_s: float) -> SandboxRecord:
        """Destroy the sandbox ``timeout_s`` from now (extending or shortening its life)."""
        check_timeout(timeout_s, self._settings.sandbox_max_timeout_s)
        record = await self.get(user, ident)
        if record.status in (S.DESTROYED, S.FAILED, S.DESTROYING):
            raise Conflict(f"sandbox is {record.status}", field="status")
        return await self._update(record.id, expires_at=utcnow() + timedelta(seconds=timeout_s))

    async def pause(self, user: Principal, ident: str) -> SandboxRecord:
        """Pause the sandbox: gvisor writes it to a snapshot and stops it (hibernate; with
        open TCP connections, or a deleted file of its disk held open, it cannot, and freezes
        it instead, saying why in ``reason``),
        runc freezes every process. Idempotent."""
        return (await self.pause_transition(user, ident)).record

    async def pause_transition(self, user: Principal, ident: str) -> Transition:
        """:meth:`pause`, saying whether it paused the sandbox or found it paused."""
        record = await self.get(user, ident)
        async with self._sandbox_locks[record.id]:
            before = await self._load(record.id)
            after = await self._pause(record.id)
            return Transition(record=after, happened=before.status != after.status)

    async def pause_from_inside(self, sandbox_id: str, *, reason: str) -> SandboxRecord:
        """Pause, as the owner's pause does, because the sandbox asked (self-signal);
        ``reason`` is kept on the record until it runs again."""
        async with self._sandbox_locks[sandbox_id]:
            if (await self._load(sandbox_id)).status == S.RUNNING:
                await self._update(sandbox_id, reason=reason)  # seen from the first step
            return await self._pause(sandbox_id)

    async def _pause(self, sandbox_id: str) -> SandboxRecord:
        record = await self._load(sandbox_id)
        if record.status == S.PAUSED:
            return record
        if record.status != S.RUNNING:
            raise Conflict(f"sandbox is {record.status}; only a running sandbox can be paused",
                           field="status")  # fmt: skip
        await self._update(sandbox_id, status=S.PAUSING)
        await self._stopped(sandbox_id)
        if self._host.driver.capabilities_of(sandbox_id).hibernate:
            try:
                await self._host.driver.hibernate(sandbox_id, self._snapshot(sandbox_id))
            except CannotHibernate as exc:
                # Still running as it was: paused in memory instead, and said why.
                log.info("%s is paused in memory: %s", sandbox_id, exc)
                await self._driver_step(sandbox_id, "paused", self._host.driver.pause)
                why = f"paused in memory, not hibernated: {exc}"
                if exc.retry_after_s is not None:
                    self._hibernate_later(sandbox_id, exc.retry_after_s)
                return await self._update(
                    sandbox_id, status=S.PAUSED, paused_at=utcnow(), hibernated=False, reason=why
                )
            except HibernateFailed as exc:
                raise await self._not_hibernated(sandbox_id, exc) from exc
            except DriverError as exc:
                await self._update(sandbox_id, status=S.ERROR, reason=str(exc))
                raise Unavailable(f"the sandbox could not be hibernated: {exc}") from exc
            await self._networks.unplug(sandbox_id)  # (the driver removes its namespace)
            try:
                await self._snapshots.put(sandbox_id, self._snapshot(sandbox_id))
            except SnapshotStoreError as exc:  # it stays on this host's disk, still whole
                log.warning("%s: %s", sandbox_id, exc)
            return await self._update(sandbox_id, status=S.PAUSED, paused_at=utcnow(),
                                      hibernated=True)  # fmt: skip
        await self._driver_step(sandbox_id, "paused", self._host.driver.pause)
        return await self._update(sandbox_id, status=S.PAUSED, paused_at=utcnow())

    async def _auto_resume(self, user: Principal, record: SandboxRecord) -> SandboxRecord | None:
        """Resume a paused sandbox with ``auto_resume`` for a request that needs it running
        (exec, files, processes); None when it has no ``auto_resume``."""
        if not record.auto_resume:
            return None
        log.info("waking %s for a request (auto_resume)", record.id)
        return (await self.resume_transition(user, record.id)).record

    def _no_fork_of(self, sandbox_id: str) -> None:
        """409 while a fork of the sandbox is being made (its disk is being copied)."""
        forking = getattr(self, "_forking", None)
        if forking and forking.get(sandbox_id):
            raise Conflict("a fork of this sandbox is being made; try again in a moment",
                           field="status")  # fmt: skip

    async def _forget_snapshot(self, sandbox_id: str) -> None:
        try:
            await self._snapshots.delete(sandbox_id)
        except SnapshotStoreError as exc:
            log.warning("%s: %s (the objects stay in the store)", sandbox_id, exc)

    def _snapshot(self, sandbox_id: str) -> Path:
        """Where a hibernated sandbox's snapshot is (complete once it exists)."""
        return self._settings.home / "snapshots" / sandbox_id

    def spec_of(
        self, record: SandboxRecord, link: LinkAddress, *, plug: bool = False
    ) -> SandboxSpec:
        """``plug``: for a start on a network namespace the driver may make anew (a wake,
        a restart), which then gets the sandbox's interfaces on its networks again."""
        sandbox_id = record.id
        return SandboxSpec(
            id=record.id, hostname=record.name, rootfs=record.rootfs, vcpu=record.vcpu,
            mem_mib=record.mem_mib, disk_mib=record.disk_mib, link=link, env=dict(record.envs),
            pids_limit=self._settings.pids_limit, runtime=record.runtime,
            on_link=(lambda: self._networks.plug(sandbox_id)) if plug else None,
        )  # fmt: skip

    async def resume(self, user: Principal, ident: str) -> SandboxRecord:
        """Thaw a paused sandbox. Idempotent; counts toward the running cap."""
        return (await self.resume_transition(user, ident)).record

    async def resume_transition(self, user: Principal, ident: str) -> Transition:
        """:meth:`resume`, saying whether it resumed the sandbox or found it running."""
        record = await self.get(user, ident)
        async with self._sandbox_locks[record.id]:
            record = await self._load(record.id)
            if self._elsewhere(record):  # moved off this (draining) host while we waited
                raise self._moved_away(record)
            if record.status == S.RUNNING:
                return Transition(record=record, happened=False)
            if record.status not in (S.PAUSED, S.ERROR):
                raise Conflict(f"sandbox is {record.status}; only a paused sandbox (or one in "
                               "error) can be resumed", field="status")  # fmt: skip
            self._no_fork_of(record.id)
            was = record.status
            await self._resuming_within_cap(record)
            if record.hibernated:
                await self._wake(record)
            elif was == S.ERROR:
                await self._restart(record)
            else:
                await self._driver_step(record.id, "resumed", self._host.driver.resume)
            self._activity[record.id] = time.monotonic()
            resumed = await self._changed(
                await self._update(
                    record.id,
                    status=S.RUNNING,
                    last_resumed_at=utcnow(),
                    reason=None,
                    hibernated=False,  # (a wake's, in this one write)
                )
            )
            return Transition(record=resumed, happened=True)

    async def _wake(self, record: SandboxRecord) -> None:
        """Start a hibernated sandbox from its snapshot: the same processes carry on. Not
        started: ``error`` with why, the snapshot kept (resume tries again)."""
        link = self._host.links.reserve(record.id, record.ip) if record.ip else None
        if link is None:
            await self._update(record.id, status=S.ERROR)
            raise Conflict("the sandbox's network address is gone; it cannot be started "
                           "again (delete it)", field="status")  # fmt: skip
        snapshot = self._snapshot(record.id)

        async def wake() -> None:
            await self._snapshots.fetch(record.id, snapshot)
            await self._host.driver.wake(self.spec_of(record, link, plug=True), snapshot)

        try:  # the egress policy (and the like) beside the driver's start, as at create
            woke, _ = await asyncio.gather(wake(), self._creating(record), return_exceptions=True)
            if isinstance(woke, BaseException):
                raise woke
        except (DriverError, SnapshotStoreError, NetworkError) as exc:
            await self._stopped(record.id)
            await self._update(record.id, status=S.ERROR, reason=f"resume failed: {exc}")
            raise Unavailable(f"the sandbox could not be resumed: {exc}") from exc
        # Running from here on: its snapshot goes (a restart in between finds the sandbox
        # alive and takes it as running, snapshot or not: SandboxRecovery), beside its
        # disks' mounts; `hibernated` is cleared with the status, in one write. None of
        # these may stop that write: the sandbox runs and its snapshot may be gone, so a
        # row left hibernated would make the next resume stop it for want of a snapshot.
        steps = ("removing its snapshot", "forgetting its stored snapshot", "its disks' mounts")
        done = await asyncio.gather(asyncio.to_thread(shutil.rmtree, snapshot, True),
                                    self._forget_snapshot(record.id),
                                    self._disks.remount_all(record.id),
                                    return_exceptions=True)  # fmt: skip
        for step, outcome in zip(steps, done, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("%s woke, but %s failed: %s", record.id, step, outcome)

    async def _restart(self, record: SandboxRecord) -> None:
        """Start a sandbox in error again from its disk: its files, address, networks and
        disks come back; its processes do not. Not started: ``error`` again, with why."""
        link = self._host.links.reserve(record.id, record.ip) if record.ip else None
        if link is None:
            await self._update(record.id, status=S.ERROR)
            raise Conflict("the sandbox's network address is gone; it cannot be started "
                           "again (delete it)", field="status")  # fmt: skip
        spec = self.spec_of(record, link, plug=True)
        # As at create: the egress policy (and the like) is in place before its first packet.
        await self._creating(record)
        try:
            await self._host.driver.restart(spec)
        except SandboxMissing as exc:
            await self._stopped(record.id)
            await self._update(record.id, status=S.ERROR)
            raise Conflict(f"the sandbox cannot be started again: {exc} (delete it)",
                           field="status") from exc  # fmt: skip
        except (DriverError, NetworkError) as exc:
            await self._stopped(record.id)
            await self._update(record.id, status=S.ERROR, reason=str(exc))
            raise Unavailable(f"the sandbox could not be started again: {exc}") from exc
        await self._disks.remount_all(record.id)
        await self._update(record.id, reason=None)

    def address_of(self, record: SandboxRecord) -> str:
        """Where the host reaches the sandbox's ports: its link address, or loopback when
        the driver does not isolate (the fake driver's sandboxes share the host's network)."""
        if not self._host.driver.capabilities.isolated:
            return "127.0.0.1"
        return record.ip or ""


def check_timeout(timeout_s: float, maximum: float) -> None:
    if not 1 <= timeout_s <= maximum:
        raise InvalidInput(f"timeout must be between 1 s and {maximum:g} s", field="timeout_ms")
