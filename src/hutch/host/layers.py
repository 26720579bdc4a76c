"""Layers and template images on this host: what a sandbox from a template is made of.

A **layer** is one build step's changes to the filesystem, in overlayfs's own format (a
deleted file is a 0:0 character device, a replaced directory carries
``trusted.overlay.opaque``), under ``$HUTCH_HOME/layers/<key>/``. Its key is the build
cache's key for the step (:mod:`hutch.core.templates.plan`), so a step already built is
found by its key. A layer is written into ``<key>.partial`` and renamed into place only
when complete (``<key>.json`` beside it says so), so a half-written layer is never used;
a layer is never changed once complete.

An **image** is what the driver mounts: read-only lower directories, top first (layers
over a catalog image's root filesystem), and the settings a sandbox of it starts with
(environment, working directory, user, start command). It is a JSON file
``$HUTCH_HOME/template-images/<name>.json``, written by an atomic rename when a template
becomes ready (or for one build step), so a driver reads either the whole image or none.

Every sandbox of an image shares its lower directories: overlayfs with several
lowerdirs, nothing copied per sandbox (and a layer is shared by every template and
version that built the same step).

Entry points for other parts (OCI import, snapshots):

- :meth:`LayerStore.commit` turns a directory (an overlay upper, or a whole root
  filesystem) into a layer under a key;
- :func:`write_image` records an image; :func:`resolve_image` reads one (the drivers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hutch.host.image_config import image_config
from hutch.host.images import image_rootfs
from hutch.host.proc import run

__all__ = [
    "GUEST_START",
    "GUEST_USER",
    "GUEST_WORKDIR",
    "LayerStore",
    "Manifest",
    "ResolvedImage",
    "StartSettings",
    "image_path",
    "remove_image",
    "resolve_image",
    "write_image",
]

# The guest agent reads (and drops from its environment) these at start: the defaults of
# every exec, and the command it starts (hutch.guest.agent).
GUEST_WORKDIR = "HUTCH_GUEST_WORKDIR"
GUEST_USER = "HUTCH_GUEST_USER"
GUEST_START = "HUTCH_GUEST_START"


@dataclass(frozen=True, kw_only=True)
class StartSettings:
    """What a sandbox of an image starts with (from ENV, WORKDIR, USER, CMD/ENTRYPOINT)."""

    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = ""
    start: Sequence[str] | None = None

    def guest_env(self) -> dict[str, str]:
        """The image's environment, plus the guest agent's defaults."""
        env = dict(self.env)
        if self.workdir and self.workdir != "/":
            env[GUEST_WORKDIR] = self.workdir
        if self.user:
            env[GUEST_USER] = self.user
        if self.start:
            env[GUEST_START] = json.dumps(list(self.start))
        return env


@dataclass(frozen=True, kw_only=True)
class ResolvedImage:
    lowers: list[Path]
    """Read-only lower directories, top first."""
    env: dict[str, str]
    """Variables for the sandbox's init (the image's own, and the guest's defaults)."""


def image_path(home: Path, name: str) -> Path:
    return home / "template-images" / f"{name}.json"


def write_image(
    home: Path, name: str, *, images: Path, root: str, layers: Sequence[Path], config: StartSettings
) -> None:
    """Record image ``name``: ``layers`` (bottom first) over catalog image ``root`` ('' when
    the bottom layer is a whole root filesystem). Atomic: a reader sees all of it or none.

    Raises FileNotFoundError when ``root`` is not built here or a layer is missing."""
    lowers = [str(path) for path in reversed(layers)]
    if root:
        rootfs = image_rootfs(images, root)
        if rootfs is None:
            raise FileNotFoundError(f"rootfs {root!r} is not built on this host")
        lowers.append(str(rootfs))
    for lower in lowers:
        if not Path(lower).is_dir():
            raise FileNotFoundError(f"layer {lower} is missing")
    if not lowers:
        raise ValueError("an image needs at least one layer or a root")
    path = image_path(home, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps({"lowers": lowers, "env": config.guest_env()}))
    temp.replace(path)


def resolve_image(home: Path, images: Path, name: str) -> ResolvedImage | None:
    """The lower directories and start environment of ``name``: a catalog image (one
    lower, no settings) or a template image; None when neither is on this host."""
    rootfs = image_rootfs(images, name)
    if rootfs is not None:
        # A catalog image whose recipe has a start command (desktop:1) starts it.
        config = image_config(images, name)
        start = config.start_command if config is not None else ()
        return ResolvedImage(lowers=[rootfs], env=StartSettings(start=start).guest_env())
    try:
        data = json.loads(image_path(home, name).read_text())
    except (OSError, ValueError):
        return None
    lowers = [Path(p) for p in data.get("lowers", [])]
    if not lowers or not all(p.is_dir() for p in lowers):
        return None
    return ResolvedImage(lowers=lowers, env={str(k): str(v) for k, v in data["env"].items()})


def remove_image(home: Path, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        image_path(home, name).unlink()


class LayerStore:
    """The layers of one host, under ``directory`` (``$HUTCH_HOME/layers``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, key: str) -> Path:
        return self.directory / key

    def has(self, key: str) -> bool:
        """Whether layer ``key`` is complete (a cache hit)."""
        return (self.directory / f"{key}.json").is_file() and self.path(key).is_dir()

    def size(self, key: str) -> int:
        try:
            return int(json.loads((self.directory / f"{key}.json").read_text())["size"])
        except (OSError, ValueError, KeyError):
            return 0

    async def commit(self, key: str, source: Path, *, exclude: Sequence[str] = ()) -> int:
        """Copy ``source`` (every file, owner, mode, extended attribute and whiteout) into
        layer ``key``, less the relative paths ``exclude``; return its size in bytes. All
        or nothing: on failure no layer ``key`` exists. A layer that is already complete
        is left as it is."""
        if self.has(key):
            return self.size(key)
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / f"{key}.partial"
        await _remove(partial)
        try:
            # cp -a keeps owners, modes, times, xattrs (trusted.overlay.*) and device
            # nodes (overlayfs's whiteouts): the copy is a lower layer as it was an upper.
            await run("cp", "-a", "--reflink=auto", f"{source}/.", str(partial))
            for relative in exclude:
                left = partial / relative
                if left.is_symlink() or left.is_file() or left.exists():
                    await _remove(left)
            size = await _tree_size(partial)
            target = self.path(key)
            await _remove(target)
            partial.rename(target)
            meta = self.directory / f".{key}.json.tmp"
            meta.write_text(json.dumps({"size": size, "made": time.time()}))
            meta.replace(self.directory / f"{key}.json")
        except BaseException:
            await _remove(partial)
            raise
        return size

    async def commit_changes(
        self, key: str, source: Path, since: Manifest | None, *, exclude: Sequence[str] = ()
    ) -> tuple[int, Manifest]:
        """Make layer ``key`` of what changed in ``source`` (a read-only capture of a
        sandbox's overlay upper) since the capture described by ``since`` (None: since
        the sandbox started, so all of it): new and changed entries copied with their
        owners, modes, times and extended attributes, removed ones as whiteouts. Return
        its size and the manifest of ``source`` (the ``since`` of the next step). All or
        nothing, as :meth:`commit`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / f"{key}.partial"
        await _remove(partial)
        try:
            manifest = await asyncio.to_thread(
                _copy_changes, source, partial, since or {}, tuple(exclude)
            )
            size = await _tree_size(partial)
            target = self.path(key)
            await _remove(target)
            partial.rename(target)
            meta = self.directory / f".{key}.json.tmp"
            meta.write_text(json.dumps({"size": size, "made": time.time()}))
            meta.replace(self.directory / f"{key}.json")
        except BaseException:
            await _remove(partial)
            raise
        return size, manifest

    def sweep_partials(self) -> list[str]:
        """Remove half-written layers (a build killed mid-copy); return their keys."""
        if not self.directory.is_dir():
            return []
        removed = []
        for entry in self.directory.iterdir():
            if entry.name.endswith(".partial"):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name.removesuffix(".partial"))
            elif entry.is_dir() and not (self.directory / f"{entry.name}.json").is_file():
                shutil.rmtree(entry, ignore_errors=True)  # renamed, never marked complete
                removed.append(entry.name)
        return removed


async def _remove(path: Path) -> None:
    if await asyncio.to_thread(path.exists):
        await run("rm", "-rf", "--one-file-system", str(path))


async def _tree_size(path: Path) -> int:
    return await asyncio.to_thread(_tree_size_sync, path)


def _tree_size_sync(path: Path) -> int:
    total = 0
    for directory, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


Manifest = dict[str, tuple[int, int, bool]]
"""Relative path → (inode, ctime in ns, opaque directory) of every entry of a capture."""

_OPAQUE = "trusted.overlay.opaque"


def _copy_changes(
    source: Path, target: Path, since: Manifest, exclude: tuple[str, ...]
) -> Manifest:
    """Copy into ``target`` each entry of ``source`` that is new or changed since ``since``
    (a new inode or ctime; captures of one btrfs layer keep both for unchanged files), with
    the directories above it; whiteouts for the entries ``since`` had and ``source`` has not.
    A directory that was opaque already keeps its opacity in the lower layer only: marked
    again here, it would hide what the earlier layers hold in it."""
    manifest: Manifest = {}
    for directory, dirs, files in os.walk(source):
        for name in dirs + files:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, source)
            if relative in exclude:
                continue
            info = os.lstat(path)
            opaque = stat.S_ISDIR(info.st_mode) and _xattr(path, _OPAQUE) == b"y"
            manifest[relative] = (info.st_ino, info.st_ctime_ns, opaque)
    target.mkdir()
    made: set[str] = set()

    def place(relative: str, *, whole: bool) -> None:
        parent = os.path.dirname(relative)
        if parent and parent not in made:
            place(parent, whole=False)
        if relative in made:
            return
        made.add(relative)
        src, dst = source / relative, target / relative
        info = os.lstat(src)
        if stat.S_ISDIR(info.st_mode):
            os.mkdir(dst)
            was = since.get(relative)
            newly_opaque = manifest[relative][2] and not (was and was[2] and was[0] == info.st_ino)
            _copy_xattrs(src, dst, skip=() if newly_opaque else (_OPAQUE,))
        elif stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISREG(info.st_mode):
            shutil.copyfile(src, dst, follow_symlinks=False)
            _copy_xattrs(src, dst)
        else:  # a whiteout (0:0 character device), a device node, a fifo, a socket
            os.mknod(dst, info.st_mode, info.st_rdev)
        os.lchown(dst, info.st_uid, info.st_gid)
        if not stat.S_ISLNK(info.st_mode):
            os.chmod(dst, stat.S_IMODE(info.st_mode))
        os.utime(dst, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)
        del whole

    for relative, (inode, ctime, _) in sorted(manifest.items()):
        if since.get(relative, (None, None, False))[:2] != (inode, ctime):
            place(relative, whole=True)
    for relative in sorted(set(since) - set(manifest)):
        if os.path.dirname(relative) in since and os.path.dirname(relative) not in manifest:
            continue  # its directory went: one whiteout for the directory is enough
        parent = os.path.dirname(relative)
        if parent and parent not in made:
            place(parent, whole=False)
        os.mknod(target / relative, stat.S_IFCHR | 0o000, os.makedev(0, 0))
    # Directories were made before their contents changed their times: set them again.
    for relative in sorted(made, key=lambda p: p.count("/"), reverse=True):
        info = os.lstat(source / relative)
        if stat.S_ISDIR(info.st_mode):
            os.utime(target / relative, ns=(info.st_atime_ns, info.st_mtime_ns))
    return manifest


def _xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def _copy_xattrs(src: Path, dst: Path, *, skip: tuple[str, ...] = ()) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        if name in skip:
            continue
        with contextlib.suppress(OSError):
            os.setxattr(
                dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False
            )
