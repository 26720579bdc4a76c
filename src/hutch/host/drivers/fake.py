"""The fake driver: the real guest agent as a plain host process, with no isolation at all.

For fast unit tests and the conformance suite only. Each sandbox is a directory that the
agent treats as ``/`` (``--root``); pausing stops the agent's process group. State lives
in files, so a new driver instance over the same directory sees the same sandboxes, the
way a restarted host agent does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from hutch.guest import bootstrap
from hutch.host.drivers.base import (
    Driver,
    DriverCapabilities,
    DriverError,
    RuntimeInfo,
    RuntimeState,
    SandboxMissing,
    SandboxSpec,
    socket_dir,
)
from hutch.host.guest import GuestUnreachable
from hutch.host.ports import connect_port
from hutch.host.proc import run
from hutch.host.snapshot import CapturedLayer

__all__ = ["FakeDriver"]

# The directory holding the package hutch.guest: the agent runs from the source tree.
GUEST_PARENT = str(Path(__file__).resolve().parents[2])


class FakeDriver(Driver):
    capabilities = DriverCapabilities(
        name="fake", isolated=False, disk_limit=False, memory_limit=False
    )

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.sockets = socket_dir("fake-" + hashlib.sha256(str(state_dir).encode()).hexdigest()[:8])
        self.fail_next_create: str | None = None
        """Set to a reason to make the next create fail after it has started (for tests)."""

    def _dir(self, sandbox_id: str) -> Path:
        return self.state_dir / sandbox_id

    def agent_socket(self, sandbox_id: str) -> Path:
        return self.sockets / f"{sandbox_id}.sock"

    async def create(self, spec: SandboxSpec) -> RuntimeInfo:
        directory = self._dir(spec.id)
        if directory.exists():
            raise DriverError(f"sandbox {spec.id} already exists")
        (directory / "root" / "etc").mkdir(parents=True)
        (directory / "disk_mib").write_text(str(spec.disk_mib))
        try:
            info = await self._start(spec)
            if self.fail_next_create is not None:
                reason, self.fail_next_create = self.fail_next_create, None
                raise DriverError(reason)
            return info
        except BaseException:
            await self.destroy(spec.id)
            raise

    async def _start(self, spec: SandboxSpec) -> RuntimeInfo:
        directory = self._dir(spec.id)
        (directory / "root" / "etc" / "hostname").write_text(spec.hostname + "\n")
        self.sockets.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            self.agent_socket(spec.id).unlink()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-S", "-E", "-s", "-c", bootstrap(GUEST_PARENT),
            "--socket", str(self.agent_socket(spec.id)), "--root", str(directory / "root"),
                "--self-fifo", str(directory / "root" / "run" / "self"),
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                 "HOME": str(directory / "root"), "HOSTNAME": spec.hostname, **spec.env},
        )  # fmt: skip
        (directory / "pid").write_text(str(proc.pid))
        await self._wait_for_agent(spec.id)
        return RuntimeInfo(id=spec.id, state=RuntimeState.RUNNING, pid=proc.pid)

    async def restart(self, spec: SandboxSpec) -> RuntimeInfo:
        if not (self._dir(spec.id) / "root").is_dir():
            raise SandboxMissing(f"nothing of sandbox {spec.id} is left")
        pid = self._pid(spec.id)
        if pid is not None and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                await asyncio.to_thread(os.waitpid, pid, 0)
        return await self._start(spec)

    async def _wait_for_agent(self, sandbox_id: str) -> None:
        guest = self.guest(sandbox_id)
        for _ in range(500):
            with contextlib.suppress(GuestUnreachable):
                await guest.ping(timeout_s=1)
                return
            await asyncio.sleep(0.01)
        raise DriverError("the guest agent did not start")

    def _pid(self, sandbox_id: str) -> int | None:
        """The pid of the sandbox's agent, while that process is still its agent. The pid
        file outlives the process, and its number is soon another process's (``pid_max``
        may be 32768): that one must never be taken for the sandbox (reported running,
        or its whole process group SIGKILLed by :meth:`destroy`)."""
        directory = self._dir(sandbox_id)
        try:
            pid = int((directory / "pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if _runs_agent_of(pid, directory) else None

    async def destroy(self, sandbox_id: str) -> None:
        pid = self._pid(sandbox_id)
        if pid is not None and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                await asyncio.to_thread(os.waitpid, pid, 0)
        await asyncio.to_thread(shutil.rmtree, self._dir(sandbox_id), True)
        with contextlib.suppress(FileNotFoundError):
            self.agent_socket(sandbox_id).unlink()

    async def get(self, sandbox_id: str) -> RuntimeInfo | None:
        if not self._dir(sandbox_id).is_dir():
            return None
        pid = self._pid(sandbox_id)
        if pid is None or not _alive(pid):
            return RuntimeInfo(id=sandbox_id, state=RuntimeState.STOPPED, pid=None)
        state = RuntimeState.PAUSED if _stopped(pid) else RuntimeState.RUNNING
        return RuntimeInfo(id=sandbox_id, state=state, pid=pid)

    async def list_sandboxes(self) -> list[RuntimeInfo]:
        if not self.state_dir.is_dir():
            return []
        found = [await self.get(path.name) for path in sorted(self.state_dir.iterdir())]
        return [info for info in found if info is not None]

    async def rename(self, sandbox_id: str, hostname: str) -> None:
        """Only ``/etc/hostname`` under the sandbox's root: a fake has no hostname of its own."""
        info = await self.get(sandbox_id)
        if info is None or info.state == RuntimeState.STOPPED:
            raise SandboxMissing(f"no sandbox {sandbox_id}")
        (self._dir(sandbox_id) / "root" / "etc" / "hostname").write_text(hostname + "\n")

    async def _signal(self, sandbox_id: str, sig: signal.Signals) -> None:
        info = await self.get(sandbox_id)
        if info is None or info.pid is None:
            raise SandboxMissing(f"no sandbox {sandbox_id} on this host")
        os.killpg(info.pid, sig)

    async def pause(self, sandbox_id: str) -> None:
        await self._signal(sandbox_id, signal.SIGSTOP)
        for _ in range(200):
            if _stopped(self._pid(sandbox_id) or 0):
                return
            await asyncio.sleep(0.005)

    async def resume(self, sandbox_id: str) -> None:
        await self._signal(sandbox_id, signal.SIGCONT)

    @asynccontextmanager
    async def capture_layer(
        self, sandbox_id: str, *, quiesced: bool = False
    ) -> AsyncIterator[CapturedLayer]:
        """A copy of the sandbox's root directory (everything it wrote), taken while its
        processes are stopped (as pause does). The fake has no image under its root: its
        layer stands alone (``lowers`` is empty), and its sandboxes start empty whatever
        image they name, so a snapshot taken here holds the files but a fake sandbox made
        from it does not show them."""
        info = await self.get(sandbox_id)
        if info is None or info.state == RuntimeState.STOPPED:
            raise SandboxMissing(f"no sandbox {sandbox_id}")
        copy = self._dir(sandbox_id) / f".snapshot-{os.getpid()}"
        running = info.state == RuntimeState.RUNNING
        started = time.monotonic()
        if running:
            await self.pause(sandbox_id)
        try:
            await asyncio.to_thread(copy.mkdir)
            await run("cp", "-a", str(self._dir(sandbox_id) / "root"), str(copy / "upper"))
        finally:
            if running:
                await self.resume(sandbox_id)
        frozen_ms = (time.monotonic() - started) * 1000 if running else 0.0
        try:
            yield CapturedLayer(upper=copy / "upper", lowers=[], frozen_ms=frozen_ms)
        finally:
            await asyncio.to_thread(shutil.rmtree, copy, True)

    async def resize_disk(self, sandbox_id: str, disk_mib: int) -> None:
        current = await self.disk_mib(sandbox_id)
        if disk_mib <= current:
            raise DriverError(f"the disk of {sandbox_id} has {current} MiB already; it only grows")
        (self._dir(sandbox_id) / "disk_mib").write_text(str(disk_mib))

    async def disk_mib(self, sandbox_id: str) -> int:
        """The fake keeps no disk of its own (its sandboxes write to the host); it keeps the
        size it was given and grown to, so the service around it behaves as with runc."""
        pid = self._pid(sandbox_id)
        if pid is None or not _alive(pid):
            raise SandboxMissing(f"no sandbox {sandbox_id}")
        return int((self._dir(sandbox_id) / "disk_mib").read_text())

    async def open_port(
        self, sandbox_id: str, port: int, *, own_address: str | None = None
    ) -> socket.socket:
        # Fake sandboxes share the host's network: their ports are the host's.
        if self._pid(sandbox_id) is None:
            raise SandboxMissing(f"no sandbox {sandbox_id} on this host")
        return await connect_port(None, ["127.0.0.1"], port)

    async def cleanup(self, keep: set[str]) -> list[str]:
        removed = []
        for info in await self.list_sandboxes():
            if info.id not in keep:
                await self.destroy(info.id)
                removed.append(info.id)
        if not keep:
            with contextlib.suppress(OSError):
                self.sockets.rmdir()
        return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    return not _zombie(pid)


def _runs_agent_of(pid: int, directory: Path) -> bool:
    """Whether ``pid`` is the agent :meth:`FakeDriver._start` started for the sandbox at
    ``directory`` (its command line names the sandbox's root)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.fsencode(directory / "root") in argv


def _proc_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def _zombie(pid: int) -> bool:
    return _proc_state(pid) in ("Z", "X", "")


def _stopped(pid: int) -> bool:
    return _proc_state(pid) == "T"
