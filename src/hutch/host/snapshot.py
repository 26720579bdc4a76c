"""A snapshot of a running sandbox's filesystem: its writable layer as a copy
(:func:`capture_layer`, what the snapshot route makes a template layer of), or the whole
merged filesystem as a new image (:func:`snapshot_rootfs`).

A runc sandbox's root is an overlay: its image (read-only, the lower layer) under its
writable layer (``upper``, on the sandbox's own btrfs disk). A snapshot is that merged
view turned into an image like the catalog ones (``<build>/rootfs``), while the sandbox
keeps running:

1. **Frozen** (the cgroup freezer, ``runc pause``) only while ``upper`` is copied, and
   the copy is a read-only btrfs snapshot of the sandbox's own disk (the layer's
   filesystem), which takes the same few milliseconds whatever the layer holds (an ext4
   layer of an earlier hutch is copied instead, frozen for as long as that takes). The
   copy is kept in the layer beside ``upper``, where the sandbox cannot see it. Thawed at
   once (also on any failure). A sandbox that was paused already stays paused.
2. Unfrozen: a read-only overlay of that copy over the image gives the frozen moment's
   merged view, with the kernel applying its whiteouts, opaque and renamed directories.
3. The new image starts as hard links to the image's files (no data copied), and only
   the paths the copy of ``upper`` touches are made to match the merged view: removed
   where it has none, copied from it otherwise. So a snapshot costs the host the changed
   files plus the directory entries, and shares every unchanged file with its image.

The new image's files may be hard links into the image it came from: like every image
it must never be written in place (a sandbox's writes go to its own layer; anything
building on it replaces files, never writes through them).

The image's config (:mod:`hutch.host.image_config`), if its image had one, is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from hutch.host.image_config import IMAGE_CONFIG_FILE
from hutch.host.proc import CommandFailed, run
from hutch.host.storage import SandboxRootfs, mounts_under

__all__ = [
    "CapturedLayer",
    "SnapshotError",
    "SnapshotStats",
    "capture_layer",
    "overlay_lowers",
    "snapshot_rootfs",
    "sweep_copies",
]


class SnapshotError(Exception):
    """The snapshot was not made; the sandbox is as it was (thawed if it was running)."""


@dataclass(frozen=True, kw_only=True)
class SnapshotStats:
    rootfs: Path
    frozen_ms: float
    """How long the sandbox's processes were frozen (0 when it was paused already)."""
    total_ms: float
    changed_paths: int
    """Paths of the writable layer (files, directories, whiteouts) taken over."""


def overlay_lowers(point: Path) -> list[Path]:
    """The lower directories of the overlay mounted at ``point`` (topmost first)."""
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if fields[4].replace("\\040", " ") != str(point):
                continue
            after = fields[fields.index("-") + 1 :]
            if after[0] != "overlay":
                break
            for option in after[2].split(","):
                if option.startswith("lowerdir="):
                    return [Path(p) for p in option.removeprefix("lowerdir=").split(":")]
    raise SnapshotError(f"no overlay is mounted at {point}")


@dataclass(frozen=True, kw_only=True)
class CapturedLayer:
    """A sandbox's writable layer as it was at one frozen moment."""

    upper: Path
    """A read-only copy of the layer, in overlayfs's format (whiteouts, opaque
    directories): usable as a lower directory above :attr:`lowers`."""
    lowers: list[Path]
    """The sandbox's image: its lower directories, topmost first."""
    frozen_ms: float
    """How long the sandbox's processes were frozen (0 when it was paused already)."""


@asynccontextmanager
async def capture_layer(
    disk: SandboxRootfs,
    *,
    freeze: Callable[[], Awaitable[None]] | None,
    thaw: Callable[[], Awaitable[None]] | None,
) -> AsyncIterator[CapturedLayer]:
    """Copy the writable layer of the sandbox whose disk is ``disk`` while it is frozen
    (``freeze``/``thaw``; None when it is paused already), thaw it, and yield the copy; the
    copy is removed when the block ends. Thawed in every case. Raises
    :class:`SnapshotError`. One capture of a sandbox at a time (the caller's lock); a copy
    left by a capture cut off by a crash is removed by the next one."""
    lowers = await asyncio.to_thread(overlay_lowers, disk.rootfs)
    for stale in await asyncio.to_thread(lambda: list(disk.layer.glob(".snapshot-*"))):
        await _drop_copy(stale)
    holder = disk.layer / f".snapshot-{os.getpid()}-{time.monotonic_ns()}"
    try:
        frozen_at = time.monotonic()
        freezing = asyncio.ensure_future(freeze()) if freeze is not None else None
        copied = False
        try:
            if freezing is not None:
                await asyncio.shield(freezing)
            frozen_at = time.monotonic()
            await _copy_layer(disk.layer, disk.layer / "upper", holder)
            copied = True
        finally:
            if freezing is not None and thaw is not None:
                # Cancelled while freezing, 'runc pause' goes on (and freezes it): wait for
                # it, then thaw, the thaw shielded too (never left frozen).
                await asyncio.wait([freezing])
                try:
                    await asyncio.shield(thaw())
                except CommandFailed:
                    if copied or freezing.exception() is None:
                        raise
                    # The freeze failed: that is the error (it may never have been frozen).
            frozen_ms = (time.monotonic() - frozen_at) * 1000 if freeze is not None else 0.0
        yield CapturedLayer(upper=holder / "upper", lowers=lowers, frozen_ms=frozen_ms)
    except CommandFailed as exc:
        raise SnapshotError(f"{exc.argv[0]} failed: {exc.detail}") from exc
    finally:
        await asyncio.shield(_drop_copy(holder))


async def snapshot_rootfs(
    disk: SandboxRootfs,
    build: Path,
    *,
    freeze: Callable[[], Awaitable[None]] | None,
    thaw: Callable[[], Awaitable[None]] | None,
) -> SnapshotStats:
    """Make ``build/rootfs``, one directory, from the sandbox whose disk is ``disk`` (its
    image and its layer merged; see the module's docstring). ``freeze`` and ``thaw`` as for
    :func:`capture_layer`. ``build`` must not exist yet and should be on the filesystem of
    the images (for hard links); on failure it is removed. Raises :class:`SnapshotError`."""
    started = time.monotonic()
    merged = build / ".merged"
    try:
        await asyncio.to_thread(build.mkdir, parents=True)
    except FileExistsError:
        raise SnapshotError(f"{build} exists already") from None
    try:
        async with capture_layer(disk, freeze=freeze, thaw=thaw) as captured:
            lowers, staged = captured.lowers, captured.upper
            await asyncio.to_thread(merged.mkdir)
            lowerdir = ":".join(str(p) for p in [staged, *lowers])
            await run("mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lowerdir}",
                      str(merged))  # fmt: skip
            try:
                rootfs = build / "rootfs"
                changed = await asyncio.to_thread(_build_image, lowers, staged, merged, rootfs)
            finally:
                await run("umount", str(merged), check=False)
        await asyncio.to_thread(merged.rmdir)
        source_config = lowers[-1].parent / IMAGE_CONFIG_FILE if len(lowers) == 1 else None
        if source_config is not None and source_config.is_file():
            await asyncio.to_thread(shutil.copyfile, source_config, build / IMAGE_CONFIG_FILE)
    except BaseException as exc:
        await asyncio.shield(_discard(build))
        if isinstance(exc, CommandFailed):
            raise SnapshotError(f"{exc.argv[0]} failed: {exc.detail}") from exc
        if isinstance(exc, OSError):
            raise SnapshotError(f"copying the sandbox's files failed: {exc}") from exc
        raise
    return SnapshotStats(
        rootfs=rootfs,
        frozen_ms=captured.frozen_ms,
        total_ms=(time.monotonic() - started) * 1000,
        changed_paths=changed,
    )


async def _copy_layer(layer: Path, upper: Path, holder: Path) -> None:
    """Copy the writable layer into ``holder/upper`` on the sandbox's own disk: a
    read-only btrfs snapshot of the whole layer filesystem (its top-level subvolume),
    which costs the same whatever the layer holds; else a reflink copy (per file), else a
    plain copy (an ext4 layer made by an earlier hutch)."""
    try:
        await run("btrfs", "subvolume", "snapshot", "-r", str(layer), str(holder))
        return
    except (CommandFailed, FileNotFoundError):
        await _drop_copy(holder)
    await asyncio.to_thread(holder.mkdir)
    try:
        await run("cp", "-a", "--reflink=always", str(upper), str(holder), timeout_s=600)
    except CommandFailed:
        await asyncio.to_thread(shutil.rmtree, holder / "upper", True)
        await run("cp", "-a", str(upper), str(holder), timeout_s=600)


async def sweep_copies(sandboxes: Path) -> list[Path]:
    """Remove the layer copies that captures cut off by a crash left in sandboxes' disks
    (``<sandboxes>/<id>/layer/.snapshot-*``); return them. Call at start, before any
    capture can run."""
    found = await asyncio.to_thread(lambda: sorted(sandboxes.glob("*/layer/.snapshot-*")))
    for holder in found:
        await _drop_copy(holder)
    return found


async def _drop_copy(holder: Path) -> None:
    if not await asyncio.to_thread(os.path.lexists, holder):
        return
    deleted = await run("btrfs", "subvolume", "delete", str(holder), check=False)
    if deleted.returncode != 0:
        await asyncio.to_thread(shutil.rmtree, holder, True)


async def _discard(build: Path) -> None:
    for point in await asyncio.to_thread(mounts_under, build):
        await run("umount", "-l", str(point), check=False)
    await asyncio.to_thread(shutil.rmtree, build, True)


def _build_image(lowers: list[Path], staged: Path, merged: Path, rootfs: Path) -> int:
    """Hard links of the image, then every path under ``staged`` made to match ``merged``."""
    if len(lowers) == 1:
        try:
            _link_tree(lowers[0], rootfs)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.rmtree(rootfs, ignore_errors=True)
            _copy_path(merged, rootfs)
            return 0
    else:
        _copy_path(merged, rootfs)  # several lowers: no one tree to share with
        return 0
    changed = 0
    for directory, dirnames, filenames in _walk(staged):
        relative = Path(directory).relative_to(staged)
        source, target = merged / relative, rootfs / relative
        changed += 1 + len(filenames)
        whole = _sync_directory(source, target)
        for name in filenames:
            if name not in whole and os.path.lexists(source / name):
                _remove(target / name)  # (a whiteout: already gone from target)
                _copy_path(source / name, target / name)
        _copy_metadata(source, target)  # last: the changes above moved its times
        dirnames[:] = [name for name in dirnames if name not in whole]
    return changed


def _sync_directory(source: Path, target: Path) -> set[str]:
    """Make ``target`` a directory whose entries are ``source``'s names: names only in
    ``target`` go, names only in ``source`` are copied whole (returned)."""
    if os.path.lexists(target) and not (target.is_dir() and not target.is_symlink()):
        _remove(target)
    if not os.path.lexists(target):
        target.mkdir()
    wanted = set(os.listdir(source))
    present = set(os.listdir(target))
    for name in present - wanted:
        _remove(target / name)
    for name in wanted - present:
        _copy_path(source / name, target / name)
    return wanted - present


def _walk(root: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` top-down, but a symbolic link to a directory is a file (not followed,
    not listed as a directory): ``os.walk`` would list it among the directories."""
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        dirnames: list[str] = []
        filenames: list[str] = []
        with os.scandir(directory) as entries:
            for entry in entries:
                (dirnames if entry.is_dir(follow_symlinks=False) else filenames).append(entry.name)
        yield directory, dirnames, filenames
        stack.extend(os.path.join(directory, name) for name in reversed(dirnames))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _link_tree(source: Path, target: Path) -> None:
    """``target`` as a tree of directories like ``source``'s whose files are hard links."""
    _copy_metadata_dir_entry(source, target)
    for directory, dirnames, filenames in _walk(source):
        relative = Path(directory).relative_to(source)
        for name in dirnames:
            _copy_metadata_dir_entry(Path(directory) / name, target / relative / name)
        for name in filenames:
            os.link(Path(directory) / name, target / relative / name, follow_symlinks=False)
    # Directory times last: making their entries moved them.
    for directory, dirnames, _ in _walk(source):
        relative = Path(directory).relative_to(source)
        for name in [".", *dirnames]:
            st = os.lstat(Path(directory) / name)
            os.utime(target / relative / name, ns=(st.st_atime_ns, st.st_mtime_ns))


def _copy_metadata_dir_entry(source: Path, target: Path) -> None:
    target.mkdir()
    _copy_metadata(source, target)


def _copy_path(source: Path, target: Path) -> None:
    """Copy one entry (a whole tree for a directory), keeping owners, modes, times,
    extended attributes, links and device files."""
    st = os.lstat(source)
    if stat.S_ISDIR(st.st_mode):
        _copy_metadata_dir_entry(source, target)
        for name in os.listdir(source):
            _copy_path(source / name, target / name)
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        return
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(source), target)
    elif stat.S_ISREG(st.st_mode):
        shutil.copyfile(source, target, follow_symlinks=False)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        os.mknod(target, st.st_mode, st.st_rdev)
    else:
        return  # sockets belong to running programs, not to an image
    _copy_metadata(source, target)


def _copy_metadata(source: Path, target: Path) -> None:
    st = os.lstat(source)
    os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(target, stat.S_IMODE(st.st_mode))  # after chown, which clears set-id bits
    for name in os.listxattr(source, follow_symlinks=False):
        with contextlib.suppress(OSError):
            value = os.getxattr(source, name, follow_symlinks=False)
            os.setxattr(target, name, value, follow_symlinks=False)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
