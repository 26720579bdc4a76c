"""``hutch images``: build, import and list root filesystem images."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from hutch.cli.common import HomeOpt, fail, load_settings
from hutch.core.catalog import ROOTFS_CATALOG
from hutch.core.errors import HutchError
from hutch.host.images import ImageBuildError, build_image, image_rootfs, print_progress
from hutch.host.oci_import import import_image, imported_images

__all__ = ["app"]

app = typer.Typer(help="Build, import and list root filesystem images.", no_args_is_help=True)


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
    for name, rootfs in imported_images(settings.images_path):
        print(f"{name} imported {rootfs}")


@app.command("import")
def import_command(
    reference: Annotated[
        str, typer.Argument(help="docker://registry[:port]/repo[:tag] (or @sha256:…).")
    ],
    home: HomeOpt = None,
) -> None:
    """Pull an OCI image from an allowed registry (HUTCH_TEMPLATE_REGISTRIES) into this
    host's images; prints its name, which templates (FROM) and sandboxes can use.

    Example:  HUTCH_TEMPLATE_REGISTRIES=registry.corp.example hutch images import \\
              docker://registry.corp.example/base/python:3.11
    """
    settings = load_settings(home=home)
    try:
        image = asyncio.run(import_image(reference, settings, progress=print_progress))
    except HutchError as exc:
        fail(exc.message, hint="the allowed registries are HUTCH_TEMPLATE_REGISTRIES"
             if exc.code == "registry_not_allowed" else None)  # fmt: skip
    print(image.name)
