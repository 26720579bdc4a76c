"""The template service the routes call: submit, list, read, delete, logs, cancel; and the
queue that runs builds (at most ``HUTCH_TEMPLATE_BUILDS_PER_USER`` per user at once).

Statuses: ``pending`` (queued) → ``building`` → ``ready`` | ``failed`` | ``cancelled``.
A name used again is a new version; creates use the newest ``ready`` one
(:meth:`TemplateService.image_for`). A template belongs to its user: another user's is a
404, and cannot be a ``FROM``.

Restart: a build the server was running when it stopped (or was killed) is ``failed``
with the reason, its build sandbox destroyed; pending ones build as before.

Hook for OCI images: :attr:`TemplateService.oci_resolver`, when set, resolves a
``FROM docker://…`` into a :class:`~hutch.core.templates.builder.BaseImage`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from hutch.core.catalog import ROOTFS_CATALOG
from hutch.core.errors import Conflict, HutchError, InvalidInput, NotFound, PermissionDenied
from hutch.core.identity import Principal
from hutch.core.ids import new_id
from hutch.core.names import name_problem
from hutch.core.sandboxes import SandboxService
from hutch.core.templates.bases import Bases, is_registry_reference
from hutch.core.templates.builder import (
    BaseImage,
    BuildFailed,
    TemplateBuilder,
    build_image_name,
)
from hutch.core.templates.context import BuildContext, decode_context
from hutch.core.templates.dockerfile import parse, plan
from hutch.core.templates.logs import BuildLog
from hutch.host.agent import HostAgent
from hutch.host.layers import LayerStore, StartSettings, remove_image, write_image
from hutch.settings import Settings
from hutch.store import templates as store
from hutch.store.db import Database
from hutch.store.models import TemplateRecord, User, utcnow

__all__ = ["OciResolver", "TemplateService", "TemplateSubmit"]

log = logging.getLogger(__name__)

OciResolver = Callable[[str, str], Awaitable[BaseImage]]
"""``(user_id, reference)`` → the image a ``FROM docker://…`` names (helper ``oci``)."""

_STOPPED = "the server stopped during the build; create the template again"
_INTERNAL = "internal error (the server log has the details)"
_FOLLOW_POLL_S = 0.1
# Every layer is a lowerdir of the sandbox's overlay; their paths must fit in the one page
# of mount options (about 60 of $HUTCH_HOME/layers/<32 hex>).
MAX_LAYERS = 60


class TemplateSubmit:
    """A template create request, as the routes hand it over."""

    def __init__(
        self, *, name: str, dockerfile: str, base: str | None = None, context: str | None = None
    ) -> None:
        self.name = name
        self.dockerfile = dockerfile
        self.base = base
        self.context = context


class TemplateService:
    def __init__(
        self, settings: Settings, db: Database, sandboxes: SandboxService, host: HostAgent
    ) -> None:
        self._settings = settings
        self._db = db
        self._sandboxes = sandboxes
        self.layers = LayerStore(settings.home / "layers")
        self.builder = TemplateBuilder(
            settings, db, sandboxes=sandboxes, host=host, layers=self.layers
        )
        self._dir = settings.home / "templates"
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._users: dict[str, str] = {}  # template id -> user id, for running builds
        self._cancelled: set[str] = set()
        self._dispatching = asyncio.Lock()
        self.bases = Bases(settings, db)
        self.oci_resolver: OciResolver | None = None

    # -- submit ---------------------------------------------------------------------------

    async def create(self, user: Principal, request: TemplateSubmit) -> TemplateRecord:
        """Check the request whole (400 naming the field, or the Dockerfile's line), store
        the template ``pending`` and queue its build."""
        if problem := name_problem(request.name):
            raise InvalidInput(problem.replace("names are", "template names are"), field="name")
        parsed = parse(request.dockerfile)
        if request.base and request.base != parsed.base:
            raise InvalidInput(
                f"base {request.base!r} differs from the Dockerfile's FROM {parsed.base!r} "
                f"(line {parsed.base_line}); leave base out or make them the same",
                field="base",
            )
        if len(parsed.base) > 256:
            raise InvalidInput(
                f"line {parsed.base_line}: FROM names more than 256 characters", field="dockerfile"
            )
        base = await self.resolve_from(user.user_id, parsed.base, line=parsed.base_line)
        build_plan = plan(parsed, base.settings)
        depth = len(base.layers) + len(build_plan.steps)
        if depth > MAX_LAYERS:
            raise InvalidInput(
                f"the template would be {depth} layers deep (its RUN, COPY and ADD steps, and "
                f"those of the template it is FROM); at most {MAX_LAYERS} (overlayfs mounts "
                "them all): join some RUN lines with &&",
                field="dockerfile",
            )
        raw = b""
        context = BuildContext.empty()
        if request.context:
            cap = self._settings.template_max_context_bytes
            raw = decode_context(request.context, max_bytes=cap)
            context = await asyncio.to_thread(BuildContext.load, raw, max_unpacked=cap)
        for step in build_plan.steps:
            if step.keyword != "RUN":
                try:
                    context.payload(step)
                except ValueError as exc:
                    hint = "" if request.context else " (no context was uploaded)"
                    raise InvalidInput(
                        f"line {step.line}: {step.keyword} {exc}{hint}", field="dockerfile"
                    ) from None
        async with self._db.sessions() as session:
            count = await store.count_for_user(session, user.user_id)
        if count >= self._settings.template_max_per_user:
            raise PermissionDenied(
                f"you have {count} templates, the most allowed "
                "(HUTCH_TEMPLATE_MAX_PER_USER); delete some first",
                field="quota",
            )
        record = await self._insert(user.user_id, request, parsed.base, raw)
        await self._dispatch()
        return record

    async def _insert(
        self,
        user_id: str,
        request: TemplateSubmit,
        base: str,
        raw: bytes,
        status: str = store.PENDING,
    ) -> TemplateRecord:
        template_id = new_id("tpl_")
        directory = self._dir / template_id
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        if raw:
            await asyncio.to_thread((directory / "context").write_bytes, raw)
        for _ in range(5):  # two submits of one name at once: the loser takes the next version
            try:
                async with self._db.sessions.begin() as session:
                    version = await store.next_version(session, user_id, request.name)
                    record = TemplateRecord(
                        id=template_id,
                        user_id=user_id,
                        name=request.name,
                        version=version,
                        status=store.PENDING,
                        base=base,
                        dockerfile=request.dockerfile,
                        root="",
                        layers=[],
                        env={},
                        workdir="/",
                        run_as="",
                        labels={},
                        exposed=[],
                        size_bytes=0,
                        attempts=0,
                        steps_total=0,
                        steps_cached=0,
                        created_at=utcnow(),
                    )
                    session.add(record)
                return record
            except IntegrityError:
                continue
        raise Conflict("too many templates of this name are being created at once", field="name")

    async def resolve_from(
        self, user_id: str, ref: str, *, line: int = 1, pull: bool = False
    ) -> BaseImage:
        """What FROM ``ref`` builds on (:class:`~hutch.core.templates.bases.Bases`), or
        :attr:`oci_resolver`'s answer for a registry image when that is set."""
        if self.oci_resolver is not None and is_registry_reference(ref):
            return await self.oci_resolver(user_id, ref)
        return await self.bases.resolve(user_id, ref, line=line, pull=pull)

    # -- reading -------------------------------------------------------------------------

    async def get(self, user: Principal, ident: str) -> TemplateRecord:
        async with self._db.sessions() as session:
            record = await store.find_for_user(session, user.user_id, ident)
        if record is None:
            raise NotFound(f"no template {ident!r}", field="template")
        return record

    async def list_templates(
        self, user: Principal, *, limit: int, offset: int
    ) -> tuple[list[TemplateRecord], int]:
        async with self._db.sessions() as session:
            records = await store.list_for_user(session, user.user_id, limit=limit, offset=offset)
            total = await store.count_for_user(session, user.user_id)
        return list(records), total

    async def image_for(self, user_id: str, ident: str) -> str:
        """The image a sandbox create naming ``ident`` gets: the id of the user's newest
        ready template of that id or name. Raises NotFound (deleted, not ready, missing,
        or another user's)."""
        if ident.endswith(".build"):  # a build step's own sandbox
            async with self._db.sessions() as session:
                record = await session.get(TemplateRecord, ident.removesuffix(".build"))
            if record is not None and record.user_id == user_id and record.status == "building":
                return ident
        else:
            async with self._db.sessions() as session:
                record = await store.newest_ready(session, user_id, ident)
            if record is not None:
                return record.id
        known = ", ".join(image.name for image in ROOTFS_CATALOG)
        raise NotFound(
            f"no rootfs {ident!r}: not one of {known}, nor a ready template of yours",
            field="rootfs",
        )

    async def logs(self, user: Principal, ident: str, *, attempt: int | None) -> str:
        record = await self.get(user, ident)
        lines: list[str] = []
        after = 0
        while True:
            async with self._db.sessions() as session:
                batch = await store.log_lines(session, record.id, after=after, attempt=attempt)
            if not batch:
                return "".join(lines)
            lines.extend(row.line + "\n" for row in batch)
            after = batch[-1].id

    async def follow(
        self, user: Principal, ident: str, *, attempt: int | None
    ) -> AsyncIterator[dict[str, Any]]:
        """The log's lines so far and as they come, then ``{"final": true, "status"}`` once
        the build has ended (checked before the 404, so errors come before streaming)."""
        record = await self.get(user, ident)
        return self._follow(record.id, attempt)

    async def _follow(self, template_id: str, attempt: int | None) -> AsyncIterator[dict[str, Any]]:
        after = 0
        while True:
            async with self._db.sessions() as session:
                current = await session.get(TemplateRecord, template_id)
                status = current.status if current is not None else store.FAILED
                batch = await store.log_lines(session, template_id, after=after, attempt=attempt)
            for row in batch:
                after = row.id
                yield {
                    "ts": row.ts.isoformat().replace("+00:00", "Z"),
                    "level": row.level,
                    "line": row.line,
                    "attempt": row.attempt,
                }
            if batch:
                continue
            if status in store.FINAL:
                yield {"final": True, "status": status}
                return
            await asyncio.sleep(_FOLLOW_POLL_S)

    # -- delete, cancel --------------------------------------------------------------------

    async def delete(self, user: Principal, ident: str) -> None:
        """Delete the template ``ident`` names (by name: every version). Its builds stop;
        sandboxes made from it keep working; new creates naming it are a 404."""
        await self.get(user, ident)
        async with self._db.sessions.begin() as session:
            rows = (
                await session.scalars(
                    select(TemplateRecord).where(
                        TemplateRecord.user_id == user.user_id,
                        TemplateRecord.deleted_at.is_(None),
                        (TemplateRecord.id == ident) | (TemplateRecord.name == ident),
                    )
                )
            ).all()
            for row in rows:
                row.deleted_at = utcnow()
        for row in rows:
            await self._stop_build(row.id, reason="the template was deleted")

    async def cancel(self, user: Principal, ident: str) -> TemplateRecord:
        """Stop the build (pending or building) → ``cancelled``; a finished one is a 409."""
        record = await self.get(user, ident)
        if record.status in store.FINAL:
            raise Conflict(
                f"the template is {record.status}; only a pending or building "
                "template can be cancelled",
                field="status",
            )
        await self._stop_build(record.id, reason="cancelled by its owner")
        return await self.get(user, record.id)

    async def _stop_build(self, template_id: str, *, reason: str) -> None:
        task = self._tasks.get(template_id)
        if task is not None:
            self._cancelled.add(template_id)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._finish(template_id, store.CANCELLED, reason, only_from=(store.PENDING,))

    async def _finish(
        self,
        template_id: str,
        status: str,
        reason: str | None,
        *,
        only_from: tuple[str, ...] = (store.PENDING, store.BUILDING),
        **changes: Any,
    ) -> None:
        async with self._db.sessions.begin() as session:
            record = await session.get(TemplateRecord, template_id)
            if record is None or record.status not in only_from:
                return
            record.status = status
            record.reason = reason
            for key, value in changes.items():
                setattr(record, key, value)
        if status in store.FINAL:
            await asyncio.to_thread(shutil.rmtree, self._dir / template_id, True)

    # -- the queue -------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        """Start pending builds, oldest first, while their users are under the limit."""
        async with self._dispatching:
            async with self._db.sessions() as session:
                pending = (
                    await session.scalars(
                        select(TemplateRecord)
                        .where(
                            TemplateRecord.status == store.PENDING,
                            TemplateRecord.deleted_at.is_(None),
                        )
                        .order_by(TemplateRecord.created_at, TemplateRecord.id)
                    )
                ).all()
            for record in pending:
                if record.id in self._tasks:
                    continue
                running = sum(1 for uid in self._users.values() if uid == record.user_id)
                if running >= self._settings.template_builds_per_user:
                    continue
                self._users[record.id] = record.user_id
                self._tasks[record.id] = asyncio.create_task(
                    self._run(record.id), name=f"hutch-template-{record.id}"
                )

    async def _run(self, template_id: str) -> None:
        try:
            await self._build(template_id)
        finally:
            self._tasks.pop(template_id, None)
            self._users.pop(template_id, None)
            self._cancelled.discard(template_id)
            with contextlib.suppress(Exception):
                await asyncio.shield(self._dispatch())

    async def _build(self, template_id: str) -> None:
        async with self._db.sessions.begin() as session:
            # Locked: in a cluster, every agent dispatches pending builds; one claims each.
            record = await session.get(TemplateRecord, template_id, with_for_update=True)
            if record is None or record.status != store.PENDING:
                return
            record.status = store.BUILDING
            record.attempts += 1
            record.started_at = utcnow()
            record.reason = None
        log_to = BuildLog(self._db, template_id, record.attempts)
        try:
            principal = await self._principal(record.user_id)
            parsed = parse(record.dockerfile)
            if is_registry_reference(parsed.base):
                await log_to.write(f"pulling {parsed.base} (or finding it unchanged)")
            base = await self.resolve_from(
                record.user_id, parsed.base, line=parsed.base_line, pull=True
            )
            build_plan = plan(parsed, base.settings)
            context = await asyncio.to_thread(self._context, template_id)
            result = await self.builder.build(
                record, principal, base=base, plan=build_plan, context=context, log_to=log_to
            )
            settings = build_plan.settings
            await asyncio.to_thread(
                write_image,
                self._settings.home,
                template_id,
                images=self._settings.images_path,
                root=base.root,
                layers=[self.layers.path(k) for k in result.layers],
                config=StartSettings(
                    env=settings.env,
                    workdir=settings.workdir,
                    user=settings.user,
                    start=settings.start,
                ),
            )
            await self._finish(
                template_id,
                store.READY,
                None,
                only_from=(store.BUILDING,),
                root=base.root,
                layers=list(result.layers),
                env=dict(settings.env),
                workdir=settings.workdir,
                run_as=settings.user,
                labels=dict(settings.labels),
                exposed=list(settings.exposed),
                start_cmd=settings.start,
                size_bytes=result.size_bytes,
                steps_total=result.steps,
                steps_cached=result.cached,
                built_at=utcnow(),
            )
            await log_to.write(f"template {record.name} version {record.version} is ready")
        except asyncio.CancelledError:
            user_cancel = template_id in self._cancelled
            reason = "cancelled by its owner" if user_cancel else _STOPPED
            with contextlib.suppress(Exception):
                await asyncio.shield(log_to.write(reason, level="error"))
            await asyncio.shield(
                self._finish(template_id, store.CANCELLED if user_cancel else store.FAILED, reason)
            )
            raise
        except (BuildFailed, HutchError) as exc:
            reason = exc.message if isinstance(exc, HutchError) else str(exc)
            await log_to.write(f"build failed: {reason}", level="error")
            await self._finish(template_id, store.FAILED, reason)
        except Exception:
            log.exception("template %s failed", template_id)
            await log_to.write(_INTERNAL, level="error")
            await self._finish(template_id, store.FAILED, _INTERNAL)

    def _context(self, template_id: str) -> BuildContext:
        path: Path = self._dir / template_id / "context"
        if not path.is_file():
            return BuildContext.empty()
        cap = self._settings.template_max_context_bytes
        return BuildContext.load(path.read_bytes(), max_unpacked=cap)

    async def _principal(self, user_id: str) -> Principal:
        async with self._db.sessions() as session:
            user = await session.get(User, user_id)
        return Principal(
            user_id=user_id, user_name=user.name if user else "", is_admin=False, key_id=""
        )

    # -- start and stop --------------------------------------------------------------------

    async def recover(self) -> None:
        """After a restart: builds that were running failed (their sandboxes and half
        layers go); pending ones are queued again."""
        await asyncio.to_thread(self.layers.sweep_partials)
        async with self._db.sessions() as session:
            stale = (
                await session.scalars(
                    select(TemplateRecord).where(TemplateRecord.status == store.BUILDING)
                )
            ).all()
        for record in stale:
            if (self._settings.control_url and record.build_sandbox is None) or (
                await self._sandboxes.lives_elsewhere(record.build_sandbox)
            ):
                continue  # in a cluster, another agent's build (hutch.cluster)
            if record.build_sandbox:
                principal = await self._principal(record.user_id)
                with contextlib.suppress(HutchError):
                    await self._sandboxes.destroy(principal, record.build_sandbox, builds=True)
            await asyncio.to_thread(remove_image, self._settings.home, build_image_name(record.id))
            await BuildLog(self._db, record.id, record.attempts).write(_STOPPED, level="error")
            await self._finish(record.id, store.FAILED, _STOPPED, build_sandbox=None)
        await self._dispatch()

    async def stop(self) -> None:
        """Stop the running builds (they are failed: the server is stopping)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.builder.drain()
