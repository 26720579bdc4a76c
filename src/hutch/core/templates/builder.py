"""The builder: a template's steps run in hutch sandboxes, each step a cached layer.

Entry point: :meth:`TemplateBuilder.build` (one attempt of one template; the service
schedules them). For every RUN, COPY or ADD it computes the step's cache key from its
parent's key, the step as resolved (command, environment, user, working directory,
destination) and the copied files' hashes. A key whose layer exists is a cache hit and
runs nothing. Otherwise the step runs inside a sandbox of the image so far (runc, the
build shape, open egress minus the platform deny set, ``HUTCH_BUILD_ENV``), never on the
host. Steps that run one after another share one sandbox: after each, what the step left
running is killed (as the end of a step's own sandbox would), so nothing in the sandbox
writes, and its writable layer is captured without freezing it (a read-only btrfs
snapshot, :meth:`Driver.capture_layer` ``quiesced``); what changed since the previous
capture becomes the step's layer (:meth:`LayerStore.commit_changes`), so every step is a
layer of its own as if it had run in a sandbox of its own. The sandbox is destroyed at
the next cache hit or at the end, in the background: a build that succeeds returns
without waiting for it (:meth:`TemplateBuilder.drain` waits, at a stop; a restart
destroys what a crash left), one that fails or is cancelled returns once it is gone.
Metadata instructions (ENV, WORKDIR, USER, CMD, …) change only the settings.

Nothing half-built is ever used: a layer appears only complete
(:class:`~hutch.host.layers.LayerStore`), and the template's image is written only once
every step is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass

from hutch.core.errors import HutchError
from hutch.core.identity import Principal
from hutch.core.sandboxes import SandboxCreate, SandboxService
from hutch.core.templates.context import BuildContext
from hutch.core.templates.dockerfile import BuildPlan, BuildStep, ImageSettings
from hutch.core.templates.logs import BuildLog
from hutch.host.agent import HostAgent
from hutch.host.drivers.base import DriverError
from hutch.host.guest import ExecExit, ExecRequest, GuestError, GuestUnreachable
from hutch.host.layers import LayerStore, Manifest, StartSettings, remove_image, write_image
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.models import SandboxRecord, TemplateRecord

__all__ = ["BaseImage", "BuildFailed", "BuildResult", "TemplateBuilder", "build_image_name"]

log = logging.getLogger(__name__)

# A build sandbox reaches the internet minus the platform deny set, as deploy builds do.
OPEN = ("*",)
# A running step's output reaches the log (and its followers) this often, in batches.
_LOG_FLUSH_S = 0.2
# Made by the guest agent in every sandbox; not part of what a step built.
_NOT_BUILT = ("run/self",)


class BuildFailed(Exception):
    """The build failed; the message is the template's ``reason``."""


@dataclass(frozen=True, kw_only=True)
class BaseImage:
    """What FROM resolved to: layers over a catalog image, with their settings."""

    root: str
    """The catalog image at the bottom ('' when the bottom layer is a whole rootfs)."""
    layers: tuple[str, ...]
    """Layer keys, bottom first."""
    settings: ImageSettings
    key: str
    """The cache key the first step builds on."""


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    layers: tuple[str, ...]
    size_bytes: int
    steps: int
    cached: int


@dataclass(kw_only=True)
class _Session:
    """A sandbox running consecutive steps, and what its layer held at the last capture."""

    sandbox_id: str
    manifest: Manifest | None = None


def build_image_name(template_id: str) -> str:
    """The image a build's sandbox starts from (removed once the sandbox runs)."""
    return f"{template_id}.build"


def step_key(parent: str, step: BuildStep, files_digest: str) -> str:
    canonical = json.dumps(
        {"parent": parent, "step": step.identity(), "files": files_digest}, sort_keys=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class TemplateBuilder:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        sandboxes: SandboxService,
        host: HostAgent,
        layers: LayerStore,
    ) -> None:
        self._settings = settings
        self._db = db
        self._sandboxes = sandboxes
        self._host = host
        self.layers = layers
        # Destroys of finished builds' sandboxes still under way (see drain).
        self._discarding: set[asyncio.Future[None]] = set()

    async def drain(self) -> None:
        """Wait for the destroys of finished builds' sandboxes (at a stop)."""
        await asyncio.shield(asyncio.gather(*self._discarding, return_exceptions=True))

    async def build(
        self,
        record: TemplateRecord,
        principal: Principal,
        *,
        base: BaseImage,
        plan: BuildPlan,
        context: BuildContext,
        log_to: BuildLog,
    ) -> BuildResult:
        """Run every step of ``plan`` over ``base``; return the layers. Raises
        :class:`BuildFailed` with the reason (the failing step's last lines logged). Every
        sandbox it made is gone when it raises; when it returns, they may still be going
        (in the background: the template is ready without waiting for them)."""
        discards: list[asyncio.Future[None]] = []
        sessions: list[_Session] = []
        try:
            result = await self._steps(
                record, principal, base, plan, context, log_to, sessions=sessions, discards=discards
            )
        except BaseException:
            for session in sessions:
                self._close(session, principal, record.id, discards)
            await asyncio.shield(asyncio.gather(*discards, return_exceptions=True))
            raise
        for session in sessions:
            self._close(session, principal, record.id, discards)
        for discard in discards:
            if not discard.done():
                self._discarding.add(discard)
                discard.add_done_callback(self._discarding.discard)
        return result

    async def _steps(
        self,
        record: TemplateRecord,
        principal: Principal,
        base: BaseImage,
        plan: BuildPlan,
        context: BuildContext,
        log_to: BuildLog,
        *,
        sessions: list[_Session],
        discards: list[asyncio.Future[None]],
    ) -> BuildResult:
        """The steps, in order; ``sessions`` holds the open sandbox (at most one)."""
        key, layers = base.key, list(base.layers)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.template_build_timeout_s
        by_number = {step.number: step for step in plan.steps}
        cached = ran = size = 0
        await log_to.write(f"Step 1/{plan.total} : FROM {record.base}")
        for number in range(2, plan.total + 1):
            instruction = plan.lines[number]
            log_to.add(f"Step {number}/{plan.total} : {instruction.text}")
            step = by_number.get(number)
            if step is None:
                continue
            payload = None
            try:
                if step.keyword != "RUN":
                    payload = context.payload(step)
            except (ValueError, HutchError) as exc:
                raise BuildFailed(f"step {number} (line {step.line}) failed: {exc}") from None
            key = step_key(key, step, payload.digest if payload else "")
            if self.layers.has(key):
                while sessions:  # its files are not what the cached layer builds on
                    self._close(sessions.pop(), principal, record.id, discards)
                cached += 1
                layers.append(key)
                size += self.layers.size(key)
                await log_to.write(f" ---> cached ({key[:12]})")
                continue
            left = deadline - loop.time()
            if left <= 0:
                raise BuildFailed(self._timeout_reason())
            await log_to.flush()
            fresh = not sessions
            if fresh:
                sandbox_id = await self._open(record, principal, base, layers, step)
                sessions.append(_Session(sandbox_id=sandbox_id))
            session = sessions[0]
            await self._run_step(
                session.sandbox_id,
                step,
                archive=payload.archive if payload else None,
                chown_paths=payload.paths if payload else (),
                timeout_s=left,
                log_to=log_to,
            )
            size += await self._keep(session, step, key)
            layers.append(key)
            ran += 1
            await log_to.write(f" ---> built ({key[:12]})")
            if size > self._settings.template_max_bytes:
                raise BuildFailed(
                    f"the template's layers hold {size} bytes after step {number}, over "
                    f"{self._settings.template_max_bytes} (HUTCH_TEMPLATE_MAX_BYTES)"
                )
        await log_to.write(
            f"{len(plan.steps)} filesystem steps: {cached} cached, {ran} run; "
            f"{size} bytes in the template's own layers"
        )
        return BuildResult(
            layers=tuple(layers), size_bytes=size, steps=len(plan.steps), cached=cached
        )

    def _timeout_reason(self) -> str:
        return (
            f"the build did not finish within {self._settings.template_build_timeout_s:g} s "
            "(HUTCH_TEMPLATE_BUILD_TIMEOUT_S)"
        )

    async def _open(
        self,
        record: TemplateRecord,
        principal: Principal,
        base: BaseImage,
        layers: list[str],
        step: BuildStep,
    ) -> str:
        """A new sandbox of the image so far (``layers`` over ``base``), recorded as the
        build's sandbox (a restart destroys it)."""
        image = build_image_name(record.id)
        try:
            await asyncio.to_thread(
                write_image,
                self._settings.home,
                image,
                images=self._settings.images_path,
                root=base.root,
                layers=[self.layers.path(k) for k in layers],
                config=StartSettings(),
            )
        except (OSError, ValueError) as exc:
            raise BuildFailed(f"the base image is not available on this host: {exc}") from None
        try:
            request = SandboxCreate(
                shape=self._settings.resolved_template_build_shape,
                rootfs=image,
                egress=OPEN,
                name=f"build-{record.id[-12:].lower()}-{step.number}",
                build_of=record.id,  # the platform's: not in the user's list nor cap
            )
            sandbox = await self._create_sandbox(principal, request, step)
        finally:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(remove_image, self._settings.home, image)
        await self._set_sandbox(record.id, sandbox.id)
        return sandbox.id

    def _close(
        self,
        session: _Session,
        principal: Principal,
        template_id: str,
        discards: list[asyncio.Future[None]],
    ) -> None:
        """Destroy the session's sandbox in the background (into ``discards``)."""
        discards.append(
            asyncio.ensure_future(self._discard(principal, template_id, session.sandbox_id))
        )

    async def _run_step(
        self,
        sandbox_id: str,
        step: BuildStep,
        *,
        archive: bytes | None,
        chown_paths: tuple[str, ...],
        timeout_s: float,
        log_to: BuildLog,
    ) -> None:
        """Run one RUN, COPY or ADD in the sandbox, then kill what it left running (as the
        end of a sandbox of its own would): nothing writes in the sandbox when this returns."""
        await self._do_step(
            sandbox_id,
            step,
            archive=archive,
            chown_paths=chown_paths,
            timeout_s=timeout_s,
            log_to=log_to,
        )
        await self._exec(
            sandbox_id,
            ["/bin/sh", "-c", "kill -KILL -1 2>/dev/null; true"],
            log_to,
            step=step,
            timeout_s=timeout_s,
        )

    async def _do_step(
        self,
        sandbox_id: str,
        step: BuildStep,
        *,
        archive: bytes | None,
        chown_paths: tuple[str, ...],
        timeout_s: float,
        log_to: BuildLog,
    ) -> None:
        # A RUN's working directory is made if missing (as root, like Docker's WORKDIR).
        if step.keyword == "RUN" and step.workdir != "/":
            await self._exec(
                sandbox_id,
                ["/bin/sh", "-c", 'mkdir -p -- "$1"', "sh", step.workdir],
                log_to,
                step=step,
                timeout_s=timeout_s,
            )
        if step.keyword == "RUN":
            await self._exec(
                sandbox_id,
                list(step.argv),
                log_to,
                step=step,
                timeout_s=timeout_s,
                env={**self._settings.build_env_vars, **step.env},
                cwd=step.workdir,
                user=step.user or None,
            )
            return
        await self._exec(
            sandbox_id,
            ["tar", "-xpf", "-", "-C", "/", "--no-overwrite-dir", "--numeric-owner"],
            log_to,
            step=step,
            timeout_s=timeout_s,
            stdin=archive or b"",
        )
        if step.chown and chown_paths:
            listing = "\0".join(chown_paths).encode() + b"\0"
            await self._exec(
                sandbox_id,
                ["xargs", "-0", "-r", "chown", "-h", "--", step.chown],
                log_to,
                step=step,
                timeout_s=timeout_s,
                stdin=listing,
            )

    async def _keep(self, session: _Session, step: BuildStep, key: str) -> int:
        """What the step changed in the session's sandbox, as layer ``key``; its size."""
        try:
            # Nothing writes in it (_run_step killed what the step left): no freeze.
            capture = self._host.driver.capture_layer(session.sandbox_id, quiesced=True)
            async with capture as captured:
                size, session.manifest = await self.layers.commit_changes(
                    key, captured.upper, session.manifest, exclude=_NOT_BUILT
                )
        except (DriverError, OSError) as exc:
            raise BuildFailed(f"step {step.number}'s changes could not be kept: {exc}") from exc
        return size

    async def _create_sandbox(
        self, principal: Principal, request: SandboxCreate, step: BuildStep
    ) -> SandboxRecord:
        """A step's sandbox. A build cancelled meanwhile waits for the create to end and
        destroys what it made, so no sandbox is left behind."""
        creating = asyncio.ensure_future(self._sandboxes.create(principal, request))
        try:
            return await asyncio.shield(creating)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                made = await creating
                await self._sandboxes.destroy(principal, made.id, builds=True)
            raise
        except HutchError as exc:
            raise BuildFailed(f"no sandbox for step {step.number}: {exc.message}") from None

    async def _exec(
        self,
        sandbox_id: str,
        argv: list[str],
        log_to: BuildLog,
        *,
        step: BuildStep,
        timeout_s: float,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        stdin: bytes | None = None,
    ) -> None:
        request = ExecRequest(
            argv=argv,
            env=env or {},
            cwd=cwd,
            user=user,
            stdin=stdin,
            timeout_s=min(timeout_s, self._settings.exec_max_timeout_s),
        )
        log_to.tail = []
        exit_event: ExecExit | None = None
        flusher = asyncio.create_task(_flush_every(log_to, _LOG_FLUSH_S))
        try:
            async for event in self._host.driver.guest(sandbox_id).exec(request):
                if isinstance(event, ExecExit):
                    exit_event = event
                else:
                    log_to.output(event.data)
        except (GuestError, GuestUnreachable) as exc:
            raise BuildFailed(
                f"step {step.number} (line {step.line}) could not run: {exc}"
            ) from exc
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        log_to.end_output()
        await log_to.flush()
        if exit_event is not None and exit_event.exit_code == 0:
            return
        why = "no exit"
        if exit_event is not None:
            why = exit_event.error or f"exit code {exit_event.exit_code}"
            if exit_event.error and exit_event.error.startswith("timeout"):
                raise BuildFailed(self._timeout_reason())
        last = "\n".join(log_to.tail[-10:]) or "(no output)"
        await log_to.write(f"step {step.number} failed: {why}", level="error")
        raise BuildFailed(
            f"step {step.number} (line {step.line}: {step.text[:200]}) failed with {why}; "
            f"last lines:\n{last}"
        )

    async def _set_sandbox(
        self, template_id: str, sandbox_id: str | None, *, only_if: str | None = None
    ) -> None:
        async with self._db.sessions.begin() as session:
            record = await session.get(TemplateRecord, template_id)
            if record is not None and (only_if is None or record.build_sandbox == only_if):
                record.build_sandbox = sandbox_id

    async def _discard(self, principal: Principal, template_id: str, sandbox_id: str) -> None:
        try:
            await self._sandboxes.destroy(principal, sandbox_id, builds=True)
        except HutchError:
            log.warning(
                "build sandbox %s of %s was not destroyed", sandbox_id, template_id, exc_info=True
            )
            return
        await self._set_sandbox(template_id, None, only_if=sandbox_id)


async def _flush_every(log_to: BuildLog, seconds: float) -> None:
    """Write a running step's output to the log in batches, so it is readable (and
    followed) while the step runs."""
    while True:
        await asyncio.sleep(seconds)
        await log_to.flush()
