"""Draining with the S3 snapshot store: a draining host's hibernated gVisor sandboxes move
to other hosts, where they resume with their processes.

A hibernated gVisor sandbox is two things: its memory snapshot (``runsc checkpoint``),
which the snapshot store keeps in S3 already (``HUTCH_SNAPSHOT_STORE``,
:mod:`hutch.core.snapshot_store`), and its directory on the host: its writable disk (a
sparse btrfs file), its OCI bundle and its ``/etc`` names. Running sandboxes are not moved
(they keep running until stopped); neither are paused-in-memory or runc ones.

The agent of a ``draining`` host, every few seconds, for each such sandbox of its own:

1. under the sandbox's lock, checks it is still paused and hibernated, and puts its
   snapshot in the store if it is still here;
2. uploads its directory (``tar --sparse``) as ``<prefix>/<id>.moving/sandbox.tar``;
3. places it like a create (:class:`~hutch.cluster.placement.Placer`: an active host with
   the gvisor runtime and room; the image fetched there if it lacks it) and asks that
   host's agent to adopt it (``POST /internal/v1/moves/{id}``, with its host token);
4. the adopting agent takes an address from its own link pool, unpacks the directory,
   rewrites what named the old host (paths, its address in ``/etc``), and moves the
   sandbox's row to itself with the new address, still ``paused``: a resume there fetches
   the snapshot from the store and restores it (:meth:`SandboxService.resume`);
5. the draining host then removes what is left of it here.

Anything failing before step 4's row change leaves the sandbox where it was, paused and
whole (the uploaded copy is removed); it is tried again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from hutch.cluster.images import TOKEN_HEADER, ImageSource, _verify, ensure_image
from hutch.cluster.membership import Membership
from hutch.cluster.placement import PlacementRequest, Placer
from hutch.core.errors import Conflict, HutchError, Unavailable
from hutch.core.sandbox_status import SandboxStatus as S
from hutch.core.sandboxes import SandboxService
from hutch.core.snapshot_store import S3SnapshotStore, SnapshotStoreError
from hutch.host.proc import run
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.models import Host, NetworkMember, SandboxRecord

__all__ = ["DrainMover", "router"]

log = logging.getLogger(__name__)

_MOVING = "sandbox.tar"


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

    @property
    def _host(self) -> Any:
        return self._sandboxes._host

    def _store(self) -> S3SnapshotStore | None:
        store = self._sandboxes._snapshots
        return store if isinstance(store, S3SnapshotStore) else None

    async def run_forever(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            joiner = self._host.joiner
            if joiner is None or joiner.status != "draining" or self._store() is None:
                continue
            try:
                await self.move_all()
            except Exception:
                log.warning("moving sandboxes off this draining host failed", exc_info=True)

    async def move_all(self) -> list[str]:
        """Move every hibernated gVisor sandbox of this host; return those moved."""
        async with self._db.sessions() as session:
            ids = list(await session.scalars(
                select(SandboxRecord.id).where(
                    SandboxRecord.host_id == self._host.host_id,
                    SandboxRecord.status == S.PAUSED, SandboxRecord.hibernated.is_(True),
                    SandboxRecord.runtime == "gvisor",
                )
            ))  # fmt: skip
        moved = []
        for sandbox_id in ids:
            try:
                if await self.move(sandbox_id):
                    moved.append(sandbox_id)
            except (HutchError, SnapshotStoreError, OSError) as exc:
                # Said once per sandbox and reason (this runs every few seconds).
                if self._said.get(sandbox_id) != str(exc):
                    self._said[sandbox_id] = str(exc)
                    log.warning("%s stays on this draining host for now: %s", sandbox_id, exc)
        return moved

    async def move(self, sandbox_id: str) -> bool:
        store = self._store()
        if store is None:
            return False
        service = self._sandboxes
        async with service._sandbox_locks[sandbox_id]:
            record = await service._load(sandbox_id)
            here = self._host.host_id
            if not (record.host_id == here and record.status == S.PAUSED and record.hibernated
                    and record.runtime == "gvisor"):  # fmt: skip
                return False
            async with self._db.sessions() as session:
                member = await session.scalar(
                    select(NetworkMember.sandbox_id).where(NetworkMember.sandbox_id == sandbox_id)
                )
            if member is not None:
                raise Conflict("it is a member of a private network (not moved across hosts)")
            snapshot = service._snapshot(sandbox_id)
            if not await store.has(sandbox_id):
                await store.put(sandbox_id, snapshot)
            # Its disk is unmounted in the background after the checkpoint: wait for that.
            await self._host.driver.for_runtime("gvisor")._settled(sandbox_id)
            directory = self._host.driver.sandboxes / sandbox_id
            await _upload_directory(store, sandbox_id, directory)
            try:
                await self._adopt_elsewhere(record)
            except BaseException:
                await _delete_object(store, sandbox_id)
                raise
            # Its row is the other host's now: what is left here goes.
            await service._stopped(sandbox_id)
            await self._host.driver.destroy(sandbox_id)
            self._host.links.release(sandbox_id)
            await asyncio.to_thread(shutil.rmtree, snapshot, True)
            log.info("moved hibernated %s off this draining host", sandbox_id)
            return True

    async def _adopt_elsewhere(self, record: SandboxRecord) -> None:
        want = PlacementRequest(mem_mib=record.mem_mib, vcpu=record.vcpu, image=record.rootfs,
                                runtime="gvisor")  # fmt: skip
        placed = await self._placer.place(want)
        try:
            target = await self._agent(placed.host_id)
            if placed.sources:
                holders = [a for a in [await self._agent(h) for h in placed.sources] if a]
                await ensure_image(self._settings, target, record.rootfs, holders)
            timeout = httpx.Timeout(600.0, connect=5.0)
            verify = _verify(self._settings)  # the cluster's TLS, when it has it
            async with httpx.AsyncClient(timeout=timeout, verify=verify) as client:
                answer = await client.post(
                    f"{target.address}/internal/v1/moves/{record.id}",
                    json={"from_host": self._host.host_id},
                    headers={TOKEN_HEADER: target.token},
                )
            if answer.status_code != 200:
                raise Unavailable(f"host {target.host_id} did not adopt it ({answer.status_code}):"
                                  f" {answer.text[:300]}")  # fmt: skip
        finally:
            await self._placer.release(placed)

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


async def adopt(settings: Settings, sandboxes: SandboxService, sandbox_id: str,
                from_host: str) -> dict[str, Any]:  # fmt: skip
    """Take a hibernated sandbox moving off ``from_host``: its directory from the store,
    an address of this host's pool, its row."""
    service = sandboxes
    host: Any = service._host
    store = service._snapshots
    if not isinstance(store, S3SnapshotStore):
        raise Conflict("this host has no S3 snapshot store (HUTCH_SNAPSHOT_STORE)")
    async with service._sandbox_locks[sandbox_id]:
        record = await service._load(sandbox_id)
        if not (record.host_id == from_host and record.status == S.PAUSED and record.hibernated):
            raise Conflict(f"sandbox {sandbox_id} is not a hibernated sandbox of {from_host}")
        driver = host.driver
        directory: Path = driver.sandboxes / sandbox_id
        if await asyncio.to_thread(directory.exists):
            raise Conflict(f"sandbox {sandbox_id} already has a directory on this host")
        link = host.links.allocate(sandbox_id)
        try:
            await _download_directory(store, sandbox_id, directory)
            old = json.loads((directory / "config.json").read_text())
            await asyncio.to_thread(_rewrite_bundle, directory, old, driver, sandbox_id)
            # (HostRuntimes picks a sandbox's driver by its directory's ``runtime`` file.)
            with contextlib.suppress(FileNotFoundError):
                (directory / "init.pid").unlink()
            # Its addresses here (the old ones named the other host's link): what a pause's
            # check for connections gVisor cannot save reads (hutch.host.drivers.gvisor).
            (directory / "addresses.json").write_text(json.dumps({
                "addresses": [["eth0", str(link.sandbox), link.network.prefixlen]],
                "gateway": str(link.host),
            }))  # fmt: skip
            gvisor = driver.for_runtime("gvisor")
            gvisor.set_names(sandbox_id, record.name, str(link.sandbox))
            (directory / "etc" / "resolv.conf").write_text(
                f"nameserver {link.host}\noptions timeout:1 attempts:2\n"
            )
            await service._update(sandbox_id, host_id=host.host_id, ip=str(link.sandbox))
        except BaseException:
            host.links.release(sandbox_id)
            await asyncio.to_thread(shutil.rmtree, directory, True)
            raise
    await _delete_object(store, sandbox_id)
    return {"id": sandbox_id, "host_id": host.host_id, "ip": str(link.sandbox)}


def _rewrite_bundle(directory: Path, config: dict[str, Any], driver: Any, sandbox_id: str) -> None:
    """The bundle named the old host's home, tag (netns, sockets, cgroups): this host's."""
    text = json.dumps(config)
    root = str(config["root"]["path"])  # <old home>/sandboxes/<id>/rootfs
    old_home = root.removesuffix(f"/sandboxes/{sandbox_id}/rootfs")
    # The tag (a short lowercase hex name of the home) from the cgroup path, /hutch-<tag>/<id>;
    # it also names the netns and the sockets' directory. (Sandbox ids are upper case.)
    cgroups = str(config.get("linux", {}).get("cgroupsPath", ""))
    old_tag = cgroups.split("/")[1].removeprefix("hutch-") if cgroups.count("/") >= 2 else ""
    text = text.replace(old_home, str(driver.home))
    if old_tag:
        text = text.replace(old_tag, driver.tag)
    (directory / "config.json").write_text(text)


async def _upload_directory(store: S3SnapshotStore, sandbox_id: str, directory: Path) -> None:
    archive = directory.with_name(f".{sandbox_id}.moving.tar")
    try:
        await run("tar", "--sparse", "--xattrs", "--numeric-owner", "-C", str(directory),
                  "--exclude=./layer/*", "--exclude=./rootfs/*", "-cf", str(archive),
                  ".")  # fmt: skip
        await store._call(
            lambda: store._s3().upload_file(str(archive), store.bucket, _object(store, sandbox_id)),
            "upload",
        )
    finally:
        with contextlib.suppress(FileNotFoundError):
            archive.unlink()


async def _download_directory(store: S3SnapshotStore, sandbox_id: str, directory: Path) -> None:
    archive = directory.with_name(f".{sandbox_id}.adopting.tar")
    partial = directory.with_name(f".{sandbox_id}.adopting")
    try:
        await store._call(
            lambda: store._s3().download_file(
                store.bucket, _object(store, sandbox_id), str(archive)
            ),
            "download",
        )
        await asyncio.to_thread(shutil.rmtree, partial, True)
        partial.mkdir(parents=True)
        await run("tar", "--sparse", "--xattrs", "--numeric-owner", "--same-owner", "-C",
                  str(partial), "-xf", str(archive))  # fmt: skip
        partial.rename(directory)
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


@router.post("/{sandbox_id}")
async def adopt_route(sandbox_id: str, body: _AdoptIn, request: Request) -> dict[str, Any]:
    """Take a hibernated sandbox a draining host moves here (that host's agent asks)."""
    services = request.app.state.services
    done = await adopt(services.settings, services.sandboxes, sandbox_id, body.from_host)
    # Its ingress names, asleep on this host's proxy, as a start does for its own paused
    # ones: a request to them wakes it here (the draining host let go of its routes).
    record = await services.sandboxes._load(sandbox_id)
    if record.auto_resume:
        await services.previews.sleep_ingress(record)
    return {"status": "success", "data": done}
