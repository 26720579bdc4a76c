"""Root filesystem images on this host: where they live and which are built."""

from __future__ import annotations

from pathlib import Path

from hutch.core.catalog import ROOTFS_CATALOG

__all__ = ["built_images", "image_dir"]

# Written last by a build, so a half-built image is never taken for a built one.
COMPLETE_MARKER = ".hutch-complete"


def image_dir(home: Path, name: str) -> Path:
    """The directory of image ``name`` (``devbox:1`` lives in ``images/devbox_1``)."""
    return home / "images" / name.replace(":", "_").replace("/", "_")


def built_images(home: Path) -> list[str]:
    """Names of the catalog images that are fully built under ``home``, in catalog order."""
    return [
        image.name
        for image in ROOTFS_CATALOG
        if (image_dir(home, image.name) / COMPLETE_MARKER).is_file()
    ]
