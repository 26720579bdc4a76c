"""A template made without a build (``TemplateService.add_ready``, the entry point a
snapshot of a sandbox uses): a running sandbox's filesystem, snapshotted by the runc
driver, becomes a ready template whose sandboxes see its files and start as it says."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from hutch.core.identity import IdentityService
from hutch.core.templates.dockerfile import ImageSettings
from hutch.core.templates.service import TemplateService
from hutch.host.drivers.runc import RuncDriver
from hutch.host.layers import resolve_image
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.migrate import upgrade
from tests.integration.test_snapshot_runc import own_images, runc, sh, spec_for

__all__ = ["own_images", "runc"]  # the driver fixtures, shared with the snapshot tests

pytestmark = pytest.mark.anyio


async def test_a_snapshot_becomes_a_ready_template(
    runc: RuncDriver, tmp_path: Path, own_images: Path
) -> None:
    settings = Settings(home=runc.home, images_dir=own_images, driver="fake")
    db = Database(f"sqlite:///{tmp_path / 'hutch.db'}")
    await upgrade(db)
    try:
        identity = IdentityService(db)
        user = await identity.authenticate((await identity.issue_key("snapper")).key)
        none: Any = None  # add_ready builds nothing: no sandbox service, no host agent
        templates = TemplateService(settings, db, none, none)
        source = spec_for("devbox:1")
        await runc.create(source)
        await sh(runc, source.id, "useradd -m snap && echo kept > /home/snap/file")
        await runc.snapshot(source.id, tmp_path / "home" / "snapshot")
        record = await templates.add_ready(
            user.user_id,
            "snapped",
            rootfs=tmp_path / "home" / "snapshot" / "rootfs",
            base=f"snapshot of {source.id}",
            settings=ImageSettings(
                env={"FROM": "snapshot"},
                workdir="/home/snap",
                user="snap",
                cmd=("sh", "-c", "echo up > /tmp/up; sleep 1000"),
            ),
        )
        assert (record.status, record.version, record.size_bytes > 0) == ("ready", 1, True)
        assert await templates.image_for(user.user_id, "snapped") == record.id
        image = resolve_image(runc.home, own_images, record.id)
        assert image is not None and len(image.lowers) == 1
        copy = spec_for(record.id)
        await runc.create(copy)
        out = await sh(runc, copy.id, 'cat file; id -un; pwd; echo "$FROM"')
        assert out == "kept\nsnap\n/home/snap\nsnapshot\n"
        for _ in range(100):
            if "up" in await sh(runc, copy.id, "cat /tmp/up 2>/dev/null || true"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the start command never ran")
        again = await templates.add_ready(
            user.user_id,
            "snapped",
            rootfs=await _another(runc, source.id, tmp_path),
            base="again",
            settings=ImageSettings(),
        )
        assert again.version == 2
        assert await templates.image_for(user.user_id, "snapped") == again.id
    finally:
        await db.dispose()


async def _another(runc: RuncDriver, sandbox_id: str, tmp_path: Path) -> Path:
    await runc.snapshot(sandbox_id, tmp_path / "home" / "snapshot2")
    return tmp_path / "home" / "snapshot2" / "rootfs"
