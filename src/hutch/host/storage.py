"""A sandbox's root filesystem: the image, read-only, under a writable layer of its own.

The writable layer is an ext4 filesystem in a sparse file, loop-mounted, so ``disk_mib``
is a real limit: writing past it fails with ENOSPC inside the sandbox, never on the host.
A formatted, empty layer of each size is kept as a template; a new layer is a sparse copy
of it (a few MiB of metadata), which is much faster than formatting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path

from hutch.host.proc import CommandFailed, run

__all__ = ["SandboxRootfs", "mounts_under"]


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

    async def create(self, *, image: Path, disk_mib: int) -> None:
        """Make the disk and mount the overlay. On failure, call :meth:`remove`."""
        template = await self._template(disk_mib)
        await run("cp", "--sparse=always", str(template), str(self.disk))
        self.layer.mkdir()
        await run("mount", "-o", "loop,noatime", str(self.disk), str(self.layer))
        (self.layer / "upper").mkdir()
        (self.layer / "work").mkdir()
        self.rootfs.mkdir()
        options = f"lowerdir={image},upperdir={self.layer / 'upper'},workdir={self.layer / 'work'}"
        await run("mount", "-t", "overlay", "overlay", "-o", options, str(self.rootfs))

    def mounted(self) -> bool:
        """Whether the overlay is mounted (it is not after the host restarted)."""
        return self.rootfs in mounts_under(self.directory)

    async def mount(self, *, image: Path) -> None:
        """Mount an existing disk and its overlay again (after the host restarted): the
        files written before are all there."""
        await self.remove()
        await run("mount", "-o", "loop,noatime", str(self.disk), str(self.layer))
        options = f"lowerdir={image},upperdir={self.layer / 'upper'},workdir={self.layer / 'work'}"
        await run("mount", "-t", "overlay", "overlay", "-o", options, str(self.rootfs))

    async def remove(self) -> None:
        """Unmount everything under the directory (the loop device goes with it)."""
        for point in await asyncio.to_thread(mounts_under, self.directory):
            try:
                await run("umount", str(point))
            except CommandFailed:
                await run("umount", "-l", str(point), check=False)

    async def _template(self, disk_mib: int) -> Path:
        path = self.templates / f"ext4-{disk_mib}m.img"
        if path.exists():
            return path
        self.templates.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.{id(self)}.tmp")
        try:
            await run("truncate", "-s", f"{disk_mib}M", str(partial))
            await run(
                "mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
                "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", str(partial),
            )  # fmt: skip
            partial.rename(path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        return path


def remove_tree(directory: Path) -> None:
    """Delete a sandbox directory that has nothing mounted under it any more."""
    if mounts_under(directory):
        raise OSError(f"{directory} still has mounts")
    shutil.rmtree(directory, ignore_errors=True)
