"""A sandbox's root filesystem: the image, read-only, under a writable layer of its own.

The writable layer is a filesystem in a sparse file, loop-mounted, so ``disk_mib`` is a
real limit: writing past it fails with ENOSPC inside the sandbox, never on the host. A
formatted, empty layer of each size is kept as a template; a new layer is a sparse copy of
it (a few MiB of metadata), which is much faster than formatting.

The layer is btrfs because it grows while mounted with CAP_SYS_ADMIN alone (``resize``):
ext4's online resize also needs CAP_SYS_RESOURCE, which a host agent in a container often
lacks. On kernels before 6.7 each copy gets a fresh filesystem id (``btrfstune -m``), so
they mount many copies of one template at once; later kernels do that by themselves. The
copy and the overlay mount are made in-process (no ``cp``, no ``mount`` command).
Layers made as ext4 by an earlier hutch keep working and grow with ``resize2fs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from hutch.host.libc import libc as c_library
from hutch.host.loop import LoopUnsupported, loop_mount
from hutch.host.proc import CommandFailed, CommandResult, run

__all__ = ["LayerCannotGrow", "SandboxRootfs", "mounts_under"]

MIB = 1024 * 1024
_LONG_LOWERS = 2048


class LayerCannotGrow(Exception):
    """The writable layer was not grown; it keeps its size and every file. Says why."""


async def _unmount(points: Sequence[Path]) -> None:
    for point in points:
        try:
            await run("umount", str(point))
        except CommandFailed:
            await run("umount", "-l", str(point), check=False)


def mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below ``directory``, deepest first (the order to unmount in)."""
    prefix = str(directory)
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


class SandboxRootfs:
    """The disk, the writable layer and the overlay of one sandbox, under ``directory``."""

    def __init__(self, directory: Path, *, templates: Path) -> None:
        self.directory = directory
        self.templates = templates
        self.disk = directory / "disk.img"
        self.layer = directory / "layer"
        self.rootfs = directory / "rootfs"

    async def create(self, *, image: Path | Sequence[Path], disk_mib: int) -> None:
        """Make the disk and mount the overlay over ``image`` (one directory, or several
        lower directories, top first). On failure, call :meth:`remove`."""
        template = await self._template(disk_mib)
        await asyncio.to_thread(sparse_copy, template, self.disk)
        if not clones_mount_as_they_are():
            await run("btrfstune", "-f", "-m", str(self.disk))
        self.layer.mkdir()
        await self._mount_layer(btrfs=True)  # (a new layer is btrfs: the template is)
        (self.layer / "upper").mkdir()
        (self.layer / "work").mkdir()
        self.rootfs.mkdir()
        await self._mount_overlay(image)

    async def copy_from(self, source: SandboxRootfs, *, image: Path | Sequence[Path]) -> None:
        """Make this disk a copy of ``source``'s (which may be mounted, its writers frozen
        or stopped: its filesystem is synced first) and mount it. On failure, call
        :meth:`remove`."""
        if await asyncio.to_thread(source.mounted):
            await run("sync", "-f", str(source.layer))
        await run("cp", "--sparse=always", "--reflink=auto", str(source.disk), str(self.disk))
        # A fresh filesystem id, so the copy mounts beside the original on any kernel.
        await run("btrfstune", "-f", "-m", str(self.disk))
        self.layer.mkdir()
        self.rootfs.mkdir()
        await self.mount(image=image)

    def mounted(self) -> bool:
        """Whether the overlay is mounted (it is not after the host restarted)."""
        return self.rootfs in mounts_under(self.directory)

    async def _mount_overlay(self, image: Path | Sequence[Path]) -> None:
        lowers = [image] if isinstance(image, Path) else list(image)
        cwd = None
        if sum(len(str(lower)) + 1 for lower in lowers) > _LONG_LOWERS:
            # Mount options fit in one page: many layers (a template's) are named relative
            # to the top one's directory, as the mount's working directory.
            cwd = str(lowers[0].parent)
            lowers = _relative(lowers, cwd)
        # No redirects or metacopy files in the upper: it may become a template's layer
        # (hutch.host.layers), read as a plain lower directory by later mounts.
        options = (
            f"lowerdir={':'.join(map(str, lowers))},upperdir={self.layer / 'upper'},"
            f"workdir={self.layer / 'work'},redirect_dir=off,metacopy=off"
        )
        if cwd is not None:  # relative lower directories: the mount command, in that cwd
            await run("mount", "-t", "overlay", "overlay", "-o", options, str(self.rootfs), cwd=cwd)
        else:
            await asyncio.to_thread(mount, "overlay", self.rootfs, "overlay", options)

    def upper(self) -> Path:
        """The writable layer's files (overlayfs's upper directory)."""
        return self.layer / "upper"

    async def mount(self, *, image: Path | Sequence[Path]) -> None:
        """Mount an existing disk and its overlay again (after the host restarted, or a
        hibernate unmounted them): the files written before are all there. The loop
        device is set up in-process (:mod:`hutch.host.loop`), else by ``mount``."""
        await self.unmount()
        await self._mount_layer(btrfs=await asyncio.to_thread(_is_btrfs, self.disk))
        await self._mount_overlay(image)

    async def _mount_layer(self, *, btrfs: bool) -> None:
        """The disk at ``layer``: a btrfs one through a loop device set up in-process
        (:mod:`hutch.host.loop`), anything else (an ext4 layer of an earlier hutch), or
        where the kernel lacks ``LOOP_CONFIGURE``, by ``mount -o loop``."""
        if btrfs:
            try:
                await asyncio.to_thread(loop_mount, self.disk, self.layer, "btrfs")
                return
            except LoopUnsupported:
                pass
        await run("mount", "-o", "loop,noatime", str(self.disk), str(self.layer))

    def size_mib(self) -> int:
        """The size of the writable layer's disk, in MiB."""
        return self.disk.stat().st_size // MIB

    async def grow(self, disk_mib: int) -> None:
        """Grow the mounted writable layer to ``disk_mib`` MiB: the file, the loop device over
        it, then the filesystem, online. Whoever uses the layer sees the space at once.

        Raises :class:`LayerCannotGrow` (with nothing changed) if ``disk_mib`` is not larger
        than the layer, if the layer is not mounted, or if a step fails; a failed step is
        undone while the filesystem still has its old size, so no file is ever at risk.
        """
        mounted = await asyncio.to_thread(_mount_of, self.layer)
        if mounted is None:
            raise LayerCannotGrow("the sandbox's disk is not mounted on this host")
        device, fstype = mounted
        old_size = self.disk.stat().st_size
        if disk_mib * MIB <= old_size:
            raise LayerCannotGrow(f"the disk has {old_size // MIB} MiB already; it only grows")
        before = os.statvfs(self.layer)
        await asyncio.to_thread(os.truncate, self.disk, disk_mib * MIB)
        try:
            await run("losetup", "-c", device)
            if fstype == "btrfs":
                await run("btrfs", "filesystem", "resize", "max", str(self.layer))
            else:
                await run("resize2fs", device)
        except CommandFailed as exc:
            after = os.statvfs(self.layer)
            if after.f_blocks * after.f_frsize <= before.f_blocks * before.f_frsize:
                await asyncio.to_thread(os.truncate, self.disk, old_size)
                await run("losetup", "-c", device, check=False)
            raise LayerCannotGrow(f"{exc.argv[0]} failed: {exc.detail}") from exc

    async def remove(self) -> None:
        """Unmount everything under the directory (the loop device goes with it)."""
        await _unmount(await asyncio.to_thread(mounts_under, self.directory))

    async def unmount(self) -> None:
        """Unmount the overlay and the writable layer (the loop device goes with it); the
        files stay in the disk file. Other mounts under the directory (buckets) stay. A
        mounted btrfs holds ~7 MiB of the host's kernel memory: a stopped sandbox that
        keeps its files (hibernated) gives it back this way."""
        points = await asyncio.to_thread(mounts_under, self.rootfs)
        points += await asyncio.to_thread(mounts_under, self.layer)
        await _unmount(points)

    async def _template(self, disk_mib: int) -> Path:
        path = self.templates / f"btrfs-{disk_mib}m.img"
        if path.exists():
            return path
        self.templates.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.{id(self)}.tmp")
        try:
            await run("truncate", "-s", f"{disk_mib}M", str(partial))
            # Mixed block groups waste nothing on a small disk; on a large one btrfs is
            # faster with data and metadata apart (single copies: the host keeps the file).
            layout = ("--mixed",) if disk_mib < 1024 else ("-m", "single", "-d", "single")
            await run("mkfs.btrfs", "-q", "-f", *layout, str(partial))
            partial.rename(path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        return path


def sparse_copy(source: Path, target: Path) -> None:
    """Copy ``source`` to a new file ``target``, only its data (its holes stay holes): what
    ``cp --sparse=always`` does for a disk template of a few MiB in many GiB, without a
    process. Raises :class:`OSError`: ``FileExistsError`` if ``target`` exists (it is kept),
    else after removing the part it made."""
    with open(source, "rb") as src, open(target, "xb") as dst:
        try:
            size = os.fstat(src.fileno()).st_size
            offset = 0
            while offset < size:
                try:
                    data = os.lseek(src.fileno(), offset, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:  # only a hole is left
                        break
                    raise
                hole = os.lseek(src.fileno(), data, os.SEEK_HOLE)
                position = data
                while position < hole:
                    copied = os.copy_file_range(
                        src.fileno(), dst.fileno(), hole - position, position, position
                    )
                    if copied == 0:
                        raise OSError(errno.EIO, f"{source} ended early")
                    position += copied
                offset = hole
            os.ftruncate(dst.fileno(), size)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            raise


@functools.cache
def clones_mount_as_they_are() -> bool:
    """Whether this kernel mounts copies of one btrfs filesystem side by side as they are
    (Linux 6.7 gives a copy whose id is in use a temporary one); before it, each copy needs
    a fresh id (``btrfstune -m``)."""
    match = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return match is not None and (int(match[1]), int(match[2])) >= (6, 7)


def mount(source: str, target: Path, fstype: str, options: str) -> None:
    """``mount -t fstype -o options source target`` as one system call (no process).
    Raises :class:`CommandFailed`, as the ``mount`` command failing would."""
    libc = c_library()
    if libc.mount(source.encode(), str(target).encode(), fstype.encode(), 0, options.encode()):
        err = ctypes.get_errno()
        argv = ("mount", "-t", fstype, source, str(target))
        raise CommandFailed(argv, CommandResult(32, b"", f"mount: {os.strerror(err)}".encode()))


def _relative(paths: Sequence[Path], start: str) -> list[Path]:
    """``paths`` relative to ``start`` (pure string work: nothing is looked up)."""
    return [Path(os.path.relpath(path, start)) for path in paths]


def _is_btrfs(disk: Path) -> bool:
    """Whether the disk file holds a btrfs (its superblock's magic, at 64 KiB + 64)."""
    with open(disk, "rb") as image:
        image.seek(0x10040)
        return image.read(8) == b"_BHRfS_M"


def _mount_of(point: Path) -> tuple[str, str] | None:
    """The device and filesystem type mounted at ``point``, if anything is."""
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if fields[4].replace("\\040", " ") == str(point):
                after = fields[fields.index("-") + 1 :]
                return after[1], after[0]
    return None


def remove_tree(directory: Path) -> None:
    """Delete a sandbox directory that has nothing mounted under it any more."""
    if mounts_under(directory):
        raise OSError(f"{directory} still has mounts")
    shutil.rmtree(directory, ignore_errors=True)
