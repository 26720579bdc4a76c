"""The deploy service the routes call: start a deploy, read its status, list and delete
projects, and put things right after a restart.

It ties the three parts together: :mod:`.charges` (price, payment, the charge recorded
with the project and its deployment), :mod:`.pipeline` (the build in a fresh sandbox, the
health check, the route) and :mod:`.records` (the store). One control plane builds: the
running builds are tasks of this process.
"""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import select

from hutch.core.deploys.charges import DeployCharges
from hutch.core.deploys.dockerfile import DockerfileBuilds, template_name
from hutch.core.deploys.pipeline import BuildPipeline
from hutch.core.deploys.records import (
    DELETED,
    DELETING,
    FAILED,
    IN_PROGRESS,
    DeploymentView,
    DeployRecords,
    DeployRequest,
    PaymentProof,
    Started,
)
from hutch.core.errors import HutchError, NotFound, PermissionDenied
from hutch.core.previews import PreviewService
from hutch.core.sandboxes import SandboxService
from hutch.core.templates.service import TemplateService
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.models import CreditEntry, Deployment, Project, utcnow

__all__ = ["DeployService"]


class DeployService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        sandboxes: SandboxService,
        previews: PreviewService,
    ) -> None:
        self._db = db
        self._sandboxes = sandboxes
        self._previews = previews
        self._records = DeployRecords(db)
        self._charges = DeployCharges(settings, db)
        self._pipeline = BuildPipeline(
            settings,
            db,
            sandboxes=sandboxes,
            previews=previews,
            records=self._records,
            charges=self._charges,
        )
        self._builds: dict[str, asyncio.Task[None]] = {}  # by project id
        self._templates: TemplateService | None = None

    def use_templates(self, templates: TemplateService) -> None:
        """Build projects that have a Dockerfile through ``templates`` (made after this)."""
        self._templates = templates
        self._pipeline.dockerfiles = DockerfileBuilds(templates)

    # -- deploy --------------------------------------------------------------------------

    def price_credits(self, months: int) -> int:
        return self._charges.price_credits(months)

    async def deploy(
        self,
        wallet: str,
        request: DeployRequest,
        *,
        payment: PaymentProof | None,
        use_existing_credits: bool,
        chain: str = "arbitrum",
        token: str = "usdc",
    ) -> Started:
        """Charge the wallet (or answer 402 with a quote) and start the build in the
        background; the body and the plan were checked whole before this."""
        wallet = wallet.lower()
        self._charges.check_payment_names(chain, token)
        self._previews.check_available()
        started = await self._charges.pay_and_record(
            wallet,
            request,
            payment=payment,
            use_existing_credits=use_existing_credits,
            chain=chain,
            token=token,
        )
        task = asyncio.create_task(self._pipeline.run(started, request), name="hutch-deploy")
        self._builds[started.project_id] = task
        task.add_done_callback(lambda done: self._forget_build(started.project_id, done))
        return started

    def _forget_build(self, project_id: str, task: asyncio.Task[None]) -> None:
        if self._builds.get(project_id) is task:
            del self._builds[project_id]

    async def balance(self, wallet: str) -> int:
        return await self._charges.balance(wallet)

    async def ledger(self, wallet: str) -> list[CreditEntry]:
        return await self._charges.ledger(wallet)

    # -- reading -------------------------------------------------------------------------

    async def status(self, wallet: str, project_id: str, deployment_id: str) -> DeploymentView:
        async with self._db.sessions() as session:
            deployment = await session.get(Deployment, deployment_id)
            project = await session.get(Project, project_id)
        if deployment is None or project is None or deployment.project_id != project.id:
            raise NotFound("no such deployment of that project")
        if project.wallet != wallet.lower():
            raise PermissionDenied("only the wallet that deployed this project can see it")
        if project.deleted_at is not None:
            raise NotFound("that project was deleted")
        return DeploymentView(deployment=deployment, project=project)

    async def projects(self, wallet: str) -> list[Project]:
        async with self._db.sessions() as session:
            rows = await session.scalars(
                select(Project)
                .where(Project.wallet == wallet.lower(), Project.deleted_at.is_(None))
                .order_by(Project.created_at)
            )
            return list(rows)

    # -- delete --------------------------------------------------------------------------

    async def delete(self, wallet: str, project_id: str) -> None:
        async with self._db.sessions() as session:
            project = await session.get(Project, project_id)
        if project is None or project.deleted_at is not None:
            raise NotFound("no such project")
        if project.wallet != wallet.lower():
            raise PermissionDenied("only the wallet that deployed this project can delete it")
        async with self._charges.lock(project.wallet):  # no deploy of it starts meanwhile
            await self._records.set_project(project.id, status=DELETING)
        await self._finish_delete(project)

    async def _finish_delete(self, project: Project) -> None:
        build = self._builds.get(project.id)
        if build is not None:
            build.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await build
        await self._pipeline.unroute(project)
        async with self._db.sessions() as session:
            deployments = list(
                await session.scalars(select(Deployment).where(Deployment.project_id == project.id))
            )
        principal = await self._records.principal(project.wallet)
        for deployment in deployments:
            if deployment.sandbox_id is not None:
                await self._pipeline.destroy_quietly(principal, deployment.sandbox_id)
            if deployment.status in IN_PROGRESS:
                await self._charges.settle_failed(deployment.id, "the project was deleted")
        if self._templates is not None:  # its Dockerfile's template, every version
            with contextlib.suppress(HutchError):
                await self._templates.delete(principal, template_name(project.unique_name))
        await self._records.set_project(
            project.id, status=DELETED, deleted_at=utcnow(), sandbox_id=None, url=None
        )

    # -- restarts ------------------------------------------------------------------------

    async def recover(self) -> None:
        """After a start: deletes that were under way are finished; builds that were
        running are failed (and refunded); projects whose sandbox still runs are routed
        again. One control plane builds: several sharing a store would fail each other's."""
        async with self._db.sessions() as session:
            deleting = list(
                await session.scalars(
                    select(Project).where(Project.deleted_at.is_(None), Project.status == DELETING)
                )
            )
        for project in deleting:
            await self._finish_delete(project)
        async with self._db.sessions() as session:
            stuck = list(
                await session.scalars(select(Deployment).where(Deployment.status.in_(IN_PROGRESS)))
            )
        for deployment in stuck:
            if await self._sandboxes.lives_elsewhere(deployment.sandbox_id):
                continue  # another host's agent builds it (hutch.cluster)
            await self._pipeline.fail(
                deployment.project_id,
                deployment.id,
                deployment.sandbox_id,
                "the server restarted during the build; deploy again",
            )
        async with self._db.sessions() as session:
            live = list(
                await session.scalars(
                    select(Project).where(
                        Project.deleted_at.is_(None), Project.sandbox_id.is_not(None)
                    )
                )
            )
        for project in live:
            if await self._sandboxes.lives_elsewhere(project.sandbox_id):
                continue  # served by its own host's proxy
            try:
                sandbox = await self._sandboxes.get(
                    await self._records.principal(project.wallet), project.sandbox_id or ""
                )
            except NotFound:
                sandbox = None
            if sandbox is None or sandbox.status != "running" or not project.port:
                await self._records.set_project(
                    project.id, status=FAILED, sandbox_id=None, url=None
                )
                continue
            with contextlib.suppress(HutchError):
                url = await self._pipeline.route(
                    project, self._sandboxes.address_of(sandbox), project.port
                )
                if url != project.url:  # the proxy moved (another HUTCH_PROXY_PORT)
                    await self._records.set_project(project.id, url=url)

    async def stop(self) -> None:
        builds = list(self._builds.values())
        for task in builds:
            task.cancel()
        for task in builds:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._pipeline.close()
