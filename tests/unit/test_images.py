"""Image builds: two builds of one image at once take turns instead of undoing each other."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

import pytest

from hutch.host.images import COMPLETE_MARKER, build_image, image_dir, load_recipe

pytestmark = pytest.mark.anyio


async def test_a_build_waits_for_another_build_of_the_same_image(tmp_path: Path) -> None:
    recipe = load_recipe("devbox:1")
    base = image_dir(tmp_path, "devbox:1")
    (base / recipe.digest / "rootfs").mkdir(parents=True)
    (base / recipe.digest / COMPLETE_MARKER).write_text("{}")
    holder = os.open(base / ".build.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another process is building this image
    try:
        build = asyncio.create_task(build_image(tmp_path, "devbox:1"))
        await asyncio.sleep(0.5)
        assert not build.done(), "the build went ahead while another held the image"
        assert not (base / "current").exists()
    finally:
        os.close(holder)
    rootfs = await asyncio.wait_for(build, 30)
    assert rootfs == base / recipe.digest / "rootfs"
    assert (base / "current").resolve() == base / recipe.digest
