"""The disk service on real SQLite and a real PostgreSQL 15, against a real S3 server:
registration, sealing, name races, attachments and their bookkeeping (the fake mount layer
stands in for s3fs here; real mounts are in tests/e2e/test_disks_runc.py)."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
from pathlib import Path

import pytest
from sqlalchemy import text

from hutch.core.disks import DiskCredentials, DiskRef, DiskRegistration, DiskService
from hutch.core.errors import Conflict, InvalidInput, NotFound
from hutch.core.identity import IdentityService, Principal
from hutch.core.ids import new_id
from hutch.core.sealing import SealedBox
from hutch.host.agent import HostAgent
from hutch.host.drivers.base import RuntimeInfo, RuntimeState
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.models import SandboxRecord
from tests.support.seaweed import SeaweedS3

pytestmark = pytest.mark.anyio
_buckets = itertools.count()


@pytest.fixture
def service(db: Database, tmp_path: Path) -> DiskService:
    settings = Settings(home=tmp_path / "home", driver="fake", host_id="test-host")
    host = HostAgent(settings, db)

    async def running(sandbox_id: str) -> RuntimeInfo:
        return RuntimeInfo(id=sandbox_id, state=RuntimeState.RUNNING, pid=1)

    host.driver.get = running  # type: ignore[method-assign]  # no process behind these rows
    return DiskService(db, host, SealedBox(secrets.token_bytes(32)))


def registration(s3: SeaweedS3, name: str, bucket: str) -> DiskRegistration:
    return DiskRegistration(
        name=name, kind="s3", bucket=bucket, endpoint=s3.endpoint, region=None,
        use_path_style=True,
        credentials=DiskCredentials(access_key=s3.access_key, secret_key=s3.secret_key),
    )  # fmt: skip


async def principal(db: Database, name: str) -> Principal:
    identity = IdentityService(db)
    return await identity.authenticate((await identity.issue_key(name)).key)


async def test_register_seal_and_race_for_a_name(
    db: Database, service: DiskService, s3: SeaweedS3
) -> None:
    alice = await principal(db, "alice")
    bucket = s3.make_bucket(f"store-{os.getpid()}-{next(_buckets)}")
    results = await asyncio.gather(
        *(service.register(alice, registration(s3, "shared", bucket)) for _ in range(3)),
        return_exceptions=True,
    )
    made = [r for r in results if not isinstance(r, BaseException)]
    assert len(made) == 1 and all(isinstance(r, Conflict) for r in results if r not in made)
    record = await service.get(alice, "shared")
    assert service.credentials(record).secret_key == s3.secret_key
    async with db.engine.connect() as conn:
        dump = repr((await conn.execute(text("SELECT * FROM disks"))).all())
    assert s3.secret_key not in dump and s3.access_key not in dump
    with pytest.raises(InvalidInput):
        await service.register(alice, registration(s3, "other", "missing-bucket-x"))


async def test_attachments_and_their_rules(
    db: Database, service: DiskService, s3: SeaweedS3
) -> None:
    alice = await principal(db, "alice")
    bucket = s3.make_bucket(f"store-{os.getpid()}-{next(_buckets)}")
    disk = await service.register(alice, registration(s3, "data", bucket))
    box = SandboxRecord(id=new_id("sb_"), user_id=alice.user_id, name="box", status="running",
                        host_id="test-host", ip="10.89.0.2")  # fmt: skip
    async with db.sessions.begin() as session:
        session.add(box)
    await service.attach(alice, box.id, DiskRef(disk_id="data", mount_path="/mnt/data/"))
    await service.attach(alice, box.id, DiskRef(disk_id=disk.id, mount_path="/mnt/data"))
    [view] = await service.attachments(alice, box.id)
    assert (view.attachment.mount_path, view.attachment.mount_status) == ("/mnt/data", "mounted")
    with pytest.raises(Conflict):
        await service.delete(alice, "data")
    with pytest.raises(InvalidInput):
        await service.attach(alice, box.id, DiskRef(disk_id="data", mount_path="/proc/x"))
    await service.detach(alice, box.id, disk.id, "/mnt/data")
    with pytest.raises(NotFound):
        await service.detach(alice, box.id, disk.id, "/mnt/data")
    bob = await principal(db, "bob")
    with pytest.raises(NotFound):
        await service.attach(bob, box.id, DiskRef(disk_id="data", mount_path="/x"))
    await service.delete(alice, "data")
    with pytest.raises(NotFound):
        await service.get(alice, "data")
