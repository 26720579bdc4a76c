"""The gvisor driver (:class:`GvisorDriver`): hibernate, wake and fork of gVisor
sandboxes; their start, names and ports are :class:`~hutch.host.drivers.gvisor_base.GvisorBase`'s
(whose docstring says what differs from runc, and why).

**Hibernate.** ``runsc checkpoint`` cannot save a socket bound on the host or a TCP
connection that is not closed. Before a checkpoint the agent closes its socket and every
connection, and reports the sandbox's own TCP connections (read from its
``/proc/net/tcp``); with any open, the sandbox is not hibernated (a failed checkpoint
would stop it) and :class:`CannotHibernate` says why. Nor can Debian's runsc (2022) save a
file of the sandbox's disk (its gofer, 9p) that a process deleted but holds open or mapped
(``deleted and invalidated dentries can't be restored``: the checkpoint fails and the
sandbox stops, its processes lost): the agent reports those too (``/proc/*/fd`` and
``/proc/*/maps`` entries ending in `` (deleted)``, which gVisor's procfs shows; not those in
``/tmp`` or ``/dev/shm``, which are memory and saved whole), and :class:`CannotHibernate`
names the process and the file. A checkpoint that fails all the same is
:class:`HibernateFailed`, saying whether the sandbox still runs (its agent is woken again).
After ``runsc restore`` the host leaves a file in the socket directory and the agent binds
its socket again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Awaitable
from pathlib import Path

from hutch.host.conntrack import ClosedConnection, closed_connections
from hutch.host.drivers.base import (
    DriverError,
    RuntimeInfo,
    RuntimeState,
    SandboxMissing,
    SandboxSpec,
)
from hutch.host.drivers.gvisor_base import GvisorBase
from hutch.host.drivers.gvisor_features import GvisorFeatures, detect_features
from hutch.host.drivers.gvisor_host import (
    Steps,
    _drop_cached,
    _first_line,
    _hold_cpu_quota,
    _running_for_s,
    _write_names_in_place,
)
from hutch.host.drivers.runc import RuncDriver
from hutch.host.guest import GuestError, GuestUnreachable
from hutch.host.link import SandboxLink
from hutch.host.proc import CommandFailed, run
from hutch.host.storage import SandboxRootfs, clones_mount_as_they_are, sparse_copy

__all__ = [
    "CannotHibernate",
    "GvisorDriver",
    "GvisorFeatures",
    "HibernateFailed",
    "detect_features",
]

log = logging.getLogger(__name__)

# gVisor's TIME_WAIT (tcp.DefaultTCPTimeWaitTimeout), plus a margin for the clocks' skew.
_TIME_WAIT_S = 62


class CannotHibernate(DriverError):
    """The sandbox cannot be written to a snapshot now; it still runs as it was.
    ``retry_after_s``: when it may be (connections in TIME_WAIT age out), else None."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class HibernateFailed(DriverError):
    """``runsc checkpoint`` failed. ``running``: the sandbox still runs as it was (its
    agent answers again); else runsc stopped it: its processes are gone, its files stay on
    its disk (a start from the disk brings them back)."""

    def __init__(self, message: str, *, running: bool) -> None:
        super().__init__(message)
        self.running = running


class GvisorDriver(GvisorBase):
    # -- hibernate ----------------------------------------------------------------------

    async def hibernate(self, sandbox_id: str, snapshot: Path) -> None:
        info = await self.get(sandbox_id)
        if info is None or info.state == RuntimeState.STOPPED:
            raise SandboxMissing(f"no running sandbox {sandbox_id} on this host")
        if info.state == RuntimeState.PAUSED:
            await RuncDriver.resume(self, sandbox_id)
        wake = f"wake-{secrets.token_hex(4)}"
        # The partial snapshot holds the wake name from the start, so that a host agent
        # killed from here on finds it at its next start (recover_snapshot).
        partial = snapshot.with_name(snapshot.name + ".partial")
        await asyncio.to_thread(shutil.rmtree, partial, True)
        await asyncio.to_thread(partial.mkdir, parents=True)
        await asyncio.to_thread((partial / "wake").write_text, wake)
        # Read beside the agent's answer: connections the sandbox closed itself, which its
        # /proc/net/tcp no longer shows (see hutch.host.conntrack).
        closed = asyncio.create_task(self._closed_connections(sandbox_id, info.pid))
        try:
            answer = await self.guest(sandbox_id).call({"op": "hibernate", "wake": wake},
                                                       timeout_s=10)  # fmt: skip
        except (GuestError, GuestUnreachable) as exc:
            closed.cancel()
            await asyncio.to_thread(shutil.rmtree, partial, True)
            raise CannotHibernate(f"the guest agent did not get ready to hibernate: {exc}") from exc
        busy = answer.get("connections") or []
        deleted = answer.get("deleted") or []  # (an agent older than this: not reported)
        version = self.features.version if self.features else "runsc"
        if busy or deleted:
            closed.cancel()
            await asyncio.to_thread(shutil.rmtree, partial, True)
            raise CannotHibernate(_why_not(busy, deleted, version))
        if recent := await closed:
            # The agent closed its socket for the checkpoint: it binds it again.
            await self._agent_closed(sandbox_id, wake)
            await self._wake_agent(sandbox_id, wake)
            await asyncio.to_thread(shutil.rmtree, partial, True)
            shown = ", ".join(str(c) for c in recent[:5])
            ages = [c.age_s for c in recent if c.age_s is not None]  # None: still closing
            retry = _TIME_WAIT_S - min(ages) if len(ages) == len(recent) else _TIME_WAIT_S
            raise CannotHibernate(
                f"{len(recent)} TCP connection(s) closed in the last minute ({shown}): "
                f"gVisor ({version}) cannot save them in TIME_WAIT; hibernating in "
                f"{retry:.0f} s", retry_after_s=retry)  # fmt: skip
        await self._agent_closed(sandbox_id, wake)
        try:
            await run(*self._runc("checkpoint", "--image-path", str(partial), sandbox_id))
        except CommandFailed as exc:
            await asyncio.to_thread(shutil.rmtree, partial, True)
            why = f"runsc checkpoint failed: {_checkpoint_error(exc.detail)}"
            still = await self.get(sandbox_id)
            if still is not None and still.state == RuntimeState.RUNNING:
                try:
                    await self._wake_agent(sandbox_id, wake)
                except DriverError as woken:
                    raise HibernateFailed(f"{why}; its agent did not answer again: {woken}",
                                          running=False) from exc  # fmt: skip
                raise HibernateFailed(why, running=True) from exc
            raise HibernateFailed(why, running=False) from exc
        os.rename(partial, snapshot)
        # The checkpoint stopped the sandbox, but its Sentry takes a second or two to exit
        # (ptrace: every traced process torn down), which `runsc delete` waits for: that
        # happens in the background, and a wake waits for it only if it comes sooner.
        self._deleting[sandbox_id] = asyncio.create_task(self._delete_stopped(sandbox_id, snapshot))

    async def _agent_closed(self, sandbox_id: str, wake: str) -> None:
        """Wait for the agent to say (with a file) that it closed everything for a
        checkpoint; then its socket can go."""
        run_dir = self.agent_socket(sandbox_id).parent
        deadline = time.monotonic() + 10
        while not (run_dir / f"{wake}.closed").exists():
            if time.monotonic() > deadline:
                raise DriverError("the guest agent did not get ready to hibernate in time")
            await asyncio.sleep(0.002)
        for done in (run_dir / f"{wake}.closed", self.agent_socket(sandbox_id)):
            with contextlib.suppress(FileNotFoundError):
                done.unlink()

    async def _closed_connections(self, sandbox_id: str, pid: int | None) -> list[ClosedConnection]:
        """The sandbox's TCP connections that runsc may still hold though its /proc/net/tcp
        does not show them (closing, or in TIME_WAIT for 60 s), from the host's conntrack,
        which follows every connection crossing the host's end of its link (none read:
        none known). Not those closed before its Sentry (``pid``) started: an earlier
        sandbox's at the same address, or from before its last restore."""
        saved = self._dir(sandbox_id) / "addresses.json"
        try:
            record = json.loads(await asyncio.to_thread(saved.read_text))
            addresses = [ip for _, ip, _ in record["addresses"]]
            within = min(_TIME_WAIT_S, _running_for_s(pid) + 1) if pid else _TIME_WAIT_S
            return await asyncio.to_thread(closed_connections, addresses, within)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            log.debug("%s: no conntrack view of its connections: %s", sandbox_id, exc)
            return []

    async def _delete_stopped(self, sandbox_id: str, snapshot: Path | None = None) -> None:
        """After a checkpoint (or at a start, for one that runs no more): what the host
        holds for a running sandbox goes, so that a hibernated one costs the host its files
        only. runsc's leftovers and its cgroups; its disk is unmounted (its files are in
        its file; a mounted btrfs holds ~7 MiB of kernel memory); its network namespace
        and veth pair go (~1 MiB of kernel memory; its interfaces on private networks go
        with the namespace). Its address stays reserved, and its recorded addresses
        (``addresses.json``): a wake makes the link again. Its filesystem is synced
        before the unmount: were that lazy (runsc's gofer still closing its files), a
        fork's copy of the disk file would miss what btrfs had not yet written. Last, the
        host's page cache of its disk file and of ``snapshot``'s image is dropped (written
        out first): a hibernated sandbox holds no memory of the host's at all, and a wake
        or fork reads them from disk (see :func:`_drop_cached`)."""
        await run(*self._runc("delete", "--force", sandbox_id), check=False)
        await asyncio.to_thread(self._remove_cgroups, {sandbox_id})
        disk = SandboxRootfs(self._dir(sandbox_id), templates=self.templates)
        link = SandboxLink(tag=self.tag, sandbox_id=sandbox_id)

        async def unmount() -> None:
            if await asyncio.to_thread(disk.mounted):
                await run("sync", "-f", str(disk.layer), check=False)
            await disk.unmount()

        await _all(unmount(), link.remove())
        cached = [disk.disk] + ([snapshot / "checkpoint.img"] if snapshot is not None else [])
        await asyncio.to_thread(_drop_cached, cached)

    async def _settled(self, sandbox_id: str) -> None:
        """Wait until what a checkpoint left behind is gone (:meth:`_delete_stopped`),
        before touching the sandbox's disk."""
        pending = self._deleting.get(sandbox_id)
        if pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)

    async def recover_snapshot(self, sandbox_id: str, snapshot: Path) -> bool:
        """After the host agent was killed during a hibernate or a wake: if the sandbox
        still runs, its agent may wait for the wake file named in the snapshot (or the
        partial one): leave it. Return whether the sandbox runs with its agent answering.
        A partial snapshot is never used: it is removed."""
        partial = snapshot.with_name(snapshot.name + ".partial")
        info = await self.get(sandbox_id)
        alive = info is not None and info.state != RuntimeState.STOPPED
        cut = await asyncio.to_thread(partial.exists) or await asyncio.to_thread(snapshot.exists)
        if alive and cut:
            if info is not None and info.state == RuntimeState.PAUSED:
                await RuncDriver.resume(self, sandbox_id)
            with contextlib.suppress(GuestUnreachable, GuestError):
                await self.guest(sandbox_id).ping(timeout_s=1)
                await asyncio.to_thread(shutil.rmtree, partial, True)
                return True
            for directory in (partial, snapshot):
                wake = directory / "wake"
                if await asyncio.to_thread(wake.exists):
                    marker = self.agent_socket(sandbox_id).parent / wake.read_text().strip()
                    with contextlib.suppress(FileNotFoundError):
                        self.agent_socket(sandbox_id).unlink()  # the agent binds it again
                    await asyncio.to_thread(marker.write_text, "")
            try:
                await self._wait_for_agent(sandbox_id)
            except DriverError:
                alive = False
        await asyncio.to_thread(shutil.rmtree, partial, True)
        if not alive and await asyncio.to_thread(self._dir(sandbox_id).is_dir):
            # Hibernated (or stopped) when the agent was killed, maybe before its
            # leftovers went: they go now (a wake or a restart makes them again).
            await self._delete_stopped(sandbox_id)
        return alive

    async def wake(self, spec: SandboxSpec, snapshot: Path) -> RuntimeInfo:
        """Start a hibernated sandbox again from ``snapshot``: its disk mounted and its
        link made again (with its private networks' interfaces: ``spec.on_link``), side by
        side, then ``runsc restore``. Each step's time is logged (:class:`Steps`)."""
        directory = self._dir(spec.id)
        if not (snapshot / "checkpoint.img").exists():
            raise SandboxMissing(f"sandbox {spec.id} has no complete snapshot")
        disk = SandboxRootfs(directory, templates=self.templates)
        if not disk.disk.exists():
            raise SandboxMissing(f"nothing of sandbox {spec.id} is left on this host")
        link = SandboxLink(tag=self.tag, sandbox_id=spec.id)
        steps = Steps("wake", spec.id)
        await steps.timed("settle", self._settled(spec.id))
        image, spec = self._image(spec)

        async def mount() -> None:  # a hibernate unmounted it
            if not await asyncio.to_thread(disk.mounted):
                await disk.mount(image=image.lowers)

        async def network() -> None:  # a hibernate removed it
            made = False
            if not await asyncio.to_thread(link.netns_path.exists):
                await steps.timed("link", link.create(spec.link))
                if spec.on_link is not None:
                    await steps.timed("networks", spec.on_link())  # private networks
                made = True
            # A link made now has its addresses already (runsc removes them at a start).
            await steps.timed("prepare", self._before_start(spec, directory, made=made))

        try:
            # The disk's mount (a loop device and a btrfs: the longest step before runsc)
            # beside the network and the rest of what comes before a start.
            await _all(steps.timed("mount", mount()), network())
            return await self._restore(spec, directory, snapshot, steps)
        except BaseException as exc:
            # Not woken: nothing of it runs, and it holds what a hibernated one does (its
            # snapshot and disk file); a resume tries again.
            await asyncio.shield(self._delete_stopped(spec.id))
            if isinstance(exc, CommandFailed):
                raise DriverError(f"{exc.argv[0]} failed: {exc.detail}") from exc
            raise
        finally:
            steps.log()

    async def _restore(
        self, spec: SandboxSpec, directory: Path, snapshot: Path, steps: Steps
    ) -> RuntimeInfo:
        """``runsc restore`` from ``snapshot`` (:meth:`_before_start` done). The wake file
        is there before the restore, so the agent binds its socket again at its first
        look; a hostname left to set (a fork's) is set by an exec that waits for the
        restore (:meth:`_hostname_early`); the shape's CPU quota is put on once runsc
        returns."""
        await self._tools()  # hutch-sysview (after a restart, no bundle was made before)
        await asyncio.to_thread(_bundle_without_cpu_quota, directory)  # (an older bundle)
        wake = (snapshot / "wake").read_text().strip()
        marker = self.agent_socket(spec.id).parent / wake
        await asyncio.to_thread(marker.write_text, "")
        command = self._networked("restore", "--detach", "--image-path", str(snapshot),
                                  "--pid-file", str(directory / "init.pid"),
                                  "--bundle", str(directory), spec.id)  # fmt: skip
        pending = directory / "hostname.pending"
        name = (await asyncio.to_thread(pending.read_text)).strip() if pending.exists() else ""
        restoring = asyncio.ensure_future(
            steps.timed("restore", self._run_runsc(command, directory / "console.log", "restore"))
        )
        # A hostname to set (a fork's): its `runsc exec` starts during the restore and
        # waits on runsc's lock of the container, which the restore holds until the
        # restored sandbox runs; one that came too early fails and is run again after.
        early = (
            asyncio.ensure_future(
                steps.timed("hostname-early", self._hostname_early(spec.id, name, restoring))
            )
            if name
            else None
        )

        async def hostname() -> None:
            if early is not None and await early:
                await asyncio.to_thread(pending.unlink, missing_ok=True)
                return
            await self._pending_hostname(spec.id, directory)

        try:
            await restoring
            await self._limited(spec.id, directory)
            await _all(steps.timed("agent", self._agent_back(spec.id)),
                       steps.timed("hostname", hostname()))  # fmt: skip
        finally:
            for task in (restoring, early):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            with contextlib.suppress(OSError):
                marker.unlink()
        pid = int((directory / "init.pid").read_text())
        return RuntimeInfo(id=spec.id, state=RuntimeState.RUNNING, pid=pid)

    async def _hostname_early(
        self, sandbox_id: str, hostname: str, restoring: asyncio.Future[None]
    ) -> bool:
        """Set the kernel's hostname with a ``runsc exec`` started while ``restoring``
        runs, once runsc knows the container (its state file): the exec waits on runsc's
        lock of the container, which the restore holds until the restored kernel runs,
        so runsc's own start (~20-60 ms) is done beside the restore. Whether it was set
        (False: it came too early and was refused, or the restore failed: the caller
        sets it after the restore)."""
        state = self._state_file(sandbox_id)
        while not await asyncio.to_thread(state.exists):
            if restoring.done():
                return False
            await asyncio.sleep(0.002)
        done = await run(*self._runc("exec", "--cap", "CAP_SYS_ADMIN", sandbox_id,
                                     "/bin/hostname", hostname), check=False)  # fmt: skip
        if done.returncode != 0:
            return False  # (a sandbox not restored yet refuses an exec: not started)
        await asyncio.wait([restoring])
        return not restoring.cancelled() and restoring.exception() is None

    async def _agent_back(self, sandbox_id: str) -> None:
        """Wait for a restored agent: its socket appears on the host when it binds it,
        then it answers a ping. Both are looked for every millisecond (where
        :meth:`_wait_for_agent`'s pings are 10 ms apart): the socket is there a moment
        before the agent listens on it, and a ping then is refused."""
        socket_path, guest = self.agent_socket(sandbox_id), self.guest(sandbox_id)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if await asyncio.to_thread(socket_path.exists):
                with contextlib.suppress(GuestUnreachable):
                    await guest.ping(timeout_s=max(0.1, deadline - time.monotonic()))
                    return
            await asyncio.sleep(0.001)
        await self._wait_for_agent(sandbox_id)  # (says why, in its own time)

    async def _wake_agent(self, sandbox_id: str, wake: str) -> None:
        """Tell an agent that closed its socket for a checkpoint to bind it again."""
        marker = self.agent_socket(sandbox_id).parent / wake
        marker.write_text("")
        try:
            await self._wait_for_agent(sandbox_id)
        finally:
            with contextlib.suppress(OSError):
                marker.unlink()

    async def fork(
        self, source_id: str, spec: SandboxSpec, snapshot: Path | None = None
    ) -> RuntimeInfo:
        """A copy of the source's disk; from ``snapshot`` its processes carry on in the
        copy (with the child's own address and name), else it starts fresh."""
        if snapshot is None:
            return await self._fork(source_id, spec, self._start)
        if not (snapshot / "checkpoint.img").exists():
            raise SandboxMissing(f"sandbox {source_id} has no complete snapshot")
        image, spec = self._image(spec)
        source = SandboxRootfs(self._dir(source_id), templates=self.templates)
        directory = self._dir(spec.id)
        steps = Steps("fork", spec.id)
        await steps.timed("settle", self._settled(source_id))  # (its disk is unmounted)
        if not await asyncio.to_thread(source.disk.exists):
            raise SandboxMissing(f"nothing of sandbox {source_id} is left on this host")
        try:
            await asyncio.to_thread(directory.mkdir, parents=True)
        except FileExistsError:
            raise DriverError(f"sandbox {spec.id} already exists on this host") from None
        disk = SandboxRootfs(directory, templates=self.templates)
        link = SandboxLink(tag=self.tag, sandbox_id=spec.id)

        async def files() -> None:  # the copy of the disk, mounted; the bundle on it
            await steps.timed("copy", _copy_disk(source, disk))
            await steps.timed("mount", disk.mount(image=image.lowers))
            config = await self._bundle(spec, directory, disk, link)
            await asyncio.to_thread((directory / "config.json").write_text, json.dumps(config))

        async def network() -> None:
            await steps.timed("link", link.create(spec.link))
            if spec.on_link is not None:
                await steps.timed("networks", spec.on_link())
            await steps.timed("prepare", self._before_start(spec, directory, made=True))

        def names() -> None:
            etc = directory / "etc"
            etc.mkdir()
            _write_names_in_place(etc, spec.hostname, str(spec.link.sandbox))
            (etc / "resolv.conf").write_text(
                f"nameserver {spec.link.host}\noptions timeout:1 attempts:2\n"
            )
            # The snapshot's kernel has the source's hostname: the child's is set after.
            (directory / "hostname.pending").write_text(spec.hostname + "\n")

        try:
            await asyncio.to_thread(names)
            await _all(files(), network())
            return await self._restore(spec, directory, snapshot, steps)
        except BaseException as exc:
            await asyncio.shield(self.destroy(spec.id))
            if isinstance(exc, CommandFailed):
                raise DriverError(f"{exc.argv[0]} failed: {exc.detail}") from exc
            if isinstance(exc, OSError):
                raise DriverError(f"the fork's files could not be made: {exc}") from exc
            raise
        finally:
            steps.log()


def _why_not(connections: list[object], deleted: list[object], version: str) -> str:
    """Why the sandbox cannot be hibernated now: its open TCP connections, and the files
    of its disk its processes deleted but hold open (``pid (name): path``)."""
    reasons = []
    if connections:
        shown = ", ".join(str(c) for c in connections[:5])
        reasons.append(f"the sandbox has {len(connections)} open TCP connection(s) ({shown})")
    if deleted:
        shown = ", ".join(str(d) for d in deleted[:5])
        reasons.append(
            f"{len(deleted)} deleted file(s) of its disk are still open ({shown}): close "
            "them, or keep such files in /tmp (memory), to hibernate"
        )
    return f"{'; '.join(reasons)}; gVisor ({version}) cannot save them"


def _checkpoint_error(detail: str) -> str:
    """runsc's first line of complaint, without the Go value it may dump (one line of a
    few KiB: ``encoding error at object gofer.dentry{vfsd:…}``)."""
    line = re.sub(r"([\w.*]+)\{.*", r"\1{…}", _first_line(detail))
    if "gofer.dentry" in detail:
        line += " (a file of its disk, likely deleted and still open)"
    return line


async def _copy_disk(source: SandboxRootfs, disk: SandboxRootfs) -> None:
    """``disk`` a copy of ``source``'s disk file (unmounted, synced: hibernated), only its
    data (a sparse copy in the kernel: no process); a fresh filesystem id only on kernels
    that cannot mount copies side by side as they are (before 6.7)."""
    await asyncio.to_thread(sparse_copy, source.disk, disk.disk)
    if not clones_mount_as_they_are():
        await run("btrfstune", "-f", "-m", str(disk.disk))
    for directory in (disk.layer, disk.rootfs):
        await asyncio.to_thread(directory.mkdir)


def _bundle_without_cpu_quota(directory: Path) -> None:
    """A bundle made before hutch held the CPU quota back from runsc: rewritten once
    without it (:func:`~hutch.host.drivers.gvisor_host._hold_cpu_quota`)."""
    path = directory / "config.json"
    config = json.loads(path.read_text())
    if _hold_cpu_quota(config):
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(config))
        os.rename(partial, path)


async def _all(*steps: Awaitable[None]) -> None:
    """Run ``steps`` side by side and wait for all of them; raise the first failure (the
    others finish first: nothing is left running behind the caller)."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
