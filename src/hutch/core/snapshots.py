"""Snapshots: a running sandbox's filesystem as a new template of its owner
(``POST /v1/sandboxes/{id}/snapshot``; Daytona's snapshots, E2B's ``createSnapshot``).

The sandbox keeps running: it is frozen only while its writable layer is copied (a
read-only btrfs snapshot of its layer disk, :mod:`hutch.host.snapshot`, 12 to 72 ms whatever
the layer holds), then thawed, and the copy becomes one layer of the template store
(:class:`~hutch.host.layers.LayerStore`) above the sandbox's own image: the new template is
the sandbox's image (a catalog image, an imported one, or a template's layers) plus that
layer. Nothing of the image is copied, and the template is ``ready`` when the answer comes.
It starts like its source's image (environment, working directory, user, start command),
without the sandbox's own ``envs`` (secrets stay with the sandbox). A sandbox created from
it, or a Dockerfile ``FROM`` it, sees the files as they were at the frozen moment.

A name used again is a new version, as for built templates; the template counts against
``HUTCH_TEMPLATE_MAX_PER_USER`` and its layer against ``HUTCH_TEMPLATE_MAX_BYTES``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from hutch.core.errors import (
    Conflict,
    InvalidInput,
    PayloadTooLarge,
    PermissionDenied,
    Unavailable,
)
from hutch.core.identity import Principal
from hutch.core.ids import new_id
from hutch.core.names import name_problem
from hutch.core.sandbox_status import SandboxStatus as S
from hutch.core.sandboxes import SandboxService
from hutch.core.templates.service import MAX_LAYERS
from hutch.host.image_config import image_config
from hutch.host.layers import LayerStore, StartSettings, remove_image, write_image
from hutch.settings import Settings
from hutch.store import templates as store
from hutch.store.db import Database
from hutch.store.models import SandboxRecord, TemplateRecord, utcnow

__all__ = ["SnapshotService"]

log = logging.getLogger(__name__)

# Made by the guest agent in every sandbox; not the user's (as in template builds).
_NOT_TAKEN = ("run/self",)


@dataclass(frozen=True, kw_only=True)
class _Source:
    """What the sandbox's image is made of, and how it starts."""

    root: str
    layers: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    exposed: tuple[str, ...] = ()
    start: list[str] | None = None


class SnapshotService:
    def __init__(
        self, settings: Settings, db: Database, sandboxes: SandboxService, layers: LayerStore
    ) -> None:
        self._settings = settings
        self._db = db
        self._sandboxes = sandboxes
        self._layers = layers

    async def snapshot(self, user: Principal, ident: str, *, name: str) -> TemplateRecord:
        """Make template ``name`` (a new version if the name is taken) of the sandbox
        ``ident``'s filesystem now; return it, ``ready``. Raises InvalidInput (``name``),
        PermissionDenied (over the templates cap), NotFound, Conflict (not running or
        paused), PayloadTooLarge (the layer is over ``HUTCH_TEMPLATE_MAX_BYTES``),
        Unavailable (the host could not copy it)."""
        if problem := name_problem(name):
            raise InvalidInput(problem.replace("names are", "template names are"), field="name")
        sandbox = await self._sandboxes.get(user, ident)  # missing: a 404 before the cap
        if sandbox.status not in (S.RUNNING, S.PAUSED):
            raise Conflict(
                f"sandbox is {sandbox.status}; only a running or paused sandbox can be snapshot",
                field="status",
            )
        async with self._db.sessions() as session:
            count = await store.count_for_user(session, user.user_id)
        if count >= self._settings.template_max_per_user:
            raise PermissionDenied(
                f"you have {count} templates, the most allowed (HUTCH_TEMPLATE_MAX_PER_USER); "
                "delete some first",
                field="quota",
            )
        template_id = new_id("tpl_")
        key = f"snapshot-{template_id}"
        async with self._sandboxes.captured_layer(user, ident) as (sandbox, captured):
            source = await self._source(sandbox)
            if len(source.layers) + 1 > MAX_LAYERS:
                raise Conflict(
                    f"the sandbox's image is {len(source.layers)} layers deep already; a "
                    f"template is at most {MAX_LAYERS} (overlayfs mounts them all), and "
                    "nothing flattens them yet",
                    field="sandbox",
                )
            size = await self._layers.commit(key, captured.upper, exclude=_NOT_TAKEN)
        log.info("snapshot %s of %s: frozen %.1f ms, layer %d bytes",
                 template_id, sandbox.id, captured.frozen_ms, size)  # fmt: skip
        try:
            if size > self._settings.template_max_bytes:
                raise PayloadTooLarge(
                    f"the sandbox's changes are {size} bytes, over the "
                    f"{self._settings.template_max_bytes} a template may hold "
                    "(HUTCH_TEMPLATE_MAX_BYTES)",
                    field="sandbox",
                )
            layers = (*source.layers, key)
            await asyncio.to_thread(
                _write_image,
                self._settings.home,
                template_id,
                images=self._settings.images_path,
                root=source.root,
                layers=[self._layers.path(k) for k in layers],
                config=StartSettings(env=source.env, workdir=source.workdir, user=source.user,
                                     start=source.start),
            )  # fmt: skip
            return await self._insert(user, template_id, name, sandbox, source, layers, size)
        except BaseException:
            await asyncio.to_thread(remove_image, self._settings.home, template_id)
            await asyncio.to_thread(_discard_layer, self._layers, key)
            raise

    async def _source(self, sandbox: SandboxRecord) -> _Source:
        """The sandbox's image: a template of its owner's (its layers over their root), or
        a catalog or imported image (with the imported image's config)."""
        async with self._db.sessions() as session:
            parent = await session.get(TemplateRecord, sandbox.rootfs)
        if parent is not None and parent.user_id == sandbox.user_id:
            return _Source(
                root=parent.root,
                layers=tuple(parent.layers),
                env=dict(parent.env),
                workdir=parent.workdir,
                user=parent.run_as,
                labels=dict(parent.labels),
                exposed=tuple(parent.exposed),
                start=list(parent.start_cmd) if parent.start_cmd else None,
            )
        config = await asyncio.to_thread(image_config, self._settings.images_path, sandbox.rootfs)
        if config is None:
            return _Source(root=sandbox.rootfs)
        return _Source(
            root=sandbox.rootfs,
            env=dict(config.env),
            workdir=config.working_dir or "/",
            user=config.user,
            labels=dict(config.labels),
            exposed=config.exposed_ports,
            start=list(config.start_command) or None,
        )

    async def _insert(
        self,
        user: Principal,
        template_id: str,
        name: str,
        sandbox: SandboxRecord,
        source: _Source,
        layers: tuple[str, ...],
        size: int,
    ) -> TemplateRecord:
        now = utcnow()
        for _ in range(5):  # two snapshots of one name at once: the loser takes the next version
            try:
                async with self._db.sessions.begin() as session:
                    record = TemplateRecord(
                        id=template_id,
                        user_id=user.user_id,
                        name=name,
                        version=await store.next_version(session, user.user_id, name),
                        status=store.READY,
                        base=f"snapshot of sandbox {sandbox.id}",
                        dockerfile="",
                        root=source.root,
                        layers=list(layers),
                        env=source.env,
                        workdir=source.workdir,
                        run_as=source.user,
                        labels=source.labels,
                        exposed=list(source.exposed),
                        start_cmd=source.start,
                        size_bytes=size,
                        attempts=1,
                        steps_total=0,
                        steps_cached=0,
                        created_at=now,
                        started_at=now,
                        built_at=now,
                    )
                    session.add(record)
                return record
            except IntegrityError:
                continue
        raise Conflict("too many templates of this name are being created at once", field="name")


def _discard_layer(layers: LayerStore, key: str) -> None:
    """Remove a complete layer no template uses (a snapshot that was refused)."""
    with contextlib.suppress(FileNotFoundError):
        (layers.directory / f"{key}.json").unlink()
    shutil.rmtree(layers.path(key), ignore_errors=True)


def _write_image(home: Path, name: str, **image: Any) -> None:
    """:func:`write_image`, its missing image an Unavailable (not an internal error)."""
    try:
        write_image(home, name, **image)
    except FileNotFoundError as exc:
        raise Unavailable(f"the sandbox's image is not complete on this host: {exc}") from exc
