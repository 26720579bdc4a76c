"""Images a host lacks, fetched from a host that has them (never rebuilt).

A template's image is a list of read-only lower directories (``$HUTCH_HOME/layers/<key>``
over a catalog or imported root filesystem under the images directory) and a start
environment (:mod:`hutch.host.layers`); a catalog image is one root filesystem
(:mod:`hutch.host.images`). Placement may choose a host that lacks the image (when no
host that has it fits, or ``host_id``/``node_selector`` say so): the control plane then
asks that host's agent to fetch it (``POST /internal/v1/images/fetch``) before passing the
create on, and the agent copies what it lacks **from the agent of a host that has it**,
over the same TCP link and with the same host tokens as every control ↔ agent request:

- ``GET /internal/v1/images/{name}``: the image's manifest (its lowers, as layer keys
  and paths relative to the images directory, and its environment);
- ``GET /internal/v1/images/{name}/lowers/{n}``: lower ``n`` as a tar stream (owners,
  modes, extended attributes and overlayfs whiteouts kept).

Why agent to agent and not the snapshot store: the S3 store is optional (most clusters
have none), a copy from the host that has the image is one transfer instead of an upload
and a download, and the layers are immutable once complete, so any holder's copy is
the same. A layer or root filesystem already present (by key or path) is not copied
again: a template built on a base the host has costs only its own layers.

All or nothing: each lower is unpacked into a partial directory renamed into place only
once its stream ended whole and ``tar`` accepted it, and the image's own file is written
last (an atomic rename): a failed fetch leaves no image, and the create is answered 503
saying which image and which host failed.
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
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from hutch.cluster.tls import client_context, tls_enabled
from hutch.core.catalog import ROOTFS_CATALOG
from hutch.core.errors import Conflict, InvalidInput, NotFound, Unavailable
from hutch.host.images import COMPLETE_MARKER, _point_current, image_rootfs
from hutch.host.layers import LayerStore, StartSettings, image_path, write_image
from hutch.settings import Settings

__all__ = [
    "ImageSource",
    "ensure_image",
    "fetch_image",
    "image_manifest",
    "router",
    "sweep_partial_fetches",
]

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Hutch-Agent-Token"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_CATALOG = {image.name for image in ROOTFS_CATALOG}
_TAR_FLAGS = ("--xattrs", "--xattrs-include=*", "--numeric-owner")
_CHUNK = 1 << 20
_FETCHING = ".fetching-"
_locks: dict[str, asyncio.Lock] = {}


@dataclass(frozen=True)
class ImageSource:
    """An agent to fetch from (or to ask to fetch): its host id, address and host token."""

    host_id: str
    address: str
    token: str


# -- the host that has the image --------------------------------------------------------


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name) or ".." in name:
        raise InvalidInput(f"{name!r} is not an image name", field="image")


def image_manifest(settings: Settings, name: str) -> dict[str, Any]:
    """What image ``name`` is made of here: ``lowers`` (top first), each a layer
    (``{"layer": key, "size": bytes}``) or a root filesystem's build directory relative to
    the images directory (``{"rootfs": "devbox_1/<digest>"}``), and ``env`` (None for a
    catalog image, whose build carries its own settings). NotFound when it is not here;
    Conflict when a lower is somewhere this host cannot serve it from."""
    _check_name(name)
    images = settings.images_path.resolve()
    layers = LayerStore(settings.home / "layers")
    rootfs = image_rootfs(settings.images_path, name)
    if rootfs is not None:
        lowers, env = [str(rootfs)], None
    else:
        try:
            data = json.loads(image_path(settings.home, name).read_text())
            lowers, env = [str(p) for p in data["lowers"]], dict(data["env"])
        except (OSError, ValueError, KeyError, TypeError):
            raise NotFound(f"no image {name!r} on this host", field="image") from None
    described: list[dict[str, Any]] = []
    for lower in lowers:
        path = Path(lower).resolve()
        if path.parent == layers.directory.resolve() and layers.has(path.name):
            described.append({"layer": path.name, "size": layers.size(path.name)})
        elif (
            path.name == "rootfs"
            and path.parent.is_relative_to(images)
            and (path.parent / COMPLETE_MARKER).is_file()
        ):
            described.append({"rootfs": str(path.parent.relative_to(images))})
        else:
            raise Conflict(f"image {name!r} has a lower layer this host cannot serve ({lower}: "
                           "missing or incomplete)", field="image")  # fmt: skip
    return {"name": name, "lowers": described, "env": env}


def _lower_directory(settings: Settings, entry: dict[str, Any]) -> Path:
    if "layer" in entry:
        return settings.home / "layers" / str(entry["layer"])
    return settings.images_path / str(entry["rootfs"])


async def _tar_stream(directory: Path) -> AsyncIterator[bytes]:
    """``directory`` as a tar stream; an error (not the archive's end) if tar failed, so
    the reader never takes a cut archive for a whole one."""
    proc = await asyncio.create_subprocess_exec(
        "tar", *_TAR_FLAGS, "-C", str(directory), "-cf", "-", ".",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        while chunk := await proc.stdout.read(_CHUNK):
            yield chunk
        errors = await proc.stderr.read()
        if await proc.wait() != 0:
            raise RuntimeError(f"tar of {directory} failed: {errors.decode(errors='replace')}")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# -- the host that lacks it -------------------------------------------------------------


async def fetch_image(
    settings: Settings, name: str, sources: Sequence[ImageSource]
) -> dict[str, Any]:
    """Make image ``name`` present here, copied from the first of ``sources`` that can
    give it: ``{"fetched": bool, "bytes": n, "from": host}``. Unavailable (503) saying
    why when none could; nothing half-copied is ever left usable."""
    _check_name(name)
    lock = _locks.setdefault(name, asyncio.Lock())
    async with lock:
        if _present(settings, name):
            return {"fetched": False, "bytes": 0, "from": None}
        failures: list[str] = []
        for source in sources:
            try:
                copied = await _fetch_from(settings, name, source)
            except _FetchFailed as exc:
                log.warning("fetching image %s from %s failed: %s", name, source.host_id, exc)
                failures.append(f"from {source.host_id}: {exc}")
                continue
            return {"fetched": True, "bytes": copied, "from": source.host_id}
    if not failures:
        raise Unavailable(f"no host has the image {name!r} to fetch it from")
    raise Unavailable(f"the image {name!r} could not be fetched ({'; '.join(failures)})")


def _present(settings: Settings, name: str) -> bool:
    if image_rootfs(settings.images_path, name) is not None:
        return True
    try:
        lowers = json.loads(image_path(settings.home, name).read_text())["lowers"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(lowers) and all(Path(p).is_dir() for p in lowers)


class _FetchFailed(Exception):
    pass


def _verify(settings: Settings) -> ssl.SSLContext | bool:
    """How to call another part: with the cluster's TLS (``HUTCH_TLS_*``) when it has it."""
    return client_context(settings) if tls_enabled(settings) else True


async def _fetch_from(settings: Settings, name: str, source: ImageSource) -> int:
    headers = {TOKEN_HEADER: source.token}
    timeout = httpx.Timeout(60.0, connect=5.0)
    copied = 0
    async with httpx.AsyncClient(base_url=source.address, headers=headers, timeout=timeout,
                                 verify=_verify(settings)) as peer:  # fmt: skip
        try:
            answer = await peer.get(f"/internal/v1/images/{name}")
        except httpx.HTTPError as exc:
            raise _FetchFailed(f"cannot reach its agent: {exc!r}") from None
        if answer.status_code != 200:
            raise _FetchFailed(f"its agent answered {answer.status_code}: {answer.text[:300]}")
        manifest = _checked_manifest(answer)
        lowers: list[Path] = []  # top first, as the manifest lists them
        for index, entry in enumerate(manifest["lowers"]):
            target = _lower_directory(settings, entry)
            if not _complete(settings, entry, target):
                copied += await _copy_lower(settings, peer, name, index, entry, target)
            lowers.append(target if "layer" in entry else target / "rootfs")
    if manifest["env"] is None:  # a catalog image: its build directory is the whole of it
        build = lowers[0].parent
        if not (build.parent / "current" / COMPLETE_MARKER).is_file():
            _point_current(build.parent, build.name)
        if image_rootfs(settings.images_path, name) is None:
            raise _FetchFailed("the copied root filesystem is not this host's current build")
        return copied
    env = {str(k): str(v) for k, v in manifest["env"].items()}
    write_image(settings.home, name, images=settings.images_path, root="",
                layers=list(reversed(lowers)), config=StartSettings(env=env))  # fmt: skip
    return copied


def _checked_manifest(answer: httpx.Response) -> dict[str, Any]:
    """The holder's manifest, or :class:`_FetchFailed` saying what is wrong with it (the
    next holder is tried): a list of lowers, each one layer key or one root filesystem
    path (strings), and an environment of strings or None."""
    try:
        manifest = answer.json()
    except ValueError:
        raise _FetchFailed(
            f"its agent sent a manifest that is not JSON: {answer.text[:120]!r}"
        ) from None
    lowers = manifest.get("lowers") if isinstance(manifest, dict) else None
    env = manifest.get("env") if isinstance(manifest, dict) else None
    if (
        not isinstance(lowers, list)
        or not lowers
        or not all(
            isinstance(entry, dict)
            and len(entry.keys() & {"layer", "rootfs"}) == 1
            and isinstance(entry.get("layer", entry.get("rootfs")), str)
            and isinstance(entry.get("size", 0), int)
            for entry in lowers
        )
        or not (
            env is None or (isinstance(env, dict) and all(isinstance(v, str) for v in env.values()))
        )
    ):
        raise _FetchFailed(f"its agent sent a manifest that is not one: {answer.text[:200]!r}")
    return {"lowers": lowers, "env": env}


def _complete(settings: Settings, entry: dict[str, Any], target: Path) -> bool:
    if "layer" in entry:
        return LayerStore(settings.home / "layers").has(str(entry["layer"]))
    return (target / COMPLETE_MARKER).is_file()


async def _copy_lower(
    settings: Settings,
    peer: httpx.AsyncClient,
    name: str,
    index: int,
    entry: dict[str, Any],
    target: Path,
) -> int:
    """Unpack lower ``index`` into a partial directory, renamed to ``target`` once whole.
    One copy of a lower at a time on this host: two images that share it (fetched at
    once: their locks are per image) wait for each other, and the second finds it."""
    if "layer" in entry and not re.fullmatch(r"[A-Za-z0-9_.-]+", str(entry["layer"])):
        raise _FetchFailed(f"a layer key {entry['layer']!r} that is not one")
    if "rootfs" in entry and (".." in Path(entry["rootfs"]).parts or entry["rootfs"][:1] == "/"):
        raise _FetchFailed(f"a root filesystem path {entry['rootfs']!r} outside the images")
    async with _locks.setdefault(f"lower:{target}", asyncio.Lock()):
        if _complete(settings, entry, target):
            return 0
        return await _unpack_lower(settings, peer, name, index, entry, target)


def _partial_name(settings: Settings, target: Path) -> Path:
    """Where a lower is unpacked before it is whole: named for this host (an images
    directory may be shared by hosts; each sweeps only its own at its start)."""
    return target.with_name(f"{target.name}{_FETCHING}{_host_tag(settings)}-{secrets.token_hex(4)}")


def _host_tag(settings: Settings) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", settings.host_id or "host")


async def _unpack_lower(
    settings: Settings,
    peer: httpx.AsyncClient,
    name: str,
    index: int,
    entry: dict[str, Any],
    target: Path,
) -> int:
    partial = _partial_name(settings, target)
    partial.mkdir(parents=True)
    size = 0
    try:
        proc = await asyncio.create_subprocess_exec(
            "tar", *_TAR_FLAGS, "--same-owner", "--same-permissions", "-C", str(partial),
            "-xf", "-", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stderr is not None
        try:
            async with peer.stream("GET", f"/internal/v1/images/{name}/lowers/{index}") as got:
                if got.status_code != 200:
                    body = (await got.aread())[:300].decode(errors="replace")
                    raise _FetchFailed(f"its agent answered {got.status_code}: {body}")
                async for chunk in got.aiter_raw(_CHUNK):
                    size += len(chunk)
                    proc.stdin.write(chunk)
                    await proc.stdin.drain()
        except httpx.HTTPError as exc:
            raise _FetchFailed(f"the copy was cut after {size} bytes: {exc!r}") from None
        except (BrokenPipeError, ConnectionResetError):
            # tar stopped reading before the stream's end: it refused what it was sent.
            stopped = (await proc.stderr.read()).decode(errors="replace")[:300]
            raise _FetchFailed(f"tar stopped reading the copy after {size} bytes "
                               f"(exit {await proc.wait()}): {stopped}") from None  # fmt: skip
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            errors = await proc.stderr.read()
            code = await proc.wait()
        if code != 0:
            raise _FetchFailed(f"tar refused the copy: {errors.decode(errors='replace')[:300]}")
        if "layer" in entry:
            meta = target.with_name(f"{target.name}.json")
            await asyncio.to_thread(_install, partial, target)
            temp = meta.with_name(f".{meta.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            temp.write_text(json.dumps({"size": int(entry.get("size") or size),
                                        "made": time.time(), "fetched": True}))  # fmt: skip
            temp.replace(meta)
        else:
            if not (partial / COMPLETE_MARKER).is_file():
                raise _FetchFailed("the root filesystem came without its completion marker")
            await asyncio.to_thread(_install, partial, target)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, partial, True)
        raise
    log.info("fetched lower %s of image %s (%d bytes)", target.name, name, size)
    return size


def _install(partial: Path, target: Path) -> None:
    """Rename ``partial`` to ``target``; one there already (another fetch) is kept."""
    try:
        partial.rename(target)
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(partial, ignore_errors=True)


def sweep_partial_fetches(settings: Settings) -> list[Path]:
    """Remove the root filesystems this host was fetching when it was stopped (a kill -9
    mid-copy leaves ``images/<name>/<build>.fetching-<host>-…``); return them. A partial
    layer (``layers/<key>.fetching-…``, never marked complete) goes with the layer
    store's own sweep (:meth:`~hutch.host.layers.LayerStore.sweep_partials`)."""
    images = settings.images_path
    mine = f"{_FETCHING}{_host_tag(settings)}-"
    if not images.is_dir():
        return []
    removed = []
    for partial in images.glob(f"*/*{mine}*"):
        if partial.is_dir() and not partial.is_symlink():
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial)
            log.warning("removed %s, a fetch this host did not finish", partial)
    return removed


# -- the control plane's side -----------------------------------------------------------


async def ensure_image(
    settings: Settings, target: ImageSource, name: str, sources: Sequence[ImageSource]
) -> None:
    """Ask ``target``'s agent to fetch image ``name`` from ``sources`` (holders, best
    first); returns once it has it. Unavailable (503) saying why otherwise."""
    body = {"image": name, "sources": [s.__dict__ for s in sources]}
    timeout = httpx.Timeout(1800.0, connect=5.0)
    try:
        async with httpx.AsyncClient(timeout=timeout, verify=_verify(settings)) as client:
            answer = await client.post(f"{target.address}/internal/v1/images/fetch", json=body,
                                       headers={TOKEN_HEADER: target.token})  # fmt: skip
    except httpx.HTTPError as exc:
        raise Unavailable(f"host {target.host_id!r} could not be asked to fetch the image "
                          f"{name!r}: {exc!r}", headers={"Retry-After": "5"}) from None  # fmt: skip
    if answer.status_code == 200:
        return
    try:
        payload = answer.json()
        why = payload.get("message") or payload.get("data") or answer.text
    except ValueError:
        why = answer.text
    if isinstance(why, dict):
        why = "; ".join(str(v) for v in why.values())
    raise Unavailable(f"host {target.host_id!r} lacks the image {name!r} and could not fetch "
                      f"it: {str(why)[:600]}", headers={"Retry-After": "5"})  # fmt: skip


# -- routes (a cluster's agent; over TCP only with its host token) -----------------------

router = APIRouter(prefix="/internal/v1/images", include_in_schema=False)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.services.settings
    return settings


@router.get("/{name}")
async def manifest(name: str, request: Request) -> dict[str, Any]:
    return await asyncio.to_thread(image_manifest, _settings(request), name)


@router.get("/{name}/lowers/{index}")
async def lower(name: str, index: int, request: Request) -> StreamingResponse:
    settings = _settings(request)
    described = await asyncio.to_thread(image_manifest, settings, name)
    if not 0 <= index < len(described["lowers"]):
        raise NotFound(f"image {name!r} has no lower {index}", field="index")
    directory = _lower_directory(settings, described["lowers"][index])
    return StreamingResponse(_tar_stream(directory), media_type="application/x-tar")


class _SourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host_id: str = Field(min_length=1, max_length=64)
    address: str = Field(min_length=1, max_length=255)
    token: str = Field(min_length=1, max_length=200)


class _FetchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, max_length=128)
    sources: list[_SourceIn] = Field(max_length=16)


@router.post("/fetch")
async def fetch(body: _FetchIn, request: Request) -> dict[str, Any]:
    """Fetch ``image`` from the first of ``sources`` that gives it (the control plane asks
    this before passing on a create placed here)."""
    sources = [ImageSource(s.host_id, s.address.rstrip("/"), s.token) for s in body.sources]
    done = await fetch_image(_settings(request), body.image, sources)
    return {"status": "success", "data": done}
