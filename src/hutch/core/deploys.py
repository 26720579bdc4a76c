"""Paid deploys (seed 003): a wallet pays in credits, hutch builds and serves its project.

A deploy request is checked whole before anything is charged: the body, the upload (paths,
sizes, zip bombs) and the build plan (:mod:`hutch.build.plan`; a project build-ai cannot
read is a 400, not a failed build). Then the price (USD per month times months, $1 = 100
credits) is met from the wallet's credits or from an on-chain payment presented with the
request, and the charge commits in the same transaction as the project and its
deployment. The build runs in the background in a fresh sandbox; once the app answers
HTTP on its port, the proxy serves it at ``http://{uniqueName}.{apps domain}``. A failed
deployment gives its credits back. A redeploy builds beside the running version and
switches over only when the new one is healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hutch.build.plan import BuildPlan
from hutch.build.upload import to_tar
from hutch.core.errors import (
    Conflict,
    HutchError,
    InvalidInput,
    NotFound,
    PaymentRequired,
    PermissionDenied,
    Unavailable,
)
from hutch.core.identity import Principal
from hutch.core.ids import new_id
from hutch.core.previews import PreviewService
from hutch.core.sandboxes import ExecCommand, SandboxCreate, SandboxService
from hutch.payments.chains import DECIMALS, Chain, ChainError, chains_from
from hutch.payments.ledger import (
    RAW_PER_CREDIT,
    InsufficientCredits,
    Ledger,
    LedgerLine,
    credits_for_usd,
    usd_of,
)
from hutch.payments.receipts import PaymentRejected, VerifiedPayment, verify_payment
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.models import CreditEntry, Deployment, Payment, Project, User, utcnow

__all__ = ["DeployRequest", "DeployService", "PaymentProof", "Started"]

log = logging.getLogger(__name__)

APP_DIR = "/app"
UPLOAD_TAR = "/app/.hutch-upload.tar"
MONTH = timedelta(days=30)
LOG_LINES = 30
# Project statuses (the seed's), and which of them count as "active projects".
BUILDING, DEPLOYING, ACTIVE, FAILED, DELETING, DELETED = (
    "building",
    "deploying",
    "active",
    "failed",
    "deleting",
    "deleted",
)
_IN_PROGRESS = ("queued", BUILDING, DEPLOYING, "promoting")
_LIVE_PROJECT = (*_IN_PROGRESS, ACTIVE)
_BUSY = (*_IN_PROGRESS, DELETING)  # a project in one of these takes no new deployment
_STOPPED = "the build was stopped (the project was deleted or the server stopped)"
_INTERNAL = "internal error (the server log has the details)"
_PAID_ALREADY = "this transaction has already paid for a deploy"
_CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class DeployRequest:
    unique_name: str
    display_name: str
    description: str | None
    months: int
    port: int
    plan: BuildPlan
    files: Mapping[str, bytes]


@dataclass(frozen=True, kw_only=True)
class PaymentProof:
    tx_hash: str
    chain: str
    token: str


@dataclass(frozen=True, kw_only=True)
class Started:
    project_id: str
    deployment_id: str


@dataclass(frozen=True, kw_only=True)
class DeploymentView:
    deployment: Deployment
    project: Project


class DeployService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        sandboxes: SandboxService,
        previews: PreviewService,
    ) -> None:
        self._settings = settings
        self._db = db
        self._sandboxes = sandboxes
        self._previews = previews
        self._ledger = Ledger()
        self._chains: dict[str, Chain] = chains_from(settings)
        self._builds: dict[str, asyncio.Task[None]] = {}  # by project id
        # Straight to the sandbox: never through a proxy the environment names.
        self._client = httpx.AsyncClient(timeout=2.0, trust_env=False)

    # -- pricing -------------------------------------------------------------------------

    def price_credits(self, months: int) -> int:
        return credits_for_usd(Decimal(str(self._settings.deploy_price_usd_per_month)) * months)

    def _quote(
        self, *, needed: int, balance: int, active: int, chain: str, token: str
    ) -> dict[str, Any]:
        return {
            "amount_usd": usd_of(needed),
            "amount_token": str(needed * RAW_PER_CREDIT),
            "current_credit_balance_usd": usd_of(balance),
            "active_projects": active,
            "pay_to": self._settings.pay_to,
            "payment_chain": chain,
            "token": token,
            "decimals": DECIMALS,
            "supported_chains": [
                {"chain": c.name, "chain_id": c.chain_id, "tokens": list(c.tokens)}
                for c in self._chains.values()
            ],
        }

    # -- deploy --------------------------------------------------------------------------

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
        wallet = wallet.lower()
        self._check_payment_names(chain, token)
        self._previews.check_available()
        price = self.price_credits(request.months)
        async with self._ledger.locks[wallet]:
            existing = await self._own_project(wallet, request.unique_name)
            async with self._db.sessions() as session:
                balance = await self._ledger.balance(session, wallet)
                active = await self._active_projects(session, wallet, but=existing)
            spare_others = bool(active) and not use_existing_credits
            needed = price if spare_others else max(price - balance, 0)
            quote = self._quote(
                needed=needed, balance=balance, active=active, chain=chain, token=token
            )
            if spare_others and balance > 0:
                quote["warning"] = _spare_warning(balance, active)
            if payment is not None:
                await self._take_payment(wallet, payment, needed, quote)
            elif balance < price or spare_others:
                self._payable()
                raise PaymentRequired("Payment required", details=quote)
            started = await self._charge_and_record(wallet, request, price, quote)
        task = asyncio.create_task(self._build(started, request), name="hutch-deploy")
        self._builds[started.project_id] = task
        task.add_done_callback(lambda done: self._forget_build(started.project_id, done))
        return started

    def _forget_build(self, project_id: str, task: asyncio.Task[None]) -> None:
        if self._builds.get(project_id) is task:
            del self._builds[project_id]

    def _check_payment_names(self, chain: str, token: str) -> None:
        if chain not in self._chains:
            raise InvalidInput(
                f"unknown payment chain {chain!r}; one of {', '.join(self._chains)}",
                field="X-Payment-Chain",
            )
        if token not in self._chains[chain].tokens:
            raise InvalidInput(
                f"unknown token {token!r}; one of {', '.join(self._chains[chain].tokens)}",
                field="X-Payment-Token",
            )

    def _payable(self) -> None:
        if not self._settings.pay_to:
            raise Unavailable(
                "this server takes no payments (no HUTCH_PAY_TO is configured) "
                "and the wallet has too few credits"
            )

    async def _take_payment(
        self, wallet: str, proof: PaymentProof, needed: int, quote: dict[str, Any]
    ) -> None:
        """Verify the transfer on chain and credit it; a hash pays once, anywhere."""
        self._payable()
        tx_hash = proof.tx_hash.lower()
        async with self._db.sessions() as session:
            if await session.get(Payment, tx_hash) is not None:
                raise Conflict(_PAID_ALREADY, field="X-Payment-Tx")
        try:
            paid = await verify_payment(
                self._chains[proof.chain],
                proof.token,
                tx_hash,
                payer=wallet,
                pay_to=self._settings.pay_to,
                min_amount_raw=needed * RAW_PER_CREDIT,
            )
        except PaymentRejected as exc:
            raise PaymentRequired(
                f"Payment verification failed: {exc}", details=quote | {"reason": str(exc)}
            ) from exc
        except ChainError as exc:
            raise Unavailable(f"the payment cannot be checked now: {exc}") from exc
        await self._credit(wallet, paid)

    async def _credit(self, wallet: str, paid: VerifiedPayment) -> None:
        async def work(session: AsyncSession) -> None:
            if await session.get(Payment, paid.tx_hash) is not None:
                raise Conflict(_PAID_ALREADY, field="X-Payment-Tx")
            session.add(
                Payment(
                    tx_hash=paid.tx_hash,
                    chain=paid.chain,
                    token=paid.token,
                    wallet=wallet,
                    amount_raw=str(paid.amount_raw),
                    block_number=paid.block_number,
                    created_at=utcnow(),
                )
            )
            await session.flush()
            await self._ledger.append(
                session,
                LedgerLine(
                    wallet=wallet,
                    kind="payment",
                    amount=paid.amount_raw // RAW_PER_CREDIT,
                    payment_tx=paid.tx_hash,
                ),
            )

        await self._ledger.transact(self._db, work)

    async def _charge_and_record(
        self, wallet: str, request: DeployRequest, price: int, quote: dict[str, Any]
    ) -> Started:
        """One transaction: the project (new, or this wallet's to redeploy), its deployment,
        and the charge."""
        try:
            return await self._ledger.transact(
                self._db, lambda session: self._record(session, wallet, request, price)
            )
        except InsufficientCredits as exc:
            short = exc.needed - exc.balance
            raise PaymentRequired(
                "Payment required",
                details=quote
                | {
                    "current_credit_balance_usd": usd_of(exc.balance),
                    "amount_usd": usd_of(short),
                    "amount_token": str(short * RAW_PER_CREDIT),
                },
            ) from exc

    async def _record(
        self, session: AsyncSession, wallet: str, request: DeployRequest, price: int
    ) -> Started:
        now = utcnow()
        project = await _live_project(session, request.unique_name, wallet)
        if project is None:
            project = Project(
                id=str(uuid.uuid4()),
                wallet=wallet,
                unique_name=request.unique_name,
                display_name=request.display_name,
                description=request.description,
                status="queued",
                paid_until=now,  # extended when a deployment goes live
                created_at=now,
            )
            session.add(project)
            await session.flush()  # before the deployment that refers to it
        else:
            claimed = await session.scalar(
                update(Project)
                .where(Project.id == project.id, Project.status.not_in(_BUSY))
                .values(
                    status="queued",
                    display_name=request.display_name,
                    description=request.description,
                )
                .returning(Project.id)
            )
            if claimed is None:
                raise _busy()
        deployment = Deployment(
            id=str(uuid.uuid4()),
            project_id=project.id,
            status="queued",
            months=request.months,
            credits=price,
            created_at=now,
        )
        session.add(deployment)
        await session.flush()
        await self._ledger.append(
            session,
            LedgerLine(wallet=wallet, kind="charge", amount=-price, deployment_id=deployment.id),
        )
        return Started(project_id=project.id, deployment_id=deployment.id)

    async def _own_project(self, wallet: str, unique_name: str) -> Project | None:
        async with self._db.sessions() as session:
            project = await _live_project(session, unique_name, wallet)
        if project is not None and project.status in _BUSY:
            raise _busy()
        return project

    @staticmethod
    async def _active_projects(session: AsyncSession, wallet: str, *, but: Project | None) -> int:
        query = (
            select(func.count())
            .select_from(Project)
            .where(
                Project.wallet == wallet,
                Project.deleted_at.is_(None),
                Project.status.in_(_LIVE_PROJECT),
            )
        )
        if but is not None:
            query = query.where(Project.id != but.id)
        return int(await session.scalar(query) or 0)

    async def balance(self, wallet: str) -> int:
        async with self._db.sessions() as session:
            return await self._ledger.balance(session, wallet.lower())

    async def ledger(self, wallet: str) -> list[CreditEntry]:
        async with self._db.sessions() as session:
            rows = await session.scalars(
                select(CreditEntry)
                .where(CreditEntry.wallet == wallet.lower())
                .order_by(CreditEntry.seq)
            )
            return list(rows)

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
        async with self._ledger.locks[project.wallet]:  # no deploy of it starts meanwhile
            await self._set_project(project.id, status=DELETING)
        await self._finish_delete(project)

    async def _finish_delete(self, project: Project) -> None:
        build = self._builds.get(project.id)
        if build is not None:
            build.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await build
        await self._unroute(project)
        async with self._db.sessions() as session:
            deployments = list(
                await session.scalars(select(Deployment).where(Deployment.project_id == project.id))
            )
        principal = await self._principal(project.wallet)
        for deployment in deployments:
            if deployment.sandbox_id is not None:
                await self._destroy_quietly(principal, deployment.sandbox_id)
            if deployment.status in _IN_PROGRESS:
                await self._settle_failed(deployment.id, "the project was deleted")
        await self._set_project(
            project.id, status=DELETED, deleted_at=utcnow(), sandbox_id=None, url=None
        )

    # -- building ------------------------------------------------------------------------

    async def _build(self, started: Started, request: DeployRequest) -> None:
        deployment_id, project_id = started.deployment_id, started.project_id
        sandbox_id: str | None = None
        try:
            async with self._db.sessions() as session:
                project = await session.get(Project, project_id)
            assert project is not None
            principal = await self._principal(project.wallet)
            await self._stage(project.id, deployment_id, BUILDING, plan=request.plan.detected)
            sandbox = await self._sandboxes.create(
                principal,
                SandboxCreate(
                    shape=self._settings.resolved_deploy_shape, rootfs=request.plan.image
                ),
            )
            sandbox_id = sandbox.id
            await self._set_deployment(deployment_id, sandbox_id=sandbox_id)
            await self._upload(principal, sandbox_id, request.files)
            env = {"PORT": str(request.port), "HOST": "0.0.0.0"}
            budget = self._settings.deploy_build_timeout_s
            loop = asyncio.get_running_loop()
            deadline = loop.time() + budget
            for step, command in (("install", request.plan.install), ("build", request.plan.build)):
                if command:
                    left = deadline - loop.time()
                    if left <= 0:
                        raise _BuildFailed(f"the build did not finish within {budget:g} s")
                    await self._step(principal, sandbox_id, step, command, env, left)
            await self._stage(project.id, deployment_id, DEPLOYING)
            spawned = await self._sandboxes.spawn(
                principal, sandbox_id, ExecCommand(cmd=request.plan.run, cwd=APP_DIR, env=env)
            )
            await self._wait_healthy(
                principal,
                sandbox_id,
                self._sandboxes.address_of(sandbox),
                request.port,
                spawned.pid,
                spawned.log_path,
            )
            await self._promote(
                project.id,
                deployment_id,
                sandbox_id,
                self._sandboxes.address_of(sandbox),
                request.port,
            )
        except asyncio.CancelledError:
            await asyncio.shield(self._fail(project_id, deployment_id, sandbox_id, _STOPPED))
            raise
        except _BuildFailed as exc:
            await self._fail(project_id, deployment_id, sandbox_id, str(exc))
        except HutchError as exc:
            await self._fail(project_id, deployment_id, sandbox_id, exc.message)
        except Exception:
            log.exception("deployment %s failed", deployment_id)
            await self._fail(project_id, deployment_id, sandbox_id, _INTERNAL)

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
            raise _BuildFailed(f"the upload could not be unpacked: {_tail(result.stderr)}")

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
            output = _tail(result.stdout + "\n" + result.stderr)
            raise _BuildFailed(
                f"build error: {step} ({command}) failed with {why}; last lines:\n{output}"
            )

    async def _wait_healthy(
        self, principal: Principal, sandbox_id: str, ip: str, port: int, pid: int, log_path: str
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.deploy_health_timeout_s
        url = f"http://{ip}:{port}/"
        while True:
            with contextlib.suppress(httpx.HTTPError):
                await self._client.get(url)
                return  # any HTTP answer means the app is listening
            alive = await self._sandboxes.exec(
                principal, sandbox_id, ExecCommand(cmd=f"kill -0 {pid} 2>/dev/null")
            )
            if alive.exit_code != 0:
                output = await self._log_tail(principal, sandbox_id, log_path)
                raise _BuildFailed(
                    f"the app exited before it answered on port {port}; last lines:\n{output}"
                )
            if loop.time() >= deadline:
                output = await self._log_tail(principal, sandbox_id, log_path)
                raise _BuildFailed(
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
        return _tail(kept.decode("utf-8", errors="replace")) or "(no output)"

    async def _promote(
        self, project_id: str, deployment_id: str, sandbox_id: str, ip: str, port: int
    ) -> None:
        """Route the project's name to the new sandbox, then retire the old one. The project
        and its deployment change in one transaction, and only while both are as expected."""
        async with self._db.sessions() as session:
            project = await session.get(Project, project_id)
            deployment = await session.get(Deployment, deployment_id)
        if project is None or project.status in (DELETING, DELETED) or deployment is None:
            raise _BuildFailed("the project was deleted")
        url = await self._route(project, ip, port)
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
                raise _BuildFailed("the project was deleted")
            await session.execute(
                update(Deployment)
                .where(Deployment.id == deployment_id)
                .values(status="ready", finished_at=utcnow())
            )
            if old and old != sandbox_id:
                await session.execute(
                    update(Deployment)
                    .where(Deployment.sandbox_id == old, Deployment.status == "ready")
                    .values(status="superseded")
                )
        if old and old != sandbox_id:
            await self._destroy_quietly(await self._principal(project.wallet), old)

    async def _fail(
        self, project_id: str, deployment_id: str, sandbox_id: str | None, reason: str
    ) -> None:
        """The deployment failed: say why, give its credits back, keep the version that
        serves (and its route). Nothing happens to a deployment that already finished."""
        if not await self._settle_failed(deployment_id, reason):
            return
        async with self._db.sessions() as session:
            project = await session.get(Project, project_id)
        if project is None:
            return
        principal = await self._principal(project.wallet)
        if sandbox_id is not None and sandbox_id != project.sandbox_id:
            await self._destroy_quietly(principal, sandbox_id)
        if project.status in (DELETING, DELETED):
            return
        if project.sandbox_id and project.port:  # the route may have moved to the failed one
            with contextlib.suppress(HutchError):
                live = await self._sandboxes.get(principal, project.sandbox_id)
                await self._route(project, self._sandboxes.address_of(live), project.port)

    async def _settle_failed(self, deployment_id: str, reason: str) -> bool:
        """Mark an unfinished deployment failed and refund its charge, once; False if it
        had already finished (ready or failed)."""
        async with self._db.sessions.begin() as session:
            settled = (
                await session.execute(
                    update(Deployment)
                    .where(Deployment.id == deployment_id, Deployment.status.in_(_IN_PROGRESS))
                    .values(status=FAILED, reason=reason[:4000], finished_at=utcnow())
                    .returning(Deployment.project_id, Deployment.credits)
                )
            ).first()
            if settled is None:
                return False
            project = await session.get(Project, settled.project_id)
            assert project is not None
            wallet = project.wallet
            if project.status not in (DELETING, DELETED):  # seen together with the failure
                project.status = ACTIVE if project.sandbox_id else FAILED
        await self._refund(wallet, deployment_id, settled.credits)
        return True

    async def _refund(self, wallet: str, deployment_id: str, credits: int) -> None:
        async def work(session: AsyncSession) -> None:
            done = await session.scalar(
                select(CreditEntry.id).where(
                    CreditEntry.deployment_id == deployment_id, CreditEntry.kind == "refund"
                )
            )
            if done is None:
                await self._ledger.append(
                    session,
                    LedgerLine(
                        wallet=wallet, kind="refund", amount=credits, deployment_id=deployment_id
                    ),
                )

        async with self._ledger.locks[wallet]:
            await self._ledger.transact(self._db, work)

    # -- routes and restarts -------------------------------------------------------------

    async def _route(self, project: Project, ip: str, port: int) -> str:
        return await self._previews.route_app(project.id, project.unique_name, f"{ip}:{port}")

    async def _unroute(self, project: Project) -> None:
        with contextlib.suppress(HutchError):
            await self._previews.unroute_app(project.id)

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
                await session.scalars(select(Deployment).where(Deployment.status.in_(_IN_PROGRESS)))
            )
        for deployment in stuck:
            await self._fail(
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
            try:
                sandbox = await self._sandboxes.get(
                    await self._principal(project.wallet), project.sandbox_id or ""
                )
            except NotFound:
                sandbox = None
            if sandbox is None or sandbox.status != "running" or not project.port:
                await self._set_project(project.id, status=FAILED, sandbox_id=None, url=None)
                continue
            with contextlib.suppress(HutchError):
                url = await self._route(project, self._sandboxes.address_of(sandbox), project.port)
                if url != project.url:  # the proxy moved (another HUTCH_PROXY_PORT)
                    await self._set_project(project.id, url=url)

    async def stop(self) -> None:
        builds = list(self._builds.values())
        for task in builds:
            task.cancel()
        for task in builds:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._client.aclose()

    # -- helpers -------------------------------------------------------------------------

    async def _principal(self, wallet: str) -> Principal:
        """Deployed sandboxes belong to a user of the wallet's own (no API key reaches it)."""
        name = f"wallet-{wallet.lower()}"
        async with self._db.sessions() as session:
            user = await session.scalar(select(User).where(User.name == name))
        if user is None:
            with contextlib.suppress(IntegrityError):
                async with self._db.sessions.begin() as session:
                    session.add(User(id=new_id("usr_"), name=name, is_admin=False))
            async with self._db.sessions() as session:
                user = await session.scalar(select(User).where(User.name == name))
        assert user is not None
        return Principal(user_id=user.id, user_name=user.name, is_admin=False, key_id="")

    async def _destroy_quietly(self, principal: Principal, sandbox_id: str) -> None:
        with contextlib.suppress(HutchError):
            await self._sandboxes.destroy(principal, sandbox_id)

    async def _stage(
        self, project_id: str, deployment_id: str, status: str, **changes: Any
    ) -> None:
        await self._set_deployment(deployment_id, status=status, **changes)
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(Project)
                .where(Project.id == project_id, Project.status.not_in((DELETING, DELETED)))
                .values(status=status)
            )

    async def _set_deployment(self, deployment_id: str, **changes: Any) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(Deployment).where(Deployment.id == deployment_id).values(**changes)
            )

    async def _set_project(self, project_id: str, **changes: Any) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(update(Project).where(Project.id == project_id).values(**changes))


class _BuildFailed(Exception):
    """A deployment failed for a reason its owner should read."""


async def _live_project(session: AsyncSession, unique_name: str, wallet: str) -> Project | None:
    """The live project of that name, if it is ``wallet``'s; another wallet's is a 400."""
    project = await session.scalar(
        select(Project).where(Project.unique_name == unique_name, Project.deleted_at.is_(None))
    )
    if project is not None and project.wallet != wallet:
        raise InvalidInput(f"uniqueName {unique_name!r} is taken", field="uniqueName")
    return project


def _busy() -> Conflict:
    return Conflict(
        "a deployment of this project is in progress; wait for it (GET …/status) before "
        "deploying again",
        field="uniqueName",
    )


def _spare_warning(balance: int, active: int) -> str:
    return (
        f"you have {balance} credits (${usd_of(balance):.2f}) and {active} other active "
        "project(s) they may be meant for; send X-Use-Existing-Credits: true to spend them "
        "on this deploy, or pay the amount quoted"
    )


def _tail(text: str, lines: int = LOG_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])[-3000:]


def deployment_body(view: DeploymentView) -> dict[str, Any]:
    """The seed's three shapes of a status answer."""
    d = view.deployment
    if d.status == "ready" or d.status == "superseded":
        return {"status": "ready", "deployment_id": d.id, "endpoint": view.project.url}
    if d.status == FAILED:
        return {"status": "failed", "deployment_id": d.id, "reason": d.reason or "failed"}
    return {"status": "deploying", "deployment_id": d.id, "deployment_status": d.status}
