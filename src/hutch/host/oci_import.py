"""OCI images from a registry, pulled into hutch's image format.

An imported image is laid out like a catalog image (:mod:`hutch.host.images`):
``<images>/oci/<name>-<hash>/<digest>/rootfs`` plus ``image.json`` (the image's config:
Env, WorkingDir, User, Entrypoint, Cmd, ExposedPorts, Labels) and the completion marker,
with ``current`` pointing at the digest in use. Its name, ``oci:<registry>/<repo>:<tag>``,
is what the runc driver resolves (:func:`hutch.host.images.image_rootfs`), so a sandbox or
a template build runs on it as a read-only lower layer like ``devbox:1``.

How: ``skopeo`` (Debian) copies the image from the registry into an OCI layout on disk
(it speaks the registry protocol, Docker and OCI manifests, manifest lists, and picks
this machine's platform), then ``umoci`` (Debian) unpacks the layers in order into one
directory, applying whiteouts (``.wh.name`` deletes, ``.wh..wh..opq`` opaque
directories) and keeping owners, modes, links and device files. Both are maintained,
packaged, and do the fiddly parts (layer order, whiteouts, hard links across layers) the
way container runtimes do; a Python client would leave the layer application to us.

Only registries on the operator's allowlist (``HUTCH_TEMPLATE_REGISTRIES``) are pulled
from; any other is refused before anything is fetched. A pull of a tag whose registry
digest is already here is a no-op. A half-done import is never used (it is built in a
``.partial`` directory and renamed into place), and imports of one name are serialised
across processes.

Entry point for other code: :func:`import_image`.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from hutch.core.errors import HutchError
from hutch.host.image_config import IMAGE_CONFIG_FILE, ImageConfig, write_image_config
from hutch.host.images import COMPLETE_MARKER, _point_current, image_dir
from hutch.host.oci_ref import ImageReference, check_allowed, parse_reference
from hutch.host.proc import CommandFailed, run
from hutch.settings import Settings

__all__ = [
    "ImageImportError",
    "ImageRef",
    "image_name",
    "import_image",
    "imported_images",
]

PULL_TIMEOUT_S = 1800.0
MIB = 1024 * 1024
# Signatures are not checked (no keys are configured); the allowlist is the gate.
_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}


class ImageImportError(HutchError):
    """The image could not be pulled or unpacked; the message says why (the registry's
    answer, or what the image lacks)."""

    status: ClassVar[int] = 502
    default_code: ClassVar[str] = "image_import_failed"


@dataclass(frozen=True, kw_only=True)
class ImageRef:
    """An imported image on this host."""

    name: str
    """The image's name in hutch (``oci:registry/repo:tag``): what a sandbox's ``rootfs``
    or the runc driver's image lookup takes."""
    reference: ImageReference
    digest: str
    """The registry's manifest digest (``sha256:…``) of what was pulled."""
    rootfs: Path
    config: ImageConfig


def image_name(reference: ImageReference) -> str:
    return f"oci:{reference.canonical}"


def imported_images(images: Path) -> list[tuple[str, Path]]:
    """``(name, rootfs)`` of every completely imported image under ``images``."""
    found = []
    root = images / "oci"
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        marker = directory / "current" / COMPLETE_MARKER
        try:
            name = json.loads(marker.read_text())["name"]
        except (OSError, ValueError, KeyError):
            continue
        found.append((str(name), (directory / "current").resolve() / "rootfs"))
    return found


async def import_image(
    ref: str,
    settings: Settings,
    *,
    progress: Callable[[str], None] = lambda line: None,
) -> ImageRef:
    """Pull ``ref`` (``[docker://]registry/repo[:tag][@sha256:…]``) into this host's images.

    Raises :class:`~hutch.host.oci_ref.RegistryNotAllowed` (a 400, nothing fetched) when
    the registry is not in ``HUTCH_TEMPLATE_REGISTRIES``, ``InvalidInput`` for a malformed
    reference, and :class:`ImageImportError` when the registry refuses, or the image is
    not for Linux or is over ``HUTCH_IMAGE_IMPORT_MAX_BYTES``. Returns
    once the image is complete; repeating it for an unchanged tag costs one manifest
    lookup. ``progress`` gets a line per step (for build logs).
    """
    reference = parse_reference(ref)
    entry = check_allowed(reference, settings.template_registry_list, field="image")
    name = image_name(reference)
    base = image_dir(settings.images_path, name)
    base.mkdir(parents=True, exist_ok=True)
    tls = _source_options(entry.plain_http, settings.template_registry_auth_file)
    lock = await asyncio.to_thread(os.open, base / ".import.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        return await _import_locked(
            reference, name, base, tls, progress, max_bytes=settings.image_import_max_bytes
        )
    finally:
        os.close(lock)


async def _import_locked(
    reference: ImageReference,
    name: str,
    base: Path,
    tls: tuple[str, ...],
    progress: Callable[[str], None],
    *,
    max_bytes: int,
) -> ImageRef:
    started = time.monotonic()
    policy = base.parent / "policy.json"
    inspected = await _skopeo("inspect", *tls, reference.transport, timeout_s=120, policy=policy)
    digest = str(json.loads(inspected).get("Digest") or "")
    if not digest.startswith("sha256:"):
        raise ImageImportError(f"{reference}: the registry gave no manifest digest")
    key = digest.removeprefix("sha256:")[:16]
    target = base / key
    if (target / COMPLETE_MARKER).is_file():
        _point_current(base, key)
        progress(f"{reference} is up to date ({digest[:19]})")
        return _image_ref(name, reference, digest, target)
    declared = await _declared_size(reference, tls, policy)
    if declared > max_bytes:
        raise ImageImportError(
            f"{reference}: its layers are {declared / MIB:.0f} MiB compressed, over this "
            f"host's cap of {max_bytes / MIB:.0f} MiB (HUTCH_IMAGE_IMPORT_MAX_BYTES)"
        )
    partial = base / f"{key}.partial"
    await asyncio.to_thread(shutil.rmtree, partial, True)
    partial.mkdir()
    try:
        layout = partial / "layout"
        progress(f"pulling {reference} ({digest[:19]})")
        src_tls = tuple("--src-" + arg.removeprefix("--") for arg in tls)  # copy's spelling
        await _skopeo("copy", "--quiet", *src_tls, reference.transport, f"oci:{layout}:image",
                      timeout_s=PULL_TIMEOUT_S, policy=policy)  # fmt: skip
        config = await asyncio.to_thread(_layout_config, layout)
        progress(f"unpacking {reference}")
        try:
            await run("umoci", "unpack", "--image", f"{layout}:image", str(partial / "bundle"),
                      timeout_s=PULL_TIMEOUT_S)  # fmt: skip
        except CommandFailed as exc:
            raise ImageImportError(f"{reference}: unpacking failed: {exc.detail}") from exc
        rootfs = partial / "rootfs"
        (partial / "bundle" / "rootfs").rename(rootfs)
        unpacked = await asyncio.to_thread(_tree_bytes, rootfs)
        if unpacked > max_bytes:
            raise ImageImportError(
                f"{reference}: it unpacks to {unpacked / MIB:.0f} MiB, over this host's cap of "
                f"{max_bytes / MIB:.0f} MiB (HUTCH_IMAGE_IMPORT_MAX_BYTES)"
            )
        os.chmod(rootfs, 0o755)
        (rootfs / ".hutch" / "guest").mkdir(parents=True, exist_ok=True)
        write_image_config(partial, config)
        for leftover in ("layout", "bundle"):
            await asyncio.to_thread(shutil.rmtree, partial / leftover, True)
        marker = {"name": name, "reference": reference.canonical, "digest": digest}
        (partial / COMPLETE_MARKER).write_text(json.dumps(marker))
        await asyncio.to_thread(shutil.rmtree, target, True)
        partial.rename(target)
    except BaseException:
        await asyncio.shield(asyncio.to_thread(shutil.rmtree, partial, True))
        raise
    _point_current(base, key)
    progress(f"imported {reference} in {time.monotonic() - started:.1f}s as {name}")
    return _image_ref(name, reference, digest, target)


def _source_options(plain_http: bool, auth_file: Path | None) -> tuple[str, ...]:
    """skopeo's options for the registry (as ``inspect`` spells them): plain HTTP or not,
    and the operator's credentials file, else anonymous (never root's own logins)."""
    options = ["--tls-verify=false"] if plain_http else []
    if auth_file is None:
        options.append("--no-creds")
    elif not auth_file.is_file():
        raise ImageImportError(
            f"the registry credentials file {auth_file} (HUTCH_TEMPLATE_REGISTRY_AUTH_FILE) "
            "does not exist"
        )
    else:
        options.append(f"--authfile={auth_file}")
    return tuple(options)


async def _declared_size(reference: ImageReference, tls: tuple[str, ...], policy: Path) -> int:
    """The compressed size of the image's layers as its manifest declares them (for this
    machine's platform when the tag is a manifest list); 0 when the manifest says none."""
    raw = json.loads(
        await _skopeo("inspect", "--raw", *tls, reference.transport, timeout_s=120, policy=policy)
    )
    if "manifests" in raw:
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        chosen = [
            m for m in raw["manifests"]
            if (m.get("platform") or {}).get("os") == "linux"
            and (m.get("platform") or {}).get("architecture") == arch
        ]  # fmt: skip
        if not chosen:
            raise ImageImportError(f"{reference} has no image for linux/{arch}")
        pinned = f"docker://{reference.registry}/{reference.repository}@{chosen[0]['digest']}"
        raw = json.loads(
            await _skopeo("inspect", "--raw", *tls, pinned, timeout_s=120, policy=policy)
        )
    return sum(int(layer.get("size") or 0) for layer in raw.get("layers") or [])


def _tree_bytes(root: Path) -> int:
    """Bytes allocated to the files under ``root`` (hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(directory, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def _image_ref(name: str, reference: ImageReference, digest: str, build: Path) -> ImageRef:
    config = ImageConfig.from_json(json.loads((build / IMAGE_CONFIG_FILE).read_text()))
    return ImageRef(
        name=name, reference=reference, digest=digest, rootfs=build / "rootfs", config=config
    )


def _write_policy(policy: Path) -> None:
    if not policy.is_file():
        temp = policy.with_suffix(f".{os.getpid()}.tmp")
        temp.write_text(json.dumps(_POLICY))
        temp.replace(policy)


async def _skopeo(*args: str, timeout_s: float, policy: Path) -> bytes:
    await asyncio.to_thread(_write_policy, policy)
    try:
        result = await run("skopeo", "--policy", str(policy), *args, timeout_s=timeout_s)
    except CommandFailed as exc:
        raise ImageImportError(f"skopeo {args[0]} {args[-1]}: {_short(exc.detail)}") from exc
    except FileNotFoundError as exc:
        raise ImageImportError("skopeo is not installed (Debian package skopeo)") from exc
    return result.stdout


def _short(detail: str) -> str:
    lines = [line for line in detail.splitlines() if line.strip()]
    text = lines[-1] if lines else detail
    return text.removeprefix('time="').split('msg="', 1)[-1].rstrip('"')[:500]


def _layout_config(layout: Path) -> ImageConfig:
    """The image config of the one image in an OCI layout written by skopeo."""
    index = json.loads((layout / "index.json").read_text())
    manifests = index.get("manifests") or []
    if not manifests:
        raise ImageImportError("the pulled image has no manifest")
    manifest = json.loads(_blob(layout, manifests[0]["digest"]))
    config = json.loads(_blob(layout, manifest["config"]["digest"]))
    os_name = config.get("os", "linux")
    if os_name != "linux":
        raise ImageImportError(f"the image is for {os_name}, not linux")
    return ImageConfig.from_json(config.get("config"))


def _blob(layout: Path, digest: str) -> bytes:
    algorithm, _, value = digest.partition(":")
    return (layout / "blobs" / algorithm / value).read_bytes()
