"""The build pipeline of one deployment: a fresh sandbox, the upload unpacked into /app,
the install and build steps (with the operator's ``HUTCH_BUILD_ENV``; the sandbox reaches
the internet, minus the platform deny set), the run command in the background (with
``PORT`` and ``HOST``, not the build environment), a health check on its port, then the
route moves to it (promote) or the deployment fails with the build's or the app's last
lines and its credits are given back.

A project built from its Dockerfile (:mod:`hutch.build.dockerfile`) is built first as a
template (:mod:`.dockerfile`); its sandbox starts from that template, with ``PORT`` and
``HOST`` in its environment, and the app is the image's start command (or the given run
command).

A redeploy builds beside the running version; the route moves only once the new one
answers, and a failed redeploy leaves the old one serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping

import httpx
from sqlalchemy import update

from hutch.build.upload import to_tar
from hutch.core.deploys.charges import DeployCharges
from hutch.core.deploys.dockerfile import DockerfileBuilds
from hutch.core.deploys.records import (
    ACTIVE,
    BUILDING,
    DELETED,
    DELETING,
    DEPLOYING,
    MONTH,
    BuildFailed,
    DeployRecords,
    DeployRequest,
    Started,
    tail,
)
from hutch.core.errors import HutchError
from hutch.core.identity import Principal
from hutch.core.previews import PreviewService
from hutch.core.sandboxes import ExecCommand, SandboxCreate, SandboxService
from hutch.guest.agent import START_LOG, START_PID
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.events import append_deployment_event
from hutch.store.models import Deployment, Project, TemplateRecord, utcnow

__all__ = ["BuildPipeline"]

log = logging.getLogger(__name__)

APP_DIR = "/app"
UPLOAD_TAR = "/app/.hutch-upload.tar"
_STOPPED = "the build was stopped (the project was deleted or the server stopped)"
_INTERNAL = "internal error (the server log has the details)"
_CHUNK = 1 << 20
# A build sandbox reaches the internet (minus the platform deny set) whatever
# HUTCH_EGRESS_DEFAULT says: installs fetch packages. The app then runs in it, open too.
OPEN = ("*",)


class BuildPipeline:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        sandboxes: SandboxService,
        previews: PreviewService,
        records: DeployRecords,
        charges: DeployCharges,
    ) -> None:
        self._settings = settings
        self._db = db
        self._sandboxes = sandboxes
        self._previews = previews
        self._records = records
        self._charges = charges
        # Straight to the sandbox: never through a proxy the environment names.
        self._client = httpx.AsyncClient(timeout=2.0, trust_env=False)
        self.dockerfiles: DockerfileBuilds | None = None
        """Builds of projects' Dockerfiles (set once the template service exists)."""

    async def close(self) -> None:
        await self._client.aclose()

    async def run(self, started: Started, request: DeployRequest) -> None:
        """Build, start and promote one deployment; every failure ends in :meth:`fail`."""
        deployment_id, project_id = started.deployment_id, started.project_id
        sandbox_id: str | None = None
        try:
            async with self._db.sessions() as session:
                project = await session.get(Project, project_id)
            assert project is not None
            principal = await self._records.principal(project.wallet)
            await self._records.stage(
                project.id, deployment_id, BUILDING, plan=request.plan.detected
            )
            env = {"PORT": str(request.port), "HOST": "0.0.0.0"}
            budget = self._settings.deploy_build_timeout_s
            template = await self._dockerfile_template(principal, request, budget)
            sandbox = await self._sandboxes.create(
                principal,
                SandboxCreate(
                    shape=self._settings.resolved_deploy_shape,
                    rootfs=template.id if template else request.plan.image,
                    egress=OPEN,
                    envs=env if template else {},  # the image's start command gets them
                ),
            )
            sandbox_id = sandbox.id
            await self._records.set_deployment(deployment_id, sandbox_id=sandbox_id)
            if template is None:
                await self._upload(principal, sandbox_id, request.files)
                build_env = self._settings.build_env_vars | env
                loop = asyncio.get_running_loop()
                deadline = loop.time() + budget
                for step, command in (
                    ("install", request.plan.install), ("build", request.plan.build)
                ):  # fmt: skip
                    if command:
                        left = deadline - loop.time()
                        if left <= 0:
                            raise BuildFailed(f"the build did not finish within {budget:g} s")
                        await self._step(principal, sandbox_id, step, command, build_env, left)
            await self._records.stage(project.id, deployment_id, DEPLOYING)
            pid: int | None = None
            if template is None or request.plan.run:
                cwd = template.workdir if template else APP_DIR
                spawned = await self._sandboxes.spawn(
                    principal, sandbox_id, ExecCommand(cmd=request.plan.run, cwd=cwd, env=env)
                )
                pid, log_path = spawned.pid, spawned.log_path
            elif not template.start_cmd:
                raise BuildFailed(
                    "the image has no start command: add CMD (or ENTRYPOINT) to the "
                    "Dockerfile, or give settings.runCommand"
                )
            else:
                log_path = START_LOG
                pid = await self._start_pid(principal, sandbox_id)
            await self._wait_healthy(
                principal,
                sandbox_id,
                self._sandboxes.address_of(sandbox),
                request.port,
                pid,
                log_path,
            )
            await self._promote(
                project.id,
                deployment_id,
                sandbox_id,
                self._sandboxes.address_of(sandbox),
                request.port,
            )
            if template is not None and self.dockerfiles is not None:
                await self.dockerfiles.forget_older(principal, template)
        except asyncio.CancelledError:
            await asyncio.shield(self.fail(project_id, deployment_id, sandbox_id, _STOPPED))
            raise
        except BuildFailed as exc:
            await self.fail(project_id, deployment_id, sandbox_id, str(exc))
        except HutchError as exc:
            await self.fail(project_id, deployment_id, sandbox_id, exc.message)
        except Exception:
            log.exception("deployment %s failed", deployment_id)
            await self.fail(project_id, deployment_id, sandbox_id, _INTERNAL)

    async def _dockerfile_template(
        self, principal: Principal, request: DeployRequest, budget: float
    ) -> TemplateRecord | None:
        """The project's Dockerfile built as a template (None for build-ai projects)."""
        if request.dockerfile is None:
            return None
        if self.dockerfiles is None:
            raise BuildFailed("Dockerfile builds are not available on this server")
        return await self.dockerfiles.build(principal, request, timeout_s=budget)

    async def _start_pid(self, principal: Principal, sandbox_id: str) -> int | None:
        """The process id of the image's start command once the guest agent has started it
        (None if it did not say within 10 s: then only the health time limits the wait).
        BuildFailed when it could not be started at all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while loop.time() < deadline:
            with contextlib.suppress(HutchError, ValueError):
                download = await self._sandboxes.read_file(principal, sandbox_id, START_PID)
                return int(b"".join([chunk async for chunk in download.chunks]).decode())
            output = await self._log_tail(principal, sandbox_id, START_LOG)
            if "hutch: cannot start" in output:
                raise BuildFailed(f"the image's start command did not start:\n{output}")
            await asyncio.sleep(0.2)
        return None

    async def _upload(
        self, principal: Principal, sandbox_id: str, files: Mapping[str, bytes]
    ) -> None:
        archive = to_tar(files)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(archive), _CHUNK):
                yield archive[start : start + _CHUNK]

        await self._sandboxes.write_file(principal, sandbox_id, UPLOAD_TAR, chunks())
        result = await self._sandboxes.exec(
            principal,
            sandbox_id,
            ExecCommand(cmd="tar -xf .hutch-upload.tar && rm .hutch-upload.tar", cwd=APP_DIR),
        )
        if result.exit_code != 0:
            raise BuildFailed(f"the upload could not be unpacked: {tail(result.stderr)}")

    async def _step(
        self,
        principal: Principal,
        sandbox_id: str,
        step: str,
        command: str,
        env: dict[str, str],
        timeout_s: float,
    ) -> None:
        result = await self._sandboxes.exec(
            principal,
            sandbox_id,
            ExecCommand(
                cmd=command,
                cwd=APP_DIR,
                env=env,
                timeout_s=min(timeout_s, self._settings.exec_max_timeout_s),
            ),
        )
        if result.exit_code != 0:
            why = result.error or f"exit code {result.exit_code}"
            output = tail(result.stdout + "\n" + result.stderr)
            raise BuildFailed(
                f"build error: {step} ({command}) failed with {why}; last lines:\n{output}"
            )

    async def _wait_healthy(
        self,
        principal: Principal,
        sandbox_id: str,
        ip: str,
        port: int,
        pid: int | None,
        log_path: str,
    ) -> None:
        """Until the app answers HTTP on ``port``; BuildFailed (with ``log_path``'s last
        lines) if process ``pid`` exits first or the time is up (``pid`` None: only the
        time limit ends the wait)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.deploy_health_timeout_s
        url = f"http://{ip}:{port}/"
        while True:
            with contextlib.suppress(httpx.HTTPError):
                await self._client.get(url)
                return  # any HTTP answer means the app is listening
            alive = (
                await self._sandboxes.exec(
                    principal, sandbox_id, ExecCommand(cmd=f"kill -0 {pid} 2>/dev/null")
                )
                if pid is not None
                else None
            )
            if alive is not None and alive.exit_code != 0:
                output = await self._log_tail(principal, sandbox_id, log_path)
                raise BuildFailed(
                    f"the app exited before it answered on port {port}; last lines:\n{output}"
                )
            if loop.time() >= deadline:
                output = await self._log_tail(principal, sandbox_id, log_path)
                raise BuildFailed(
                    f"the app never answered HTTP on port {port} within "
                    f"{self._settings.deploy_health_timeout_s:g} s (does it listen on $PORT "
                    f"and 0.0.0.0?); last lines:\n{output}"
                )
            await asyncio.sleep(0.5)

    async def _log_tail(self, principal: Principal, sandbox_id: str, log_path: str) -> str:
        """The app's last lines (its log may be large: only the end is kept)."""
        kept = b""
        try:
            download = await self._sandboxes.read_file(principal, sandbox_id, log_path)
            async for chunk in download.chunks:
                kept = (kept + chunk)[-64 * 1024 :]
        except HutchError:
            return "(no output)"
        return tail(kept.decode("utf-8", errors="replace")) or "(no output)"

    async def _promote(
        self, project_id: str, deployment_id: str, sandbox_id: str, ip: str, port: int
    ) -> None:
        """Route the project's name to the new sandbox, then retire the old one. The project
        and its deployment change in one transaction, and only while both are as expected."""
        async with self._db.sessions() as session:
            project = await session.get(Project, project_id)
            deployment = await session.get(Deployment, deployment_id)
        if project is None or project.status in (DELETING, DELETED) or deployment is None:
            raise BuildFailed("the project was deleted")
        url = await self.route(project, ip, port)
        old = project.sandbox_id
        async with self._db.sessions.begin() as session:
            live = await session.scalar(
                update(Project)
                .where(Project.id == project_id, Project.status.not_in((DELETING, DELETED)))
                .values(
                    status=ACTIVE,
                    sandbox_id=sandbox_id,
                    port=port,
                    url=url,
                    paid_until=max(project.paid_until, utcnow()) + MONTH * deployment.months,
                )
                .returning(Project.id)
            )
            if live is None:
                raise BuildFailed("the project was deleted")
            await session.execute(
                update(Deployment)
                .where(Deployment.id == deployment_id)
                .values(status="ready", finished_at=utcnow())
            )
            await append_deployment_event(
                session,
                project.wallet,
                "deployment.ready",
                deployment_id,
                {"project_id": project_id, "name": project.unique_name, "url": url},
            )
            if old and old != sandbox_id:
                await session.execute(
                    update(Deployment)
                    .where(Deployment.sandbox_id == old, Deployment.status == "ready")
                    .values(status="superseded")
                )
        if old and old != sandbox_id:
            await self.destroy_quietly(await self._records.principal(project.wallet), old)

    async def fail(
        self, project_id: str, deployment_id: str, sandbox_id: str | None, reason: str
    ) -> None:
        """The deployment failed: say why, give its credits back, keep the version that
        serves (and its route). Nothing happens to a deployment that already finished."""
        if not await self._charges.settle_failed(deployment_id, reason):
            return
        async with self._db.sessions() as session:
            project = await session.get(Project, project_id)
        if project is None:
            return
        principal = await self._records.principal(project.wallet)
        if sandbox_id is not None and sandbox_id != project.sandbox_id:
            await self.destroy_quietly(principal, sandbox_id)
        if project.status in (DELETING, DELETED):
            return
        if project.sandbox_id and project.port:  # the route may have moved to the failed one
            with contextlib.suppress(HutchError):
                live = await self._sandboxes.get(principal, project.sandbox_id)
                await self.route(project, self._sandboxes.address_of(live), project.port)

    # -- routes and sandboxes ------------------------------------------------------------

    async def route(self, project: Project, ip: str, port: int) -> str:
        return await self._previews.route_app(project.id, project.unique_name, f"{ip}:{port}")

    async def unroute(self, project: Project) -> None:
        with contextlib.suppress(HutchError):
            await self._previews.unroute_app(project.id)

    async def destroy_quietly(self, principal: Principal, sandbox_id: str) -> None:
        with contextlib.suppress(HutchError):
            await self._sandboxes.destroy(principal, sandbox_id)
