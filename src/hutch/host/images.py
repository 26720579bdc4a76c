"""Root filesystem images: recipes in the repo, built with mmdebstrap, cached by hash.

An image lives in ``<images>/<name>/<recipe hash>/rootfs`` (``<images>`` is
``$HUTCH_HOME/images`` unless ``HUTCH_IMAGES_DIR`` says otherwise); ``current`` points
at the hash of the recipe in use. A build writes into a ``.partial`` directory and renames
it into place only when complete, so a half-built image is never used.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hutch.core.catalog import ROOTFS_CATALOG

__all__ = [
    "COMPLETE_MARKER",
    "ImageBuildError",
    "Recipe",
    "build_image",
    "built_images",
    "image_dir",
    "image_rootfs",
    "load_recipe",
]

COMPLETE_MARKER = ".hutch-complete"
RECIPES = Path(__file__).with_name("recipes")
# Bump when the way images are built changes, so every cached image is rebuilt.
BUILDER_VERSION = 2
# sshd's settings in every image that has it: keys only, root by key only. (hutch starts
# sshd on demand with the same settings on its command line, see hutch.core.ssh.)
SSHD_DROP_IN = """\
# Written by hutch: keys only (hutch ssh and ssh-pubkeys put them in authorized_keys).
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
"""
_DROP_DOCS = [
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-include=/usr/share/locale/locale.alias",
]


class ImageBuildError(Exception):
    pass


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """An image recipe (``recipes/<name>.toml``). Beside the packages, a recipe may give
    ``start`` (the command the guest agent starts with every sandbox of the image, as an
    OCI image's Cmd), ``env`` (every sandbox's environment, as its Env), ``files`` (paths
    in the image and their text, written after the packages are installed), ``exclude``
    (dpkg ``path-exclude`` globs: files of installed packages left out), ``unpack``
    (Debian packages whose files are unpacked without installing them or their
    dependencies: for a package that is only data, with heavy dependencies it needs not)
    and ``finish`` (shell commands run in the image last, after every package's triggers)."""

    name: str
    suite: str
    variant: str
    packages: tuple[str, ...]
    start: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    files: tuple[tuple[str, str], ...] = ()
    exclude: tuple[str, ...] = ()
    unpack: tuple[str, ...] = ()
    finish: tuple[str, ...] = ()

    def build_options(self) -> list[str]:
        """mmdebstrap's options for ``exclude``, ``unpack`` and ``finish``."""
        options = [f"--dpkgopt=path-exclude={glob}" for glob in self.exclude]
        for package in self.unpack:
            if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", package):
                raise ImageBuildError(f"recipe unpack {package!r} is not a package name")
            options.append(
                '--customize-hook=chroot "$1" sh -ec \'cd /tmp && apt-get download -q '
                f'{package}\' && dpkg-deb -x "$1"/tmp/{package}_*.deb "$1" '
                f'&& rm "$1"/tmp/{package}_*.deb'
            )
        for command in self.finish:
            if "'" in command:
                raise ImageBuildError(f"recipe finish {command!r} may not hold a single quote")
            options.append(f"--customize-hook=chroot \"$1\" sh -ec '{command}'")
        return options

    @property
    def digest(self) -> str:
        # Fields left empty stay out, so adding a kind of field rebuilds no older image.
        fields = {key: value for key, value in self.__dict__.items() if value}
        canonical = json.dumps(
            {"recipe": fields | {"packages": sorted(self.packages)},
             "builder": BUILDER_VERSION},
            sort_keys=True,
        )  # fmt: skip
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_recipe(name: str) -> Recipe:
    path = RECIPES / (_safe(name) + ".toml")
    if not path.is_file():
        known = ", ".join(image.name for image in ROOTFS_CATALOG)
        raise ImageBuildError(f"no recipe for image {name!r}; known images: {known}")
    data = tomllib.loads(path.read_text())
    return Recipe(
        name=data["name"],
        suite=data["suite"],
        variant=data.get("variant", "apt"),
        packages=tuple(data["packages"]),
        start=tuple(data.get("start", ())),
        env=tuple(sorted(data.get("env", {}).items())),
        files=tuple(sorted(data.get("files", {}).items())),
        exclude=tuple(data.get("exclude", ())),
        unpack=tuple(data.get("unpack", ())),
        finish=tuple(data.get("finish", ())),
    )


def _safe(name: str) -> str:
    return name.replace(":", "_").replace("/", "_")


def image_dir(images: Path, name: str) -> Path:
    """The directory of image ``name`` (``devbox:1`` lives in ``<images>/devbox_1``).

    Names with a ``/`` (imported registry images, ``oci:registry/repo:tag``) live under
    ``<images>/oci/`` with a hash of the exact name, since ``a/b_c`` and ``a_b/c`` would
    otherwise share a directory."""
    if "/" in name:
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        return images / "oci" / f"{_safe(name)[:80]}-{digest}"
    return images / _safe(name)


def image_rootfs(images: Path, name: str) -> Path | None:
    """The root filesystem of the current build of ``name``, or None if there is none."""
    current = image_dir(images, name) / "current"
    if not (current / COMPLETE_MARKER).is_file():
        return None
    return current.resolve() / "rootfs"


def built_images(images: Path) -> list[str]:
    """Names of the catalog images that are fully built in ``images``, in catalog order."""
    return [image.name for image in ROOTFS_CATALOG if image_rootfs(images, image.name) is not None]


def host_apt_sources() -> list[Path]:
    """This machine's own Debian apt sources, so images come from the mirror it uses."""
    candidates = [Path("/etc/apt/sources.list")]
    directory = Path("/etc/apt/sources.list.d")
    if directory.is_dir():
        candidates += sorted(directory.glob("*.sources")) + sorted(directory.glob("*.list"))
    return [
        path
        for path in candidates
        if path.is_file() and "debian" in (text := path.read_text()) and "bookworm" in text
    ]


async def build_image(
    images: Path,
    name: str,
    *,
    force: bool = False,
    progress: Callable[[str], None] = lambda line: None,
) -> Path:
    """Build image ``name`` unless the current build matches its recipe; return its rootfs.

    Builds of one image are serialised across processes (a lock file beside it), so two
    ``hutch images build`` at once never tear down each other's half-built tree."""
    recipe = load_recipe(name)
    base = image_dir(images, name)
    base.mkdir(parents=True, exist_ok=True)
    lock = await asyncio.to_thread(os.open, base / ".build.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        return await _build_locked(images, name, recipe, force=force, progress=progress)
    finally:
        os.close(lock)  # closing the descriptor releases the lock


async def _build_locked(
    images: Path,
    name: str,
    recipe: Recipe,
    *,
    force: bool,
    progress: Callable[[str], None],
) -> Path:
    base = image_dir(images, name)
    target = base / recipe.digest
    if not force and (target / COMPLETE_MARKER).is_file():
        _point_current(base, recipe.digest)
        progress(f"{name} is up to date ({recipe.digest})")
        return target / "rootfs"
    sources = host_apt_sources()
    if not sources:
        raise ImageBuildError("no Debian bookworm apt sources found in /etc/apt")
    partial = base / f"{recipe.digest}.partial"
    await asyncio.to_thread(shutil.rmtree, partial, True)
    partial.mkdir(parents=True)
    command = [
        "mmdebstrap", f"--variant={recipe.variant}", f"--include={','.join(recipe.packages)}",
        *_DROP_DOCS, *recipe.build_options(), "--verbose", recipe.suite,
        str(partial / "rootfs"), *map(str, sources),
    ]  # fmt: skip
    started = time.monotonic()
    progress(f"building {name} ({recipe.digest}) with mmdebstrap: {len(recipe.packages)} packages")
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    tail: list[str] = []
    async for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        tail = [*tail[-30:], line]
        if line.startswith(("I: ", "E: ", "W: ")):
            progress(f"[{time.monotonic() - started:5.1f}s] {line[3:]}")
    if await proc.wait() != 0:
        await asyncio.to_thread(shutil.rmtree, partial, True)
        raise ImageBuildError(f"mmdebstrap failed for {name}:\n" + "\n".join(tail[-15:]))
    rootfs = partial / "rootfs"
    (rootfs / ".hutch" / "guest").mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(_no_shared_host_keys, rootfs)
    await asyncio.to_thread(_write_recipe_files, partial, recipe)
    (partial / COMPLETE_MARKER).write_text(json.dumps({"name": name, "digest": recipe.digest}))
    await asyncio.to_thread(shutil.rmtree, target, True)
    partial.rename(target)
    _point_current(base, recipe.digest)
    progress(f"built {name} in {time.monotonic() - started:.0f}s: {target / 'rootfs'}")
    return target / "rootfs"


def _no_shared_host_keys(rootfs: Path) -> None:
    """Take out the SSH host keys the package made at install: every sandbox of the image
    would share them. Each sandbox makes its own at its first sshd start."""
    ssh = rootfs / "etc" / "ssh"
    for key in ssh.glob("ssh_host_*"):
        key.unlink()
    if (ssh / "sshd_config.d").is_dir():
        (ssh / "sshd_config.d" / "hutch.conf").write_text(SSHD_DROP_IN)


def _write_recipe_files(build: Path, recipe: Recipe) -> None:
    """The recipe's own files, and its start command and environment as the image's
    config (``image.json``, read by the drivers and :func:`hutch.host.layers.resolve_image`)."""
    rootfs = build / "rootfs"
    for path, text in recipe.files:
        if not path.startswith("/") or ".." in path.split("/"):
            raise ImageBuildError(f"recipe file {path!r} must be an absolute path")
        target = rootfs / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    if recipe.start or recipe.env:
        from hutch.host.image_config import ImageConfig, write_image_config

        write_image_config(build, ImageConfig(env=dict(recipe.env), cmd=recipe.start))


def _point_current(base: Path, digest: str) -> None:
    link = base / "current"
    temp = base / f".current.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    temp.symlink_to(digest)
    temp.replace(link)


def print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
