"""Draining with the S3 snapshot store: a draining host's hibernated gVisor sandboxes move
to other hosts, where they resume with their processes.

A hibernated gVisor sandbox is its memory snapshot (``runsc checkpoint``), which the
snapshot store keeps in S3 already (``HUTCH_SNAPSHOT_STORE``,
:mod:`hutch.core.snapshot_store`), and its disk file on the host (a sparse btrfs file).
Everything else a host runs it with (its OCI bundle, its ``/etc`` names, its addresses)
is made by the host that takes it, from the store's record, as a create makes it: nothing
that could change what runs on a host (hooks, mounts, capabilities) comes from the
bucket. Running sandboxes are not moved (they keep running until stopped); neither are
paused-in-memory, runc or private-network ones.

The agent of a ``draining`` host, every few seconds, for each such sandbox of its own
(the service's side: :mod:`hutch.core.sandbox_move`), under the sandbox's lock:

1. places it like a create (:class:`~hutch.cluster.placement.Placer`: an active host
   with the gvisor runtime and room, its room held for the move; the image fetched there
   if it lacks it). No host can take it: nothing is uploaded, the agent's log says why
   (once per reason), and the next pass tries again;
2. puts its snapshot in the store if it is not there yet, and uploads its disk file
   once (``tar --sparse``, as ``<prefix>/<id>.moving/sandbox.tar``), keeping its SHA-256;
3. asks the chosen host's agent to take it (``POST /internal/v1/moves/{id}`` with its
   host token and the digest): that agent downloads the disk, refuses it unless its
   digest is the one the draining host sent (over the agents' authenticated link, not
   through the bucket) and it is one regular file, makes the rest itself, and moves the
   row to itself with an address of its own pool, still ``paused``: a resume there
   fetches the snapshot and restores it (:meth:`SandboxService.resume`);
4. when the row is another host's (also when that host's answer was lost), what is left
   of it on the draining host goes; otherwise nothing changed and the upload is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import tarfile
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from hutch.cluster.images import TOKEN_HEADER, ImageSource, _verify, ensure_image
from hutch.cluster.membership import Membership
from hutch.cluster.placement import PlacementRequest, Placer
from hutch.cluster.residence import RESIDENTS
from hutch.core.errors import Conflict, HutchError, Unavailable
from hutch.core.sandboxes import SandboxService
from hutch.core.snapshot_store import S3SnapshotStore, SnapshotStoreError
from hutch.host.drivers.base import DriverError
from hutch.host.proc import CommandFailed, run
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.models import Host, SandboxRecord

__all__ = ["DrainMover", "router", "sweep_partial_moves"]

log = logging.getLogger(__name__)

_MOVING = "sandbox.tar"
# What a move keeps beside the sandboxes' directories while it runs (``.<id>`` and one of
# these): the draining host's upload, the taking host's download and its unpacking.
_LEFT_BY_MOVES = (".moving.tar", ".adopting.tar", ".adopting")


def _beside(disk: Path, sandbox_id: str, what: str) -> Path:
    assert what in _LEFT_BY_MOVES
    return disk.parent.with_name(f".{sandbox_id}{what}")


def sweep_partial_moves(settings: Settings) -> list[Path]:
    """Remove what moves cut by a kill -9 (or an OOM kill) left beside the sandboxes'
    directories: a disk's archive the size of its data, which nothing else removes (it is
    no sandbox's directory); return them. Call at the agent's start, before any move."""
    sandboxes = settings.home / "sandboxes"
    if not sandboxes.is_dir():
        return []
    removed = []
    for path in sandboxes.iterdir():
        if not (path.name.startswith(".sb_") and path.name.endswith(_LEFT_BY_MOVES)):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
        log.warning("removed %s, left by a move this host did not finish", path)
    return removed


def _object(store: S3SnapshotStore, sandbox_id: str) -> str:
    return "/".join(p for p in (store.prefix, f"{sandbox_id}.moving", _MOVING) if p)


class DrainMover:
    """Moves this host's hibernated gVisor sandboxes away while it is draining."""

    def __init__(self, settings: Settings, db: Database, sandboxes: SandboxService,
                 membership: Membership) -> None:  # fmt: skip
        self._settings = settings
        self._db = db
        self._sandboxes = sandboxes
        self._membership = membership
        self._placer = Placer(db, dead_after_s=settings.host_dead_after_s,
                              cpu_overcommit=settings.cpu_overcommit)  # fmt: skip
        self._said: dict[str, str] = {}  # why each sandbox was not moved, last said

    async def run_forever(self, every_s: float) -> None:
        try:
            while True:
                await asyncio.sleep(every_s)
                if not self._sandboxes.draining() or self._sandboxes.s3_snapshots is None:
                    continue
                try:
                    await self.move_all()
                except Exception:
                    log.warning("moving sandboxes off this draining host failed", exc_info=True)
        finally:  # cancelled at the agent's stop: its placer's own connections go too
            await asyncio.shield(self._placer.aclose())

    async def move_all(self) -> list[str]:
        """Move every hibernated gVisor sandbox of this host; return those moved."""
        for sandbox_id in await self._sandboxes.let_go_of_moved():
            log.info("removed what was left of %s, which another host took", sandbox_id)
        moved = []
        for sandbox_id in await self._sandboxes.movable_here():
            try:
                if await self.move(sandbox_id):
                    moved.append(sandbox_id)
                    self._said.pop(sandbox_id, None)
            except (HutchError, SnapshotStoreError, DriverError, OSError) as exc:
                # Said once per sandbox and reason (this runs every few seconds).
                if self._said.get(sandbox_id) != str(exc):
                    self._said[sandbox_id] = str(exc)
                    log.warning("%s stays on this draining host for now: %s", sandbox_id, exc)
        return moved

    async def move(self, sandbox_id: str) -> bool:
        """Move one sandbox (see the module's docstring); whether it moved."""
        store = self._sandboxes.s3_snapshots
        if store is None:
            return False
        # Requests routed to it from a control plane's kept route are checked against
        # the store from now on (hutch.cluster.residence), not against what was known.
        with RESIDENTS.leaving(sandbox_id):
            return await self._move(store, sandbox_id)

    async def _move(self, store: S3SnapshotStore, sandbox_id: str) -> bool:
        failed: BaseException | None = None
        uploading = moved = False
        try:
            async with self._sandboxes.moving_out(sandbox_id) as out:
                if out is None:
                    return False
                record = out.record
                want = PlacementRequest(mem_mib=record.mem_mib, vcpu=record.vcpu,
                                        image=record.rootfs, runtime="gvisor")  # fmt: skip
                try:
                    placed = await self._placer.place(want)
                except Unavailable as exc:  # before anything is uploaded
                    why = f"no host can take it now ({exc}); nothing was uploaded"
                    raise Unavailable(f"{why}, tried again at the next pass") from None
                try:
                    target = await self._agent(placed.host_id)
                    if placed.sources:
                        holders = [await self._agent(h) for h in placed.sources]
                        await ensure_image(self._settings, target, record.rootfs, holders)
                    disk = await out.ready()  # its snapshot in the store; its disk settled
                    uploading = True
                    digest = await _upload_disk(store, sandbox_id, disk)
                    try:
                        await self._ask(target, record, digest)
                    except (HutchError, httpx.HTTPError) as exc:
                        failed = exc  # the row says whether it moved all the same
                finally:
                    await self._placer.release(placed)
            moved = out.moved
        finally:
            if uploading and not moved:  # (once taken, the other host deletes it)
                await _delete_object(store, sandbox_id)
        if moved:
            log.info("moved hibernated %s off this draining host", sandbox_id)
            return True
        if isinstance(failed, HutchError):
            raise failed
        if failed is not None:
            raise Unavailable(f"the host chosen could not be asked to take it: {failed!r}")
        return False

    async def _ask(self, target: ImageSource, record: SandboxRecord, digest: str) -> None:
        timeout = httpx.Timeout(600.0, connect=5.0)
        verify = _verify(self._settings)  # the cluster's TLS, when it has it
        async with httpx.AsyncClient(timeout=timeout, verify=verify) as client:
            answer = await client.post(
                f"{target.address}/internal/v1/moves/{record.id}",
                json={"from_host": self._sandboxes.host_id, "disk_sha256": digest},
                headers={TOKEN_HEADER: target.token},
            )
        if answer.status_code != 200:
            raise Unavailable(f"host {target.host_id} did not take it ({answer.status_code}): "
                              f"{answer.text[:300]}")  # fmt: skip

    async def _agent(self, host_id: str) -> ImageSource:
        async with self._db.sessions() as session:
            host = await session.get(Host, host_id)
        try:
            token = self._membership.host_token(host) if host is not None else None
        except ValueError as exc:  # sealed under another master key
            why = f"{exc} (every part of a cluster needs the same HUTCH_DISK_MASTER_KEY)"
            raise Unavailable(f"cannot present host {host_id!r}'s token: {why}") from exc
        if host is None or host.address is None or token is None:
            raise Unavailable(f"host {host_id!r} cannot be reached (no address or token)")
        return ImageSource(host.id, host.address.rstrip("/"), token)


async def adopt(
    sandboxes: SandboxService, sandbox_id: str, from_host: str, disk_sha256: str
) -> SandboxRecord:
    """Take a hibernated sandbox moving off ``from_host``: its disk from the store (if it
    is the one that host sent), the rest made here, an address of this host's pool, its
    row (:meth:`SandboxService.moving_in`)."""
    store = sandboxes.s3_snapshots
    if store is None:
        raise Conflict("this host has no S3 snapshot store (HUTCH_SNAPSHOT_STORE)")
    async with sandboxes.moving_in(sandbox_id, from_host) as incoming:
        try:
            await _download_disk(store, sandbox_id, incoming.disk, disk_sha256, from_host)
        except (SnapshotStoreError, OSError) as exc:  # (said to the draining host)
            raise Unavailable(f"the disk of {sandbox_id} could not be taken from the "
                              f"snapshot store: {exc}") from exc  # fmt: skip
    await _delete_object(store, sandbox_id)
    return incoming.record


_DISK = "disk.img"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def _upload_disk(store: S3SnapshotStore, sandbox_id: str, disk: Path) -> str:
    """Upload the disk file (sparse: its holes are not sent); return the upload's SHA-256."""
    archive = _beside(disk, sandbox_id, ".moving.tar")
    try:
        await run("tar", "--sparse", "--numeric-owner", "-C", str(disk.parent), "-cf",
                  str(archive), disk.name)  # fmt: skip
        digest = await asyncio.to_thread(_sha256, archive)
        await store._call(
            lambda: store._s3().upload_file(str(archive), store.bucket, _object(store, sandbox_id)),
            "upload",
        )
        return digest
    finally:
        with contextlib.suppress(FileNotFoundError):
            archive.unlink()


def _one_disk(archive: Path) -> None:
    """Conflict unless ``archive`` holds one regular file, the disk."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError) as exc:
        raise Conflict(f"the moved disk is not a readable archive: {exc}") from None
    if [(m.name, m.isreg()) for m in members] != [(_DISK, True)]:
        raise Conflict("the moved disk's archive holds something else than one disk file")


async def _download_disk(store: S3SnapshotStore, sandbox_id: str, disk: Path, digest: str,
                         from_host: str) -> None:  # fmt: skip
    archive = _beside(disk, sandbox_id, ".adopting.tar")
    partial = _beside(disk, sandbox_id, ".adopting")
    try:
        await store._call(
            lambda: store._s3().download_file(
                store.bucket, _object(store, sandbox_id), str(archive)
            ),
            "download",
        )
        got = await asyncio.to_thread(_sha256, archive)
        if got != digest:
            raise Conflict(f"the disk of {sandbox_id} in the snapshot bucket is not the one "
                           f"{from_host} sent (SHA-256 {got[:16]}…, not {digest[:16]}…): "
                           "not taken")  # fmt: skip
        await asyncio.to_thread(_one_disk, archive)
        await asyncio.to_thread(shutil.rmtree, partial, True)
        partial.mkdir(parents=True)
        try:
            await run("tar", "--sparse", "--numeric-owner", "-C", str(partial), "-xf",
                      str(archive), _DISK)  # fmt: skip
        except CommandFailed as exc:
            raise Conflict(f"the moved disk could not be unpacked: {exc.detail}") from None
        unpacked = partial / _DISK
        if unpacked.is_symlink() or not unpacked.is_file():
            raise Conflict("the moved disk is not a regular file")
        unpacked.rename(disk)
    finally:
        with contextlib.suppress(FileNotFoundError):
            archive.unlink()
        await asyncio.to_thread(shutil.rmtree, partial, True)


async def _delete_object(store: S3SnapshotStore, sandbox_id: str) -> None:
    with contextlib.suppress(SnapshotStoreError):
        await store._call(
            lambda: store._s3().delete_object(Bucket=store.bucket, Key=_object(store, sandbox_id)),
            "delete",
        )


router = APIRouter(prefix="/internal/v1/moves", include_in_schema=False)


class _AdoptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_host: str = Field(min_length=1, max_length=64)
    disk_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """The SHA-256 of the disk's upload, as the draining host computed it: the download
    from the bucket must match it."""


@router.post("/{sandbox_id}")
async def adopt_route(sandbox_id: str, body: _AdoptIn, request: Request) -> dict[str, Any]:
    """Take a hibernated sandbox a draining host moves here (that host's agent asks)."""
    services = request.app.state.services
    record = await adopt(services.sandboxes, sandbox_id, body.from_host, body.disk_sha256)
    # Its ingress names, asleep on this host's proxy, as a start does for its own paused
    # ones: a request to them wakes it here (the draining host let go of its routes).
    if record.auto_resume:
        await services.previews.sleep_ingress(record)
    return {"status": "success",
            "data": {"id": record.id, "host_id": record.host_id, "ip": record.ip}}  # fmt: skip
