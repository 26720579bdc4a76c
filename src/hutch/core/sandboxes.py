"""Sandboxes: create, find, change, pause, resume and destroy them, and recover after a crash.

The store is the record of what users asked for; the host agent's driver is what really
runs. Every status change is written before the step that follows it, so a control plane
killed at any point finds, at its next start, enough to finish or undo what it was doing
(:meth:`SandboxService.recover`). Operations on one sandbox are serialised by a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from hutch.core.catalog import ROOTFS_CATALOG, Shape
from hutch.core.disks import DiskRef, DiskService
from hutch.core.errors import Conflict, HutchError, InvalidInput, NotFound, RateLimited, Unavailable
from hutch.core.identity import Principal
from hutch.core.ids import new_id
from hutch.core.names import generate_name, name_problem
from hutch.core.networks import NetworkService
from hutch.core.previews import new_token
from hutch.core.sandbox_status import SandboxStatus as S
from hutch.host.addresses import PoolExhausted
from hutch.host.agent import HostAgent
from hutch.host.disks import DiskMountError
from hutch.host.drivers.base import DriverError, RuntimeState, SandboxMissing, SandboxSpec
from hutch.host.guest import (
    ExecExit,
    ExecOutput,
    ExecRequest,
    FileDownload,
    GuestClient,
    GuestError,
    GuestUnreachable,
)
from hutch.host.images import built_images
from hutch.host.networks import NetworkError
from hutch.settings import Settings
from hutch.store import sandboxes as store
from hutch.store.cache import ReadCache
from hutch.store.db import Database
from hutch.store.models import NetworkRecord, SandboxRecord, utcnow

__all__ = [
    "ExecCommand",
    "ExecResult",
    "SandboxCreate",
    "SandboxPatch",
    "SandboxService",
    "Spawned",
]

log = logging.getLogger(__name__)

ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
MIN_DISK_MIB = 256
MAX_DISK_MIB = 1024 * 1024
MAX_AUTO_PAUSE_S = 30 * 24 * 3600
MAX_PATH = 4096
# Statuses that count toward the per-user cap: the sandbox holds CPU and memory.
_COUNTED = (S.CREATING, S.RUNNING, S.RESUMING, S.PAUSING)
_RESTARTED_IN_CREATE = "the host agent restarted while the sandbox was being created"
_DIED_WHILE_DOWN = "the sandbox stopped while the host agent was down"


@dataclass(frozen=True, kw_only=True)
class SandboxCreate:
    shape: str
    rootfs: str | None = None
    name: str | None = None
    disk_mib: int | None = None
    envs: Mapping[str, str] = field(default_factory=dict)
    egress: Sequence[str] = ()
    ingress_enabled: bool = False
    auto_pause_after_seconds: int | None = None
    host_id: str | None = None
    networks: Sequence[str] = ()
    disks: Sequence[DiskRef] = ()
    timeout_s: float | None = None
    """Destroy the sandbox this long after it starts (None: it lives until deleted)."""


@dataclass(frozen=True, kw_only=True)
class Spawned:
    """A background process: its handle, its pid inside, and where its output goes."""

    id: str
    pid: int
    log_path: str


@dataclass(frozen=True, kw_only=True)
class SandboxPatch:
    """Fields to change; those left None stay as they are."""

    name: str | None = None
    auto_pause_after_seconds: int | None = None
    ingress_enabled: bool | None = None


@dataclass(frozen=True, kw_only=True)
class ExecCommand:
    cmd: str
    args: Sequence[str] | None = None
    stdin: bytes | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout_s: float | None = None

    @property
    def argv(self) -> list[str]:
        """With ``args``, run ``cmd`` itself; without, run ``cmd`` as a shell command line."""
        if self.args is None:
            return ["/bin/sh", "-c", self.cmd]
        return [self.cmd, *self.args]


@dataclass(frozen=True, kw_only=True)
class ExecResult:
    stdout: str
    stderr: str
    exit_code: int | None
    error: str | None
    exec_ms: int


class SandboxService:
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
        self._user_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._sandbox_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._activity: dict[str, float] = {}
        self._stop_listeners: list[Callable[[str], Awaitable[None]]] = []
        self._running_listeners: list[Callable[[SandboxRecord], Awaitable[None]]] = []
        # (user id, id or name) -> record, for the exec and file paths.
        self._running_records: ReadCache[tuple[str, str], SandboxRecord] = ReadCache(db)

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

    def on_stop(self, listener: Callable[[str], Awaitable[None]]) -> None:
        """Call ``listener(sandbox_id)`` whenever a sandbox pauses, fails or is destroyed."""
        self._stop_listeners.append(listener)

    async def _stopped(self, sandbox_id: str) -> None:
        for listener in self._stop_listeners:
            try:
                await listener(sandbox_id)
            except Exception:
                log.warning("a stop listener failed for %s", sandbox_id, exc_info=True)

    # -- reading ------------------------------------------------------------------------

    async def get(self, user: Principal, ident: str) -> SandboxRecord:
        """The user's sandbox by id or name; another user's is :class:`NotFound`, as is a
        missing one."""
        async with self._db.sessions() as session:
            record = await store.find_for_user(session, user.user_id, ident)
        if record is None:
            raise NotFound(f"no sandbox {ident!r}", field="sandbox")
        return record

    async def get_by_ip(self, user: Principal, ip: str) -> SandboxRecord:
        async with self._db.sessions() as session:
            record = await store.find_by_ip(session, user.user_id, ip)
        if record is None:
            raise NotFound(f"no sandbox of yours has the address {ip}", field="ip")
        return record

    async def list_sandboxes(
        self, user: Principal, *, status: str | None, limit: int, offset: int
    ) -> tuple[list[SandboxRecord], int]:
        statuses = None
        if status:
            statuses = [part.strip() for part in status.split(",") if part.strip()]
            unknown = [s for s in statuses if s not in S.__members__.values()]
            if unknown:
                known = ", ".join(s.value for s in S)
                raise InvalidInput(f"unknown status {unknown[0]!r}; one of {known}", field="status")
        async with self._db.sessions() as session:
            records, total = await store.list_for_user(
                session, user.user_id, statuses=statuses, limit=limit, offset=offset
            )
        return list(records), total

    # -- create -------------------------------------------------------------------------

    async def create(self, user: Principal, request: SandboxCreate) -> SandboxRecord:
        """Start a sandbox and return it running. A failed start leaves a ``failed`` record
        with the reason, and nothing on the host."""
        shape, rootfs, disk_mib = await self._check_create(request)
        networks = await self._networks.find_all(user, request.networks)
        disks = await self._disks.check_refs(user, request.disks)
        async with self._user_locks[user.user_id]:
            await self._check_cap(user.user_id)
            async with self._db.sessions() as session:
                name = request.name or await self._free_name(session, user.user_id)
            sandbox_id = new_id("sb_")
            try:
                link = self._host.links.allocate(sandbox_id)
            except PoolExhausted as exc:
                raise Unavailable("this host has no free sandbox addresses left") from exc
            record = SandboxRecord(
                id=sandbox_id,
                user_id=user.user_id,
                name=name,
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
                ingress_enabled=request.ingress_enabled,
                ingress_token=new_token() if request.ingress_enabled else None,
                auto_pause_after_seconds=request.auto_pause_after_seconds or None,
                created_by=user.key_id,
                expires_at=(
                    utcnow() + timedelta(seconds=request.timeout_s)
                    if request.timeout_s is not None
                    else None
                ),
            )
            try:
                async with self._db.sessions.begin() as session:
                    session.add(record)
            except IntegrityError:
                self._host.links.release(sandbox_id)
                raise Conflict(f"you already have a sandbox named {name!r}", field="name") from None

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
        )
        started = time.monotonic()
        async with self._sandbox_locks[sandbox_id]:
            try:
                await self._host.driver.create(spec)
                await self._join_all(record, networks, user, disks)
            except Exception as exc:
                known = isinstance(exc, DriverError | NetworkError | DiskMountError)
                reason = str(exc) if known else "internal error"
                if not known:
                    log.exception("creating %s failed", sandbox_id)
                self._host.links.release(sandbox_id)
                await self._update(sandbox_id, status=S.FAILED, reason=reason)
                raise Unavailable(
                    f"the sandbox could not be started: {reason}", code="create_failed"
                ) from exc
            spawn_ms = round((time.monotonic() - started) * 1000)
            now = utcnow()
            self._activity[sandbox_id] = time.monotonic()
            return await self._changed(
                await self._update(sandbox_id, status=S.RUNNING, spawn_ms=spawn_ms, running_at=now)
            )

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

    async def _check_create(self, request: SandboxCreate) -> tuple[Shape, str, int]:
        shape = self._shapes.get(request.shape)
        if shape is None:
            known = ", ".join(self._shapes)
            raise InvalidInput(f"unknown shape {request.shape!r}; one of {known}", field="shape")
        rootfs = request.rootfs or self._settings.default_rootfs
        if rootfs not in {image.name for image in ROOTFS_CATALOG}:
            known = ", ".join(image.name for image in ROOTFS_CATALOG)
            raise InvalidInput(f"unknown rootfs {rootfs!r}; one of {known}", field="rootfs")
        if rootfs not in await asyncio.to_thread(built_images, self._settings.images_path):
            raise InvalidInput(
                f"rootfs {rootfs!r} is not built on this host; the operator can build it with "
                f"'hutch images build {rootfs}'",
                field="rootfs",
            )
        disk_mib = request.disk_mib or shape.default_disk_mib
        if not MIN_DISK_MIB <= disk_mib <= MAX_DISK_MIB:
            raise InvalidInput(
                f"disk_mib must be between {MIN_DISK_MIB} and {MAX_DISK_MIB}", field="disk_mib"
            )
        if request.name is not None and (problem := name_problem(request.name)):
            raise InvalidInput(problem, field="name")
        _check_env(request.envs, field="envs")
        _check_auto_pause(request.auto_pause_after_seconds)
        if request.timeout_s is not None:
            _check_timeout(request.timeout_s, self._settings.sandbox_max_timeout_s)
        if request.host_id and request.host_id != self._host.host_id:
            raise InvalidInput(f"no host {request.host_id!r}", field="host_id")
        return shape, rootfs, disk_mib

    async def _free_name(self, session: Any, user_id: str) -> str:
        for attempt in range(50):
            name = generate_name()
            if attempt >= 20:
                name = f"{name}-{new_id('')[-4:].lower()}"
            if not await store.name_taken(session, user_id, name):
                return name
        raise Unavailable("could not find a free name; give one with 'name'")

    # -- change -------------------------------------------------------------------------

    async def patch(self, user: Principal, ident: str, patch: SandboxPatch) -> SandboxRecord:
        record = await self.get(user, ident)
        changes: dict[str, Any] = {}
        if patch.name is not None and patch.name != record.name:
            if problem := name_problem(patch.name):
                raise InvalidInput(problem, field="name")
            changes["name"] = patch.name
        if patch.auto_pause_after_seconds is not None:
            _check_auto_pause(patch.auto_pause_after_seconds)
            changes["auto_pause_after_seconds"] = patch.auto_pause_after_seconds or None
        if patch.ingress_enabled is not None:
            changes["ingress_enabled"] = patch.ingress_enabled
            if patch.ingress_enabled and not record.ingress_token:
                changes["ingress_token"] = new_token()
        if not changes:
            return record
        if record.status in (S.DESTROYED, S.FAILED):
            raise Conflict(f"sandbox is {record.status}; it can no longer change", field="status")
        async with self._sandbox_locks[record.id]:
            try:
                updated = await self._update(record.id, **changes)
            except IntegrityError:
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

    async def destroy(self, user: Principal, ident: str) -> SandboxRecord:
        """Destroy the sandbox and everything of it on the host. Idempotent."""
        record = await self.get(user, ident)
        async with self._sandbox_locks[record.id]:
            return await self._destroy(record.id)

    async def _destroy(self, sandbox_id: str) -> SandboxRecord:
        record = await self._load(sandbox_id)
        if record.status in (S.DESTROYED, S.FAILED):
            return record
        await self._update(record.id, status=S.DESTROYING)
        await self._stopped(record.id)
        await self._disks.unmount_all(record.id)
        await self._driver_step(record.id, "destroyed", self._host.driver.destroy)
        await self._networks.leave_all(record.id)
        self._forget(record.id)
        return await self._update(record.id, status=S.DESTROYED, destroyed_at=utcnow())

    async def set_timeout(self, user: Principal, ident: str, timeout_s: float) -> SandboxRecord:
        """Destroy the sandbox ``timeout_s`` from now (extending or shortening its life)."""
        _check_timeout(timeout_s, self._settings.sandbox_max_timeout_s)
        record = await self.get(user, ident)
        if record.status in (S.DESTROYED, S.FAILED, S.DESTROYING):
            raise Conflict(f"sandbox is {record.status}", field="status")
        return await self._update(record.id, expires_at=utcnow() + timedelta(seconds=timeout_s))

    async def pause(self, user: Principal, ident: str) -> SandboxRecord:
        """Freeze every process of the sandbox. Idempotent."""
        record = await self.get(user, ident)
        async with self._sandbox_locks[record.id]:
            return await self._pause(record.id)

    async def _pause(self, sandbox_id: str) -> SandboxRecord:
        record = await self._load(sandbox_id)
        if record.status == S.PAUSED:
            return record
        if record.status != S.RUNNING:
            raise Conflict(f"sandbox is {record.status}; only a running sandbox can be paused",
                           field="status")  # fmt: skip
        await self._update(sandbox_id, status=S.PAUSING)
        await self._stopped(sandbox_id)
        await self._driver_step(sandbox_id, "paused", self._host.driver.pause)
        return await self._update(sandbox_id, status=S.PAUSED, paused_at=utcnow())

    async def resume(self, user: Principal, ident: str) -> SandboxRecord:
        """Thaw a paused sandbox. Idempotent; counts toward the running cap."""
        record = await self.get(user, ident)
        async with self._sandbox_locks[record.id]:
            record = await self._load(record.id)
            if record.status == S.RUNNING:
                return record
            if record.status != S.PAUSED:
                raise Conflict(f"sandbox is {record.status}; only a paused sandbox can be resumed",
                               field="status")  # fmt: skip
            async with self._user_locks[user.user_id]:
                await self._check_cap(user.user_id)
                await self._update(record.id, status=S.RESUMING)
            await self._driver_step(record.id, "resumed", self._host.driver.resume)
            self._activity[record.id] = time.monotonic()
            return await self._changed(
                await self._update(record.id, status=S.RUNNING, last_resumed_at=utcnow())
            )

    async def _check_cap(self, user_id: str) -> None:
        """Raise :class:`RateLimited` if the user runs as many sandboxes as allowed."""
        async with self._db.sessions() as session:
            counted = await store.count_user_in(session, user_id, _COUNTED)
        if counted >= self._settings.max_running_per_user:
            raise RateLimited(
                f"you have {counted} running sandboxes, the most allowed; "
                "pause or delete one first",
                headers={"Retry-After": "5"},
            )

    async def _driver_step(
        self, sandbox_id: str, done: str, step: Callable[[str], Awaitable[None]]
    ) -> None:
        """Run a driver step; if it fails, the sandbox is ``error`` with the reason (503)."""
        try:
            await step(sandbox_id)
        except DriverError as exc:
            await self._update(sandbox_id, status=S.ERROR, reason=str(exc))
            raise Unavailable(f"the sandbox could not be {done}: {exc}") from exc

    def address_of(self, record: SandboxRecord) -> str:
        """Where the host reaches the sandbox's ports: its link address, or loopback when
        the driver does not isolate (the fake driver's sandboxes share the host's network)."""
        if not self._host.driver.capabilities.isolated:
            return "127.0.0.1"
        return record.ip or ""

    # -- exec and files -----------------------------------------------------------------

    async def _running(self, user: Principal, ident: str) -> SandboxRecord:
        # Kept until anyone writes to the store, so a pause or destroy is seen at once.
        token = self._running_records.token()
        record = self._running_records.get((user.user_id, ident), token)
        if record is None:
            record = await self.get(user, ident)
            self._running_records.put((user.user_id, ident), token, record)
        if record.status == S.PAUSED:
            raise Conflict(
                f"sandbox {record.name} is paused; resume it first "
                f"(POST /v1/sandboxes/{record.id}/resume)",
                field="status",
            )
        if record.status != S.RUNNING:
            raise Conflict(f"sandbox is {record.status}, not running", field="status")
        self._activity[record.id] = time.monotonic()
        return record

    def _exec_request(self, command: ExecCommand) -> ExecRequest:
        if not command.cmd:
            raise InvalidInput("cmd must not be empty", field="cmd")
        timeout = command.timeout_s or self._settings.exec_default_timeout_s
        if not 0 < timeout <= self._settings.exec_max_timeout_s:
            raise InvalidInput(
                f"timeout_secs must be between 0 and {self._settings.exec_max_timeout_s:g}",
                field="timeout_secs",
            )
        if command.cwd is not None:
            _check_path(command.cwd, field="cwd")
        _check_env(command.env, field="env")
        return ExecRequest(
            argv=command.argv,
            env=dict(command.env),
            cwd=command.cwd,
            timeout_s=timeout,
            stdin=command.stdin,
        )

    async def exec_stream(
        self, user: Principal, ident: str, command: ExecCommand
    ) -> AsyncIterator[ExecOutput | ExecExit]:
        """Check everything, then return the command's events (output, then one exit)."""
        request = self._exec_request(command)
        record = await self._running(user, ident)
        return self._guarded(record.id, self._host.driver.guest(record.id).exec(request))

    async def _guarded(
        self, sandbox_id: str, events: AsyncIterator[ExecOutput | ExecExit]
    ) -> AsyncIterator[ExecOutput | ExecExit]:
        try:
            async for event in events:
                yield event
        except GuestUnreachable as exc:
            raise _unreachable() from exc
        except GuestError as exc:
            raise Unavailable(f"the sandbox refused the command: {exc.message}") from exc
        finally:
            self._activity[sandbox_id] = time.monotonic()

    async def spawn(self, user: Principal, ident: str, command: ExecCommand) -> Spawned:
        """Start a command in the background; it keeps running after this returns."""
        request = self._exec_request(command)
        record = await self._running(user, ident)
        handle = new_id("proc_", lower=True)
        log_path = f"/tmp/{handle}.log"
        try:
            pid = await self._host.driver.guest(record.id).spawn(request, log=log_path)
        except GuestUnreachable as exc:
            raise _unreachable() from exc
        except GuestError as exc:
            raise InvalidInput(exc.message, field="command") from exc
        return Spawned(id=handle, pid=pid, log_path=log_path)

    async def guest(self, user: Principal, ident: str) -> GuestClient:
        """The guest agent of the user's running sandbox (for :mod:`hutch.core.processes`)."""
        record = await self._running(user, ident)
        return self._host.driver.guest(record.id)

    def check_command(self, command: ExecCommand) -> ExecRequest:
        """``command`` checked as exec checks it (argv, env, cwd), as the agent's request."""
        return self._exec_request(command)

    async def exec(self, user: Principal, ident: str, command: ExecCommand) -> ExecResult:
        """Run a command to completion; each output stream is kept up to the configured cap."""
        started = time.monotonic()
        cap = self._settings.exec_output_cap_bytes
        buffers = {"stdout": bytearray(), "stderr": bytearray()}
        dropped = {"stdout": 0, "stderr": 0}
        done = ExecExit(None, "the command ended without an exit status")
        async for event in await self.exec_stream(user, ident, command):
            if isinstance(event, ExecOutput):
                buffer = buffers[event.stream]
                room = cap - len(buffer)
                buffer.extend(event.data[: max(room, 0)])
                dropped[event.stream] += max(len(event.data) - max(room, 0), 0)
            else:
                done = event
        texts = {}
        for stream, buffer in buffers.items():
            text = buffer.decode("utf-8", errors="replace")
            if dropped[stream]:
                text += (
                    f"\n[hutch: {stream} truncated: {dropped[stream]} more bytes over the "
                    f"{cap}-byte cap; use ?stream=true for everything]"
                )
            texts[stream] = text
        return ExecResult(
            stdout=texts["stdout"],
            stderr=texts["stderr"],
            exit_code=done.exit_code,
            error=done.error,
            exec_ms=round((time.monotonic() - started) * 1000),
        )

    async def write_file(
        self, user: Principal, ident: str, path: str, chunks: AsyncIterator[bytes]
    ) -> int:
        _check_path(path, field="path")
        record = await self._running(user, ident)
        try:
            return await self._host.driver.guest(record.id).write_file(path, chunks)
        except GuestError as exc:
            raise _file_error(exc) from exc
        except GuestUnreachable as exc:
            raise _unreachable() from exc

    async def read_file(self, user: Principal, ident: str, path: str) -> FileDownload:
        _check_path(path, field="path")
        record = await self._running(user, ident)
        try:
            return await self._host.driver.guest(record.id).read_file(path)
        except GuestError as exc:
            raise _file_error(exc) from exc
        except GuestUnreachable as exc:
            raise _unreachable() from exc

    # -- recovery and monitoring --------------------------------------------------------

    async def recover(self) -> list[str]:
        """Make the store and the host agree after a start; return what was cleaned up.

        Sandboxes that still run are adopted; those whose processes died are ``error``;
        creates and destroys that a crash interrupted are finished as ``failed`` and
        ``destroyed``; anything on the host that the store does not know is removed.
        """
        driver = self._host.driver
        async with self._db.sessions() as session:
            records = list(await store.live_on_host(session, self._host.host_id))
        runtimes = {info.id: info for info in await driver.list_sandboxes()}
        keep: set[str] = set()
        for record in records:
            runtime = runtimes.get(record.id)
            alive = runtime is not None and runtime.state != RuntimeState.STOPPED
            if record.status in (S.CREATING, S.DESTROYING):
                # Finished as the interrupted step would have: off the host, out of its
                # networks and disks (a member left behind would pin its network forever).
                await self._disks.unmount_all(record.id)
                await driver.destroy(record.id)
                await self._networks.leave_all(record.id)
                if record.status == S.CREATING:
                    await self._update(record.id, status=S.FAILED, reason=_RESTARTED_IN_CREATE)
                else:
                    await self._update(record.id, status=S.DESTROYED, destroyed_at=utcnow())
            elif alive and record.status != S.ERROR:
                assert runtime is not None
                if record.ip is None or self._host.links.reserve(record.id, record.ip) is None:
                    await self._fail_and_clean(record.id, "its network address was lost")
                    continue
                keep.add(record.id)
                actual = S.PAUSED if runtime.state == RuntimeState.PAUSED else S.RUNNING
                if actual != record.status:
                    await self._update(record.id, status=actual)
            else:
                if record.status != S.ERROR:
                    await self._update(record.id, status=S.ERROR, reason=_DIED_WHILE_DOWN)
                await driver.destroy(record.id)
        removed = await driver.cleanup(keep)
        if removed:
            log.info("recovery removed leftovers of %d sandboxes: %s", len(removed), removed)
        return removed

    async def monitor_forever(self) -> None:
        """Mark sandboxes whose init died as ``error``, and auto-pause idle ones."""
        while True:
            await asyncio.sleep(self._settings.monitor_interval_s)
            try:
                await self.check_once()
            except Exception:
                log.warning("sandbox monitor pass failed; will retry", exc_info=True)

    async def check_once(self) -> None:
        async with self._db.sessions() as session:
            records = list(await store.live_on_host(session, self._host.host_id))
        watched = [r for r in records if r.status in (S.RUNNING, S.PAUSED)]
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
            if runtime is None or runtime.state == RuntimeState.STOPPED:
                lock = self._sandbox_locks[record.id]
                if lock.locked():
                    continue
                async with lock:
                    current = await self._load(record.id)
                    if current.status in (S.RUNNING, S.PAUSED):
                        await self._fail_and_clean(
                            record.id,
                            "the sandbox's init process exited (killed, or out of memory)",
                        )
                continue
            limit = record.auto_pause_after_seconds
            if record.status == S.RUNNING and limit:
                last = self._activity.get(record.id)
                if last is None:
                    since = record.last_resumed_at or record.running_at or record.created_at
                    last = now - (utcnow() - since).total_seconds()
                    self._activity[record.id] = last
                if now - last >= limit:
                    lock = self._sandbox_locks[record.id]
                    if not lock.locked():
                        async with lock:
                            with contextlib.suppress(HutchError):
                                await self._pause(record.id)
                                log.info("auto-paused %s after %ss idle", record.id, limit)

    async def _fail_and_clean(self, sandbox_id: str, reason: str) -> None:
        await self._update(sandbox_id, status=S.ERROR, reason=reason)
        await self._stopped(sandbox_id)
        with contextlib.suppress(DriverError, SandboxMissing):
            await self._host.driver.destroy(sandbox_id)
        self._forget(sandbox_id)

    def _forget(self, sandbox_id: str) -> None:
        self._host.links.release(sandbox_id)
        self._activity.pop(sandbox_id, None)
        self._sandbox_locks.pop(sandbox_id, None)

    # -- store helpers ------------------------------------------------------------------

    async def _load(self, sandbox_id: str) -> SandboxRecord:
        async with self._db.sessions() as session:
            record = await session.get(SandboxRecord, sandbox_id)
        if record is None:
            raise NotFound(f"no sandbox {sandbox_id!r}", field="sandbox")
        return record

    async def _update(self, sandbox_id: str, **changes: Any) -> SandboxRecord:
        async with self._db.sessions.begin() as session:
            record = await session.get(SandboxRecord, sandbox_id)
            if record is None:
                raise NotFound(f"no sandbox {sandbox_id!r}", field="sandbox")
            for key, value in changes.items():
                setattr(record, key, value)
        return record


def _check_env(env: Mapping[str, str], *, field: str) -> None:
    for key, value in env.items():
        if not ENV_KEY.fullmatch(key):
            raise InvalidInput(f"env name {key[:64]!r} is not a valid variable name", field=field)
        if "\0" in value:
            raise InvalidInput(f"env {key} contains a NUL byte", field=field)


def _check_timeout(timeout_s: float, maximum: float) -> None:
    if not 1 <= timeout_s <= maximum:
        raise InvalidInput(f"timeout must be between 1 s and {maximum:g} s", field="timeout_ms")


def _check_auto_pause(seconds: int | None) -> None:
    if seconds is not None and not 0 <= seconds <= MAX_AUTO_PAUSE_S:
        raise InvalidInput(
            f"auto_pause_after_seconds must be between 0 and {MAX_AUTO_PAUSE_S}",
            field="auto_pause_after_seconds",
        )


def _unreachable() -> HutchError:
    return Conflict(
        "the sandbox is not answering; it may have stopped. Check its status, and delete "
        "it if it is in error",
        field="status",
    )


def _check_path(path: str, *, field: str) -> None:
    if not path.startswith("/"):
        raise InvalidInput(f"{field} must be an absolute path (start with '/')", field=field)
    if any(part == ".." for part in path.split("/")):
        raise InvalidInput(f"{field} must not contain '..'", field=field)
    if "\0" in path or len(path) > MAX_PATH:
        raise InvalidInput(f"{field} is not a usable path", field=field)


def _file_error(exc: GuestError) -> HutchError:
    if exc.code == "not_found":
        return NotFound(exc.message, field="path")
    return InvalidInput(exc.message, field="path")
