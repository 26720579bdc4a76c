"""What a Dockerfile's FROM builds on: a catalog image, one of the user's own ready
templates, or an image of a registry the operator allows (pulled through
:func:`hutch.host.oci_import.import_image`). Each gives the layers below the first step,
the settings the Dockerfile starts from, and the cache key the first step builds on."""

from __future__ import annotations

import asyncio
import hashlib

from hutch.core.catalog import ROOTFS_CATALOG
from hutch.core.errors import InvalidInput
from hutch.core.templates.builder import BaseImage
from hutch.core.templates.dockerfile import ImageSettings
from hutch.host.images import image_rootfs
from hutch.host.oci_import import import_image
from hutch.host.oci_ref import check_allowed, parse_reference
from hutch.settings import Settings
from hutch.store import templates as store
from hutch.store.db import Database

__all__ = ["Bases", "is_registry_reference"]


def _key(*parts: str) -> str:
    """A base's cache key. The user is part of it: the layer cache is per user, so no user
    gets (or, by a cache hit, learns of) another's layers."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def is_registry_reference(ref: str) -> bool:
    """``docker://…``, or ``host[:port]/repo…`` whose first part names a registry host."""
    if ref.startswith("docker://"):
        return True
    first, slash, _ = ref.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


class Bases:
    def __init__(self, settings: Settings, db: Database) -> None:
        self._settings = settings
        self._db = db

    async def resolve(
        self, user_id: str, ref: str, *, line: int = 1, pull: bool = False
    ) -> BaseImage:
        """What FROM ``ref`` builds on: a catalog image, the user's own ready template (by
        id or name, the newest version), or an image of a registry the operator allows
        (``[docker://]registry/repo:tag``, pulled when ``pull``; before that only the
        allowlist is checked). Raises InvalidInput (``dockerfile``, naming the line)."""
        if is_registry_reference(ref):
            return await self._registry_base(user_id, ref, line=line, pull=pull)
        if ref in {image.name for image in ROOTFS_CATALOG}:
            rootfs = await asyncio.to_thread(image_rootfs, self._settings.images_path, ref)
            if rootfs is None:
                raise InvalidInput(
                    f"line {line}: FROM {ref}: the image is not built on this "
                    "host (hutch images build)",
                    field="dockerfile",
                )
            digest = _key("catalog", user_id, ref, str(rootfs))
            return BaseImage(root=ref, layers=(), settings=ImageSettings(), key=digest)
        async with self._db.sessions() as session:
            parent = await store.newest_ready(session, user_id, ref)
        if parent is None:
            known = ", ".join(image.name for image in ROOTFS_CATALOG)
            raise InvalidInput(
                f"line {line}: FROM {ref}: no such image ({known}, or a ready template of yours)",
                field="dockerfile",
            )
        return BaseImage(
            root=parent.root,
            layers=tuple(parent.layers),
            settings=ImageSettings(
                env=dict(parent.env),
                workdir=parent.workdir,
                user=parent.run_as,
                labels=dict(parent.labels),
                exposed=tuple(parent.exposed),
                cmd=tuple(parent.start_cmd) if parent.start_cmd else None,
            ),
            key=_key("template", user_id, parent.id),
        )

    async def _registry_base(self, user_id: str, ref: str, *, line: int, pull: bool) -> BaseImage:
        """An OCI image as a base: the allowlist checked at submit, the image pulled (or
        found unchanged) when the build starts (:func:`hutch.host.oci_import.import_image`)."""
        try:
            reference = parse_reference(ref)
            check_allowed(reference, self._settings.template_registry_list, field="dockerfile")
        except InvalidInput as exc:
            raise InvalidInput(
                f"line {line}: FROM {ref}: {exc.message}", field="dockerfile"
            ) from None
        if not pull:
            return BaseImage(root="", layers=(), settings=ImageSettings(), key="")
        imported = await import_image(ref, self._settings)
        config = imported.config
        return BaseImage(
            root=imported.name,
            layers=(),
            settings=ImageSettings(
                env=dict(config.env),
                workdir=config.working_dir or "/",
                user=config.user,
                labels=dict(config.labels),
                exposed=tuple(config.exposed_ports),
                cmd=tuple(config.cmd) or None,
                entrypoint=tuple(config.entrypoint) or None,
            ),
            key=_key("oci", user_id, imported.name, imported.digest),
        )
