"""``hutch images``: build and list root filesystem images."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from hutch.cli.common import HomeOpt, fail, load_settings
from hutch.core.catalog import ROOTFS_CATALOG
from hutch.host.images import ImageBuildError, build_image, image_rootfs, print_progress

__all__ = ["app"]

app = typer.Typer(help="Build and list root filesystem images.", no_args_is_help=True)


@app.command("build")
def build(
    names: Annotated[
        list[str] | None, typer.Argument(help="Images to build (default: devbox:1).")
    ] = None,
    all_images: Annotated[bool, typer.Option("--all", help="Build every image.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if up to date.")] = False,
    home: HomeOpt = None,
) -> None:
    """Build images with mmdebstrap from the recipes in the repo; cached by recipe hash.

    Example:  hutch images build devbox:1 node
    """
    settings = load_settings(home=home)
    wanted = [i.name for i in ROOTFS_CATALOG] if all_images else names or [settings.default_rootfs]
    for name in wanted:
        try:
            asyncio.run(
                build_image(settings.images_path, name, force=force, progress=print_progress)
            )
        except ImageBuildError as exc:
            fail(str(exc), hint="check that apt can reach the Debian mirror")


@app.command("ls")
def list_images(home: HomeOpt = None) -> None:
    """List the images hutch offers and where each is built."""
    settings = load_settings(home=home)
    for image in ROOTFS_CATALOG:
        path = image_rootfs(settings.images_path, image.name)
        print(f"{image.name:10} {'built' if path else 'not built':10} {path or ''}".rstrip())
