"""The runc driver: each sandbox an OCI container run by Debian's runc.

Per sandbox, under ``$HUTCH_HOME/sandboxes/<id>/``: ``disk.img`` (its writable layer),
``layer/`` and ``rootfs/`` (mounts), ``etc/`` (hosts, hostname, resolv.conf),
``config.json`` (the bundle). The guest agent's socket is ``/run/hutch/<tag>/<id>.sock``:
the host makes and binds it itself and hands the listening descriptor to the container,
so the path the host connects to is out of the sandbox's reach.

runc's own state lives in ``$HUTCH_HOME/runc``; cgroups under ``/hutch-<tag>/``; network
namespaces are ``hutch-<tag>-<id>``. ``<tag>`` is derived from the home directory, so two
hutch instances on one machine never touch each other's sandboxes.
"""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import resource
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import hutch.guest
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
from hutch.host.drivers.oci import AGENT_FD, oci_config, process_env
from hutch.host.firewall import Firewall
from hutch.host.guest import GuestUnreachable
from hutch.host.guest_runtime import build_runtime, has_python, runtime_argv
from hutch.host.image_config import image_config
from hutch.host.layers import ResolvedImage, resolve_image
from hutch.host.link import SandboxLink, host_interface, list_netns
from hutch.host.networks import BridgeNetworks
from hutch.host.ports import connect_port
from hutch.host.proc import CommandFailed, run
from hutch.host.snapshot import (
    CapturedLayer,
    SnapshotError,
    SnapshotStats,
    capture_layer,
    snapshot_rootfs,
    sweep_copies,
)
from hutch.host.storage import LayerCannotGrow, SandboxRootfs, mounts_under, remove_tree
from hutch.host.usage import UsageSources
from hutch.host.uts import set_hostname

__all__ = ["RuncDriver", "instance_tag"]

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
Freeze = Callable[[], Awaitable[None]]
AGENT_START_TIMEOUT_S = 15.0


def instance_tag(home: Path) -> str:
    return hashlib.sha256(str(home).encode()).hexdigest()[:6]


class RuncDriver(Driver):
    capabilities = DriverCapabilities(name="runc", isolated=True, disk_limit=True,
                                      memory_limit=True)  # fmt: skip

    def __init__(self, home: Path, *, images: Path, runc: str = "runc") -> None:
        self.home = home
        self.images = images
        self.tag = instance_tag(home)
        self.sandboxes = home / "sandboxes"
        self.runc_root = home / "runc"
        self.templates = home / "cache" / "disks"
        self.cgroup_parent = f"/hutch-{self.tag}"
        self.sockets = socket_dir(self.tag)
        self.runc = runc
        self.firewall = Firewall(tag=self.tag)
        self.guest_dir = Path(hutch.guest.__file__).parent
        self._memsw = (CGROUP_ROOT / "memory" / "memory.memsw.limit_in_bytes").exists()
        self._nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1 << 20)

    async def prepare(self, *, dns_port: int | None = None) -> None:
        """Install the firewall (sending sandboxes' DNS queries to ``dns_port``) and check
        that runc answers. Call once at start."""
        self.firewall.dns_port = dns_port
        self.sandboxes.mkdir(parents=True, exist_ok=True)
        self.runc_root.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(parents=True, exist_ok=True, mode=0o700)
        await self.firewall.install()
        await run(self.runc, "--version")
        # Copies of writable layers that a snapshot cut off by a crash left behind.
        await sweep_copies(self.sandboxes)
        # Sandboxes run Debian 12's Python 3.11; a .pyc made by any 3.11 serves them.
        if sys.version_info[:2] == (3, 11):
            await asyncio.to_thread(compileall.compile_dir, self.guest_dir, quiet=1)

    def _dir(self, sandbox_id: str) -> Path:
        return self.sandboxes / sandbox_id

    def agent_socket(self, sandbox_id: str) -> Path:
        return self.sockets / f"{sandbox_id}.sock"

    def usage_sources(self, sandbox_id: str) -> UsageSources | None:
        return UsageSources(
            cgroup=f"{self.cgroup_parent.lstrip('/')}/{sandbox_id}",
            disk=SandboxRootfs(self._dir(sandbox_id), templates=self.templates).layer,
            host_if=host_interface(self.tag, sandbox_id),
        )

    def _runc(self, *args: str) -> tuple[str, ...]:
        return (self.runc, "--root", str(self.runc_root), *args)

    # -- create / destroy ---------------------------------------------------------------

    def _image(self, spec: SandboxSpec) -> tuple[ResolvedImage, SandboxSpec]:
        """The image of ``spec`` (a catalog image or a template's), and ``spec`` with the
        image's environment under its own."""
        image = resolve_image(self.home, self.images, spec.rootfs)
        if image is None:
            raise DriverError(f"rootfs {spec.rootfs!r} is not built on this host")
        return image, dataclasses.replace(spec, env={**image.env, **spec.env})

    def process_env(self, spec: SandboxSpec) -> dict[str, str]:
        """The environment ``spec``'s init gets at create (its commands start with it)."""
        _, spec = self._image(spec)
        config = image_config(self.images, spec.rootfs)
        return process_env(spec, config.env if config else None)

    def writable_layer(self, sandbox_id: str) -> Path:
        """The host directory of a sandbox's own changes (overlayfs's upper): what a
        template build step or a snapshot copies into a layer. Freeze or stop the
        sandbox first for a consistent copy."""
        return SandboxRootfs(self._dir(sandbox_id), templates=self.templates).upper()

    async def create(self, spec: SandboxSpec) -> RuntimeInfo:
        image, spec = self._image(spec)
        directory = self._dir(spec.id)
        try:
            directory.mkdir(parents=True)
        except FileExistsError:
            raise DriverError(f"sandbox {spec.id} already exists on this host") from None
        try:
            return await self._create(spec, directory, image)
        except BaseException as exc:
            await asyncio.shield(self.destroy(spec.id))
            if isinstance(exc, CommandFailed):
                raise DriverError(f"{exc.argv[0]} failed: {exc.detail}") from exc
            raise

    async def _create(
        self, spec: SandboxSpec, directory: Path, image: ResolvedImage
    ) -> RuntimeInfo:
        disk = SandboxRootfs(directory, templates=self.templates)
        link = SandboxLink(tag=self.tag, sandbox_id=spec.id)
        await asyncio.gather(disk.create(image=image.lowers, disk_mib=spec.disk_mib),
                             link.create(spec.link))  # fmt: skip
        # Where work goes by convention (the Nullspace examples `cd /workspace`).
        (disk.rootfs / "workspace").mkdir(exist_ok=True)
        (directory / "etc").mkdir()
        if spec.on_link is not None:
            await spec.on_link()
        return await self._start(spec, directory, disk, link)

    async def fork(
        self, source_id: str, spec: SandboxSpec, snapshot: Path | None = None
    ) -> RuntimeInfo:
        """A copy of the source's disk, started fresh (runc keeps no memory image; a
        ``snapshot`` is refused)."""
        if snapshot is not None:
            raise DriverError("the runc runtime cannot start a sandbox from a memory snapshot")
        return await self._fork(source_id, spec, self._start)

    async def _fork(
        self,
        source_id: str,
        spec: SandboxSpec,
        start: Callable[[SandboxSpec, Path, SandboxRootfs, SandboxLink], Awaitable[RuntimeInfo]],
    ) -> RuntimeInfo:
        """Copy the disk of ``source_id`` into a new sandbox ``spec`` and ``start`` it."""
        image, spec = self._image(spec)
        source = SandboxRootfs(self._dir(source_id), templates=self.templates)
        if not source.disk.exists():
            raise SandboxMissing(f"nothing of sandbox {source_id} is left on this host")
        directory = self._dir(spec.id)
        try:
            directory.mkdir(parents=True)
        except FileExistsError:
            raise DriverError(f"sandbox {spec.id} already exists on this host") from None
        try:
            disk = SandboxRootfs(directory, templates=self.templates)
            link = SandboxLink(tag=self.tag, sandbox_id=spec.id)
            await asyncio.gather(disk.copy_from(source, image=image.lowers),
                                 link.create(spec.link))  # fmt: skip
            (directory / "etc").mkdir()
            if spec.on_link is not None:
                await spec.on_link()
            return await start(spec, directory, disk, link)
        except BaseException as exc:
            await asyncio.shield(self.destroy(spec.id))
            if isinstance(exc, CommandFailed):
                raise DriverError(f"{exc.argv[0]} failed: {exc.detail}") from exc
            raise

    async def _start(
        self, spec: SandboxSpec, directory: Path, disk: SandboxRootfs, link: SandboxLink
    ) -> RuntimeInfo:
        """Write the sandbox's names and OCI config, run its init, wait for its agent."""
        etc = directory / "etc"
        _write_names(etc, spec.hostname, str(spec.link.sandbox))
        # hutch's DNS server answers here with the sandbox's peers in private networks.
        (etc / "resolv.conf").write_text(
            f"nameserver {spec.link.host}\noptions timeout:1 attempts:2\n"
        )
        bundle = await self._bundle(spec, directory, disk, link)
        (directory / "config.json").write_text(json.dumps(bundle))
        return await self._launch(spec, directory)

    async def _bundle(
        self, spec: SandboxSpec, directory: Path, disk: SandboxRootfs, link: SandboxLink
    ) -> dict[str, Any]:
        """The sandbox's OCI config (``config.json``)."""
        guest_python: tuple[str, ...] = ("/usr/bin/python3",)
        runtime_dir: Path | None = None
        if not await asyncio.to_thread(has_python, disk.rootfs):
            runtime_dir, loader = await asyncio.to_thread(build_runtime, self.home)
            guest_python = tuple(runtime_argv(loader))
        return oci_config(
            spec,
            rootfs=disk.rootfs,
            netns=link.netns_path,
            guest_dir=self.guest_dir,
            etc_dir=directory / "etc",
            cgroup_parent=self.cgroup_parent,
            memsw=self._memsw,
            nofile=self._nofile,
            image_env=config.env if (config := image_config(self.images, spec.rootfs)) else None,
            guest_python=guest_python,
            runtime_dir=runtime_dir,
        )

    async def _launch(self, spec: SandboxSpec, directory: Path) -> RuntimeInfo:
        """Run the bundle's init and wait for its agent."""
        with contextlib.suppress(FileNotFoundError):
            self.agent_socket(spec.id).unlink()  # a dead init's socket, on a restart
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.agent_socket(spec.id)))
            listener.listen(128)
            await self._run_container(spec.id, directory, listener)
        finally:
            listener.close()  # the container holds its own copy
        await self._wait_for_agent(spec.id)
        pid = int((directory / "init.pid").read_text())
        return RuntimeInfo(id=spec.id, state=RuntimeState.RUNNING, pid=pid)

    async def restart(self, spec: SandboxSpec) -> RuntimeInfo:
        directory = self._dir(spec.id)
        disk = SandboxRootfs(directory, templates=self.templates)
        if not disk.disk.exists() or not (directory / "etc").is_dir():
            raise SandboxMissing(f"nothing of sandbox {spec.id} is left on this host")
        # Whatever is left of the old init (stopped, or frozen by a failed pause) goes.
        await run(*self._runc("delete", "--force", spec.id), check=False)
        await asyncio.to_thread(self._remove_cgroups, {spec.id})
        link = SandboxLink(tag=self.tag, sandbox_id=spec.id)
        image, spec = self._image(spec)
        try:
            if not await asyncio.to_thread(disk.mounted):
                await disk.mount(image=image.lowers)
            if not link.netns_path.exists():
                await link.create(spec.link)
                if spec.on_link is not None:  # its private networks, on the new namespace
                    await spec.on_link()
            return await self._start(spec, directory, disk, link)
        except CommandFailed as exc:
            raise DriverError(f"{exc.argv[0]} failed: {exc.detail}") from exc

    async def _run_container(self, sandbox_id: str, bundle: Path, listener: socket.socket) -> None:
        # runc passes descriptors 3..3+N-1 on; the shell puts the listener (its stdin) at 3.
        # runc's stdio becomes the container's, so both go to a file: a pipe would stay
        # open as long as the sandbox lives.
        log = bundle / "console.log"
        console = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            command = self._runc(
                "run", "--detach", "--preserve-fds", "1",
                "--pid-file", str(bundle / "init.pid"), "--bundle", str(bundle), sandbox_id,
            )  # fmt: skip
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", f'exec "$@" {AGENT_FD}<&0 0</dev/null', "sh", *command,
                stdin=listener.fileno(),
                stdout=console,
                stderr=console,
            )  # fmt: skip
            async with asyncio.timeout(60):
                returncode = await proc.wait()
        finally:
            os.close(console)
        if returncode != 0:
            raise DriverError(f"runc could not start the sandbox: {_tail(log, 600)}")

    async def _wait_for_agent(self, sandbox_id: str) -> None:
        guest = self.guest(sandbox_id)
        deadline = time.monotonic() + AGENT_START_TIMEOUT_S
        while True:
            try:
                await guest.ping(timeout_s=max(0.1, deadline - time.monotonic()))
                return
            except GuestUnreachable as exc:
                if time.monotonic() >= deadline:
                    log_tail = _tail(self._dir(sandbox_id) / "console.log")
                    raise DriverError(f"the guest agent did not start: {log_tail or exc}") from exc
                await asyncio.sleep(0.01)

    async def destroy(self, sandbox_id: str) -> None:
        await run(*self._runc("delete", "--force", sandbox_id), check=False)
        await SandboxLink(tag=self.tag, sandbox_id=sandbox_id).remove()
        directory = self._dir(sandbox_id)
        if directory.exists():
            await SandboxRootfs(directory, templates=self.templates).remove()
            try:
                await asyncio.to_thread(remove_tree, directory)
            except OSError as exc:
                raise DriverError(f"cannot remove {directory}: {exc}") from exc
        await asyncio.to_thread(self._remove_cgroups, {sandbox_id})
        with contextlib.suppress(FileNotFoundError):
            self.agent_socket(sandbox_id).unlink()

    # -- state ------------------------------------------------------------------------

    async def get(self, sandbox_id: str) -> RuntimeInfo | None:
        result = await run(*self._runc("state", sandbox_id), check=False)
        if result.returncode != 0:
            return None
        return _runtime_info(json.loads(result.stdout))

    async def list_sandboxes(self) -> list[RuntimeInfo]:
        result = await run(*self._runc("list", "--format", "json"))
        return [_runtime_info(entry) for entry in json.loads(result.stdout or b"null") or []]

    async def pause(self, sandbox_id: str) -> None:
        await self._state_change("pause", sandbox_id, only_from=RuntimeState.RUNNING)

    async def resume(self, sandbox_id: str) -> None:
        await self._state_change("resume", sandbox_id, only_from=RuntimeState.PAUSED)

    async def _state_change(self, verb: str, sandbox_id: str, *, only_from: RuntimeState) -> None:
        """``runc pause``/``resume``, unless the sandbox is already where it would go."""
        info = await self.get(sandbox_id)
        if info is None or info.state == RuntimeState.STOPPED:
            raise SandboxMissing(f"no running sandbox {sandbox_id} on this host")
        if info.state != only_from:
            return
        try:
            await run(*self._runc(verb, sandbox_id))
        except CommandFailed as exc:
            raise DriverError(f"runc {verb} failed: {exc.detail}") from exc

    async def rename(self, sandbox_id: str, hostname: str) -> None:
        info = await self.get(sandbox_id)
        if info is None or info.pid is None or info.state == RuntimeState.STOPPED:
            raise SandboxMissing(f"no running sandbox {sandbox_id} on this host")
        etc = self._dir(sandbox_id) / "etc"
        try:
            address = (etc / "hosts").read_text().splitlines()[-1].split()[0]
            # The files are bind-mounted into the sandbox: rewrite them in place.
            _write_names(etc, hostname, address)
        except (OSError, IndexError) as exc:
            raise DriverError(f"cannot rewrite the names of {sandbox_id}: {exc}") from exc
        # sethostname() inside the sandbox's UTS namespace; the sandbox itself lacks
        # CAP_SYS_ADMIN, so the host does it (hutch.host.uts: no process started).
        try:
            await set_hostname(info.pid, hostname)
        except OSError as exc:
            raise DriverError(f"cannot set the hostname of {sandbox_id}: {exc}") from exc

    def set_names(self, sandbox_id: str, hostname: str, address: str) -> None:
        """Rewrite the sandbox's ``/etc/hostname`` and ``/etc/hosts`` (bind-mounted into
        it: rewritten in place). Raises :class:`OSError`."""
        _write_names(self._dir(sandbox_id) / "etc", hostname, address)

    def init_processes(self, sandbox_id: str) -> set[int] | None:
        """Every process in the sandbox's cgroup (its init and all it started), or None
        when its cgroup is not there."""
        for directory in self._cgroup_dirs():
            try:
                text = (directory / sandbox_id / "cgroup.procs").read_text()
            except OSError:
                continue
            return {int(line) for line in text.split()}
        return None

    def directory_of(self, sandbox_id: str) -> Path:
        """The sandbox's directory on the host (its disk, bundle and names)."""
        return self._dir(sandbox_id)

    async def resize_disk(self, sandbox_id: str, disk_mib: int) -> None:
        disk = await self._disk_of(sandbox_id)
        try:
            await disk.grow(disk_mib)
        except LayerCannotGrow as exc:
            raise DriverError(f"the disk of {sandbox_id} was not grown: {exc}") from exc

    async def disk_mib(self, sandbox_id: str) -> int:
        return (await self._disk_of(sandbox_id)).size_mib()

    async def _disk_of(self, sandbox_id: str) -> SandboxRootfs:
        info = await self.get(sandbox_id)
        disk = SandboxRootfs(self._dir(sandbox_id), templates=self.templates)
        if info is None or info.state == RuntimeState.STOPPED or not disk.disk.exists():
            raise SandboxMissing(f"no running sandbox {sandbox_id} on this host")
        return disk

    async def snapshot(self, sandbox_id: str, build: Path) -> SnapshotStats:
        disk, freeze, thaw = await self._freezer(sandbox_id)
        try:
            return await snapshot_rootfs(disk, build, freeze=freeze, thaw=thaw)
        except (SnapshotError, CommandFailed) as exc:
            raise DriverError(f"the snapshot of {sandbox_id} failed: {exc}") from exc

    @asynccontextmanager
    async def capture_layer(
        self, sandbox_id: str, *, quiesced: bool = False
    ) -> AsyncIterator[CapturedLayer]:
        if quiesced:  # nothing writes: no runc state, pause and resume (3 processes)
            disk = SandboxRootfs(self._dir(sandbox_id), templates=self.templates)
            if not disk.disk.exists():
                raise SandboxMissing(f"no running sandbox {sandbox_id} on this host")
            freeze: Freeze | None = None
            thaw: Freeze | None = None
        else:
            disk, freeze, thaw = await self._freezer(sandbox_id)
        try:
            async with capture_layer(disk, freeze=freeze, thaw=thaw) as captured:
                yield captured
        except SnapshotError as exc:
            raise DriverError(f"the snapshot of {sandbox_id} failed: {exc}") from exc

    async def _freezer(self, sandbox_id: str) -> tuple[SandboxRootfs, Freeze | None, Freeze | None]:
        """The disk of a running or paused sandbox, and how to freeze and thaw it (None
        for both when it is paused: it stays as it is)."""
        info = await self.get(sandbox_id)
        disk = SandboxRootfs(self._dir(sandbox_id), templates=self.templates)
        if info is None or info.state == RuntimeState.STOPPED or not disk.disk.exists():
            raise SandboxMissing(f"no running sandbox {sandbox_id} on this host")
        if info.state != RuntimeState.RUNNING:
            return disk, None, None

        async def freeze() -> None:
            await run(*self._runc("pause", sandbox_id))

        async def thaw() -> None:
            # Never leave it frozen: a failed thaw is tried again before giving up.
            for attempt in range(3):
                try:
                    await run(*self._runc("resume", sandbox_id))
                    return
                except CommandFailed:
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.05)

        return disk, freeze, thaw

    async def open_port(
        self, sandbox_id: str, port: int, *, own_address: str | None = None
    ) -> socket.socket:
        link = SandboxLink(tag=self.tag, sandbox_id=sandbox_id)
        addresses = ["127.0.0.1", *([own_address] if own_address else [])]
        try:
            return await connect_port(link.netns_path, addresses, port)
        except FileNotFoundError:
            raise SandboxMissing(f"no running sandbox {sandbox_id} on this host") from None

    # -- recovery ---------------------------------------------------------------------

    async def cleanup(self, keep: set[str]) -> list[str]:
        found = {info.id for info in await self.list_sandboxes()} | set(list_netns(self.tag))
        if self.sandboxes.is_dir():
            found |= {directory.name for directory in self.sandboxes.iterdir()}
        found |= await asyncio.to_thread(self._cgroup_ids)
        # destroy() removes every piece of a sandbox and shrugs at the missing ones.
        for sandbox_id in sorted(found - keep):
            await self.destroy(sandbox_id)
        return sorted(found - keep)

    def _cgroup_dirs(self) -> list[Path]:
        parent = self.cgroup_parent.lstrip("/")
        if (CGROUP_ROOT / "cgroup.controllers").exists():  # cgroup v2
            return [CGROUP_ROOT / parent]
        return [path / parent for path in CGROUP_ROOT.iterdir() if (path / parent).is_dir()]

    def _cgroup_ids(self) -> set[str]:
        ids: set[str] = set()
        for directory in self._cgroup_dirs():
            if directory.is_dir():
                ids |= {child.name for child in directory.iterdir() if child.is_dir()}
        return ids

    def _remove_cgroups(self, sandbox_ids: set[str]) -> None:
        for directory in self._cgroup_dirs():
            for sandbox_id in sandbox_ids:
                with contextlib.suppress(FileNotFoundError, OSError):
                    (directory / sandbox_id).rmdir()

    async def leftovers(self) -> dict[str, list[str]]:
        """Everything of this instance still on the host (for tests and leak checks)."""
        runc = [info.id for info in await self.list_sandboxes()]
        mounts = [str(p) for p in await asyncio.to_thread(mounts_under, self.sandboxes)]
        directories = (
            sorted(p.name for p in self.sandboxes.iterdir()) if self.sandboxes.is_dir() else []
        )
        links = (await run("ip", "-o", "link", "show")).stdout.decode()
        veths = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()
                 if f"hv{self.tag[:4]}" in line]  # fmt: skip
        loops = (await run("losetup", "--list", "--noheadings", "-O", "BACK-FILE")).stdout.decode()
        networks = BridgeNetworks(tag=self.tag)
        admitted = await run("nft", "list", "table", "bridge", f"hutch-{self.tag}", check=False)
        inet = await run("nft", "list", "table", "inet", f"hutch-{self.tag}", check=False)
        return {
            "bridges": networks.bridges(),
            "ports": networks.ports(),
            "admitted": sorted(set(re.findall(r'"(hp\w+)"', admitted.stdout.decode()))),
            # Egress sets, chains, counters and map elements are all named after the link.
            "egress": sorted(
                set(re.findall(r"\b(?:e|m|a|ap|d|dp|q|tx|rx)_(hv\w+)", inet.stdout.decode()))
            ),
            "runc": runc,
            "mounts": mounts,
            "directories": directories,
            "netns": sorted(list_netns(self.tag)),
            "veths": veths,
            "cgroups": sorted(await asyncio.to_thread(self._cgroup_ids)),
            "loops": [line.strip() for line in loops.splitlines() if str(self.sandboxes) in line],
        }

    async def uninstall(self) -> None:
        """Remove what :meth:`prepare` made: the firewall table, the cgroup parents and the
        socket directory. Call only with no sandboxes left (after ``cleanup(set())``)."""
        await self.firewall.remove()
        for directory in await asyncio.to_thread(self._cgroup_dirs):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            self.sockets.rmdir()


def _runtime_info(entry: dict[str, object]) -> RuntimeInfo:
    status = str(entry.get("status", ""))
    state = {
        "running": RuntimeState.RUNNING,
        "paused": RuntimeState.PAUSED,
        "pausing": RuntimeState.PAUSED,
    }.get(status, RuntimeState.STOPPED)
    pid = entry.get("pid")
    return RuntimeInfo(
        id=str(entry["id"]),
        state=state,
        pid=int(pid) if isinstance(pid, int) and pid > 0 else None,
    )


def _write_names(etc: Path, hostname: str, address: str) -> None:
    """The sandbox's ``/etc/hostname`` and ``/etc/hosts``."""
    (etc / "hostname").write_text(hostname + "\n")
    (etc / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{address}\t{hostname}\n"
    )


def _tail(path: Path, size: int = 1000) -> str:
    try:
        data = path.read_bytes()[-size:]
    except OSError:
        return ""
    return data.decode(errors="replace").strip()
