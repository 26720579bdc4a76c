"""The gvisor driver's start path (:class:`GvisorBase`; hibernate, wake and fork are in
:mod:`hutch.host.drivers.gvisor`): each sandbox a gVisor sandbox run by ``runsc``
(Debian's by default).

A sandbox's programs run on gVisor's own kernel (the Sentry, in user space on the
``ptrace`` platform here, or ``systrap``/``kvm`` where the operator's runsc has them), so a
kernel bug on the host is no longer one system call away. Everything around the sandbox is
the runc driver's, reused: the disk (:mod:`hutch.host.storage`), the network namespace and
its veth link (:mod:`hutch.host.link`), the firewall and the egress rules on the host's end
of the link, the cgroup limits of its shape.

What differs, and why:

- **Networking.** runsc ``--network=sandbox`` runs inside the sandbox's namespace and takes
  its interfaces over: at start it reads their addresses and routes and removes them from
  the host kernel (gVisor's netstack answers instead, through a packet socket on the veth).
  So interfaces must be there before the start (private networks are joined at create,
  not later), and before every later start the driver puts back the addresses it recorded
  (``addresses.json``). The Debian runsc of 2022 refuses to start when
  ``/proc/sys/net/core/rmem_default`` exists in the namespace, which kernels since 6.x show
  in every namespace (gVisor issue 10704); the driver detects that and runs ``runsc run``
  and ``restore`` in a mount namespace of their own where ``/proc/sys/net`` is hidden.
- **The guest agent's socket.** runsc passes no extra descriptors, so the agent binds its
  unix socket itself in a directory of the host bind-mounted at ``/.hutch/run``
  (``--host-uds=create``): the host connects to ``/run/hutch/<tag>/<id>/agent.sock``.
- **Hibernate, wake, fork**: :mod:`hutch.host.drivers.gvisor`.
- **Names.** ``rename`` rewrites ``/etc/hostname`` and ``/etc/hosts`` at once; the kernel's
  hostname is set with ``runsc exec`` (at once when running, at the next start otherwise).
- **Ports.** Servers inside listen on gVisor's own loopback, which the host cannot reach:
  :meth:`open_port` connects to the sandbox's address on its link only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from hutch.host.drivers.base import (
    DriverCapabilities,
    DriverError,
    RuntimeInfo,
    RuntimeState,
    SandboxMissing,
    SandboxSpec,
)
from hutch.host.drivers.gvisor_features import (
    _STATX_FIXED,
    PLATFORMS,
    GvisorFeatures,
    _build_statx_shim,
    _build_sysview,
    detect_features,
)
from hutch.host.drivers.gvisor_host import (
    _HIDE_SYS_NET,
    _alive,
    _apply_cpu_quota,
    _hold_cpu_quota,
    _link_address,
    _record_link,
    _restore_addresses,
    _write_names_in_place,
)
from hutch.host.drivers.oci import GUEST_PARENT
from hutch.host.drivers.runc import RuncDriver, _tail
from hutch.host.guest import GuestClient
from hutch.host.link import SandboxLink
from hutch.host.ports import connect_port
from hutch.host.proc import CommandFailed, run
from hutch.host.storage import SandboxRootfs

__all__ = ["GUEST_RUN", "GvisorBase"]

log = logging.getLogger("hutch.host.drivers.gvisor")

GUEST_RUN = f"{GUEST_PARENT}/run"  # the host directory holding the agent's socket


class GvisorBase(RuncDriver):
    capabilities = DriverCapabilities(name="gvisor", isolated=True, disk_limit=True,
                                      memory_limit=True, hibernate=True,
                                      live_networks=False)  # fmt: skip

    def __init__(
        self, home: Path, *, images: Path, runsc: str = "runsc", platform: str = "ptrace"
    ) -> None:
        super().__init__(home, images=images, runc=runsc)
        if platform not in PLATFORMS:
            raise DriverError(
                f"unknown gVisor platform {platform!r}; one of {', '.join(PLATFORMS)}"
            )
        self.platform = platform
        self.runc_root = home / "runsc"
        self.features: GvisorFeatures | None = None
        self._deleting: dict[str, asyncio.Task[None]] = {}
        self.statx_shim: Path | None = None
        self.sysview: Path | None = None
        self._tools_wanted = False
        self._tools_lock = asyncio.Lock()

    async def prepare(self, *, dns_port: int | None = None) -> None:
        """Check runsc and what it can do; make the directories. The firewall is the runc
        driver's (the two share the host's side of every link): it is not installed here."""
        self.features = await detect_features(self.runc)
        if self.platform not in self.features.platforms:
            raise DriverError(
                f"{self.features.version} has no {self.platform!r} platform "
                f"(it has {', '.join(self.features.platforms)}); set HUTCH_GVISOR_PLATFORM"
            )
        self.sandboxes.mkdir(parents=True, exist_ok=True)
        self.runc_root.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The statx shim and hutch-sysview are compiled when this driver's first sandbox
        # starts (_tools), not here: about a second each of every start of a home, and
        # most homes never run a gvisor sandbox.
        self._tools_wanted = True

    async def _tools(self) -> None:
        """Build what runsc needs on this host besides itself, once per driver (a failed
        build warns once, as before): before the first bundle that mounts the statx shim
        and the first run or restore that starts under hutch-sysview."""
        if not self._tools_wanted:
            return
        async with self._tools_lock:
            if not self._tools_wanted or self.features is None:
                return
            if self.features.date is not None and self.features.date < _STATX_FIXED:
                self.statx_shim = await _build_statx_shim(self.home / "gvisor")
            if self.features.hide_sys_net:
                self.sysview = await _build_sysview(self.home / "gvisor")
            self._tools_wanted = False

    def _runc(self, *args: str) -> tuple[str, ...]:
        flags = ["--root", str(self.runc_root), f"--platform={self.platform}",
                 "--network=sandbox", "--host-uds=create"]  # fmt: skip
        if self.features is not None and "oci-seccomp" in self.features.flags:
            flags.append("--oci-seccomp")
        if self.features is not None and "overlay2" in self.features.flags:
            flags.append("--overlay2=none")  # writes go to the sandbox's own disk
        return (self.runc, *flags, *args)

    def _networked(self, *args: str) -> tuple[str, ...]:
        """A runsc command that sets up a sandbox's network (run, restore)."""
        command = self._runc(*args)
        if self.features is None or not self.features.hide_sys_net:
            return command
        view = self.sockets / ".sysctl"
        view.mkdir(exist_ok=True)
        if self.sysview is not None:
            return (str(self.sysview), str(view), *command)
        return ("unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                _HIDE_SYS_NET, "sh", str(view), *command)  # fmt: skip

    def agent_socket(self, sandbox_id: str) -> Path:
        return self.sockets / sandbox_id / "agent.sock"

    def guest(self, sandbox_id: str) -> GuestClient:
        return GuestClient(self.agent_socket(sandbox_id), nofollow=True)

    # -- start --------------------------------------------------------------------------

    async def _bundle(
        self, spec: SandboxSpec, directory: Path, disk: SandboxRootfs, link: SandboxLink
    ) -> dict[str, Any]:
        config = await super()._bundle(spec, directory, disk, link)
        run_dir = self.agent_socket(spec.id).parent
        args = list(config["process"]["args"])
        at = args.index("--listen-fd")  # no descriptor is passed: the agent binds a socket
        args[at : at + 2] = ["--socket", f"{GUEST_RUN}/agent.sock"]
        config["process"]["args"] = args
        mounts = [m for m in config["mounts"] if m["destination"] not in ("/sys/fs/cgroup",)]
        mounts.append({"destination": GUEST_RUN, "type": "bind", "source": str(run_dir),
                       "options": ["rbind", "rw", "nosuid", "nodev", "noexec"]})  # fmt: skip
        await self._tools()
        if self.statx_shim is not None:
            mounts += [
                {"destination": f"{GUEST_PARENT}/statx.so", "type": "bind",
                 "source": str(self.statx_shim), "options": ["bind", "ro"]},
                {"destination": "/etc/ld.so.preload", "type": "bind",
                 "source": str(self.statx_shim.with_suffix(".preload")), "options": ["bind", "ro"]},
            ]  # fmt: skip
        config["mounts"] = mounts
        # runc's profile, enforced inside gVisor's kernel (--oci-seccomp), so a sandbox
        # may do the same things on either runtime. Debian's runsc answers every ERRNO rule
        # with EPERM; clone3 must be ENOSYS (glibc then uses clone), which TRACE gives when
        # no tracer is attached.
        profile = config["linux"].get("seccomp")
        if profile is not None:
            for rule in profile["syscalls"]:
                if rule.get("names") == ["clone3"]:
                    rule["action"] = "SCMP_ACT_TRACE"
                    rule.pop("errnoRet", None)
        config["annotations"] = {"dev.hutch.runtime": "gvisor"}
        _hold_cpu_quota(config)  # applied once runsc has started it (_cpu_quota)
        return config

    async def _launch(self, spec: SandboxSpec, directory: Path) -> RuntimeInfo:
        await self._before_start(spec, directory)
        log_path = directory / "console.log"
        command = self._networked("run", "--detach", "--pid-file", str(directory / "init.pid"),
                                  "--bundle", str(directory), spec.id)  # fmt: skip
        await self._run_runsc(command, log_path, "start")
        await self._limited(spec.id, directory)
        await self._wait_for_agent(spec.id)
        return await self._started(spec.id, directory)

    async def _cpu_quota(self, sandbox_id: str, directory: Path) -> None:
        """The shape's CPU quota on the sandbox's cgroup, now that runsc's own work (a
        start, a restore) is done: runsc is not given it (see
        :func:`~hutch.host.drivers.gvisor_host._hold_cpu_quota`). Not put on: a
        :class:`DriverError` (the caller removes what runsc started: a sandbox must not
        run without its shape's limit)."""
        try:
            applied = await asyncio.to_thread(
                _apply_cpu_quota, self.cgroup_parent, sandbox_id, directory
            )
        except OSError as exc:
            log.error("%s: its CPU quota could not be set: %s", sandbox_id, exc)
            raise DriverError(
                f"the sandbox's CPU quota could not be set on its cgroup: {exc}"
            ) from exc
        if not applied:  # an older bundle (runsc set it), or no cgroup
            log.debug("%s: no CPU quota held in its bundle, or no cgroup", sandbox_id)

    async def _limited(self, sandbox_id: str, directory: Path) -> None:
        """:meth:`_cpu_quota` on a sandbox runsc has just started or restored; when it
        cannot be put on, that sandbox is stopped at once (then the error is raised)."""
        try:
            await self._cpu_quota(sandbox_id, directory)
        except DriverError:
            await asyncio.shield(run(*self._runc("delete", "--force", sandbox_id), check=False))
            raise

    async def _before_start(
        self, spec: SandboxSpec, directory: Path, *, made: bool = False
    ) -> None:
        """What every start and restore needs first. ``made``: the sandbox's link was
        made just now, its addresses in place (none to put back), and the recorded ones
        are written unless there are some (a new sandbox's: they are its link's)."""
        run_dir = self.agent_socket(spec.id).parent
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in run_dir.iterdir():
            with contextlib.suppress(OSError):
                stale.unlink()
        (directory / "runtime").write_text("gvisor\n")
        pending = self._deleting.pop(spec.id, None)
        if pending is not None:
            with contextlib.suppress(Exception):
                await pending
        link = SandboxLink(tag=self.tag, sandbox_id=spec.id)
        if not made:
            await _restore_addresses(link.netns, directory / "addresses.json")
        elif spec.on_link is None and not (directory / "addresses.json").exists():
            # eth0 alone (none of a private network): what _restore_addresses would read
            await asyncio.to_thread(_record_link, directory / "addresses.json", spec)
        if await asyncio.to_thread(self._state_file(spec.id).exists):  # a stopped one's
            await run(*self._runc("delete", "--force", spec.id), check=False)

    async def _run_runsc(self, command: tuple[str, ...], log_path: Path, what: str) -> None:
        console = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=console, stderr=console
            )
            async with asyncio.timeout(60):
                returncode = await proc.wait()
        finally:
            os.close(console)
        if returncode != 0:
            raise DriverError(f"runsc could not {what} the sandbox: {_tail(log_path, 600)}")

    async def _started(self, sandbox_id: str, directory: Path) -> RuntimeInfo:
        await self._pending_hostname(sandbox_id, directory)
        pid = int((directory / "init.pid").read_text())
        return RuntimeInfo(id=sandbox_id, state=RuntimeState.RUNNING, pid=pid)

    async def _pending_hostname(self, sandbox_id: str, directory: Path) -> None:
        """Set the hostname a rename (while stopped) or a fork left to be set."""
        pending = directory / "hostname.pending"
        if await asyncio.to_thread(pending.exists):
            await self.set_hostname(sandbox_id, pending.read_text().strip())
            pending.unlink()

    def _state_file(self, sandbox_id: str) -> Path:
        """Where runsc keeps what it knows of a sandbox (its ``state`` reads this)."""
        return self.runc_root / f"{sandbox_id}_sandbox:{sandbox_id}.state"

    async def get(self, sandbox_id: str) -> RuntimeInfo | None:
        """The sandbox's state from runsc's state file, as ``runsc state`` reads it (a
        sandbox whose process is gone is stopped) without starting runsc (50-70 ms on a
        busy host, before every pause, resume and hibernate); ``runsc state`` if the file
        cannot be read. One this driver checkpointed is stopped at once (runsc asks the
        Sentry, which no longer answers while its process takes a second or two to go)."""
        if sandbox_id in self._deleting:  # checkpointed: its Sentry is on its way out
            return RuntimeInfo(id=sandbox_id, state=RuntimeState.STOPPED, pid=None)
        try:
            saved = json.loads(await asyncio.to_thread(self._state_file(sandbox_id).read_text))
            status, pid = str(saved["status"]), int(saved["sandbox"]["pid"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return await super().get(sandbox_id)
        if status in ("running", "paused") and not _alive(pid):
            status = "stopped"
        state = {"running": RuntimeState.RUNNING, "paused": RuntimeState.PAUSED}.get(
            status, RuntimeState.STOPPED
        )
        return RuntimeInfo(id=sandbox_id, state=state, pid=pid if pid > 0 else None)

    async def destroy(self, sandbox_id: str) -> None:
        pending = self._deleting.pop(sandbox_id, None)
        if pending is not None:
            with contextlib.suppress(Exception):
                await pending
        await super().destroy(sandbox_id)
        run_dir = self.agent_socket(sandbox_id).parent
        if run_dir.is_dir():
            await asyncio.to_thread(shutil.rmtree, run_dir, True)

    async def cleanup(self, keep: set[str]) -> list[str]:
        """Remove this runtime's sandboxes not in ``keep`` (the runc driver's cleanup does
        the shared rest: netns, disks and cgroups of any sandbox)."""
        found = {info.id for info in await self.list_sandboxes()}
        if self.sandboxes.is_dir():
            found |= {d.name for d in self.sandboxes.iterdir() if (d / "runtime").exists()}
        if self.sockets.is_dir():
            found |= {d.name for d in self.sockets.iterdir()
                      if d.is_dir() and d.name.startswith("sb_")}  # fmt: skip
        for sandbox_id in sorted(found - keep):
            await self.destroy(sandbox_id)
        # A sandbox started (or restored) just before the host agent was killed may not
        # have its CPU quota yet: the kept running ones get it again (the same value).
        for info in await self.list_sandboxes():
            if info.id in keep and info.state != RuntimeState.STOPPED:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(
                        _apply_cpu_quota, self.cgroup_parent, info.id, self._dir(info.id)
                    )
        return sorted(found - keep)

    # -- names, ports -------------------------------------------------------------------

    async def rename(self, sandbox_id: str, hostname: str) -> None:
        info = await self.get(sandbox_id)
        if info is None or info.state == RuntimeState.STOPPED:
            raise SandboxMissing(f"no running sandbox {sandbox_id} on this host")
        directory = self._dir(sandbox_id)
        etc = directory / "etc"
        try:
            address = (etc / "hosts").read_text().splitlines()[-1].split()[0]
            _write_names_in_place(etc, hostname, address)
        except (OSError, IndexError) as exc:
            raise DriverError(f"cannot rewrite the names of {sandbox_id}: {exc}") from exc
        if info.state == RuntimeState.PAUSED:
            (directory / "hostname.pending").write_text(hostname + "\n")
            return
        await self.set_hostname(sandbox_id, hostname)

    def set_names(self, sandbox_id: str, hostname: str, address: str) -> None:
        _write_names_in_place(self._dir(sandbox_id) / "etc", hostname, address)

    async def set_hostname(self, sandbox_id: str, hostname: str) -> None:
        """The kernel's hostname, gVisor's own: set inside with ``runsc exec``."""
        try:
            await run(*self._runc("exec", "--cap", "CAP_SYS_ADMIN", sandbox_id,
                                  "/bin/hostname", hostname))  # fmt: skip
        except CommandFailed as exc:
            raise DriverError(f"cannot set the hostname of {sandbox_id}: {exc.detail}") from exc

    async def resume(self, sandbox_id: str) -> None:
        await super().resume(sandbox_id)
        await self._pending_hostname(sandbox_id, self._dir(sandbox_id))

    async def open_port(
        self, sandbox_id: str, port: int, *, own_address: str | None = None
    ) -> socket.socket:
        # gVisor's loopback is inside its own kernel: only the sandbox's address is
        # reachable, from the host's end of its link.
        if await self.get(sandbox_id) is None:
            raise SandboxMissing(f"no running sandbox {sandbox_id} on this host")
        address = own_address or _link_address(self._dir(sandbox_id))
        return await connect_port(None, [address], port)
