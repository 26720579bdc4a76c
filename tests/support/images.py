"""Images for the fake driver: an empty root filesystem marked as a complete build."""

from __future__ import annotations

from pathlib import Path

from hutch.host.images import COMPLETE_MARKER, image_dir

__all__ = ["fake_image"]


def fake_image(images: Path, name: str) -> None:
    build = image_dir(images, name) / "fake"
    (build / "rootfs").mkdir(parents=True)
    (build / COMPLETE_MARKER).write_text("")
    (image_dir(images, name) / "current").symlink_to("fake")
