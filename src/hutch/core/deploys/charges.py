"""The paying side of deploys: the price, the 402 quote, on-chain payments credited once,
and the charge that commits with the project and its deployment (or the refund of a
deployment that failed).

The price is USD per month times months at $1 = 100 credits. It is met from the wallet's
credits or from a transfer presented with the request (``X-Payment-Tx``), checked on the
chain's RPC. Every change to a wallet's credits is a line appended to the ledger
(:mod:`hutch.payments.ledger`) under the wallet's lock, so two racing charges cannot spend
the same credits.
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hutch.core.deploys.records import (
    ACTIVE,
    BUSY,
    DELETED,
    DELETING,
    FAILED,
    IN_PROGRESS,
    LIVE_PROJECT,
    DeployRequest,
    PaymentProof,
    Started,
    busy,
    live_project,
)
from hutch.core.errors import Conflict, InvalidInput, PaymentRequired, Unavailable
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
from hutch.store.events import append_deployment_event
from hutch.store.models import CreditEntry, Deployment, Payment, Project, utcnow

__all__ = ["DeployCharges"]

_PAID_ALREADY = "this transaction has already paid for a deploy"


class DeployCharges:
    def __init__(self, settings: Settings, db: Database) -> None:
        self._settings = settings
        self._db = db
        self._ledger = Ledger()
        self._chains: dict[str, Chain] = chains_from(settings)

    def lock(self, wallet: str) -> asyncio.Lock:
        """Held while a wallet's credits or projects change (no deploy of it starts)."""
        return self._ledger.locks[wallet]

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

    # -- paying for a deploy -------------------------------------------------------------

    def check_payment_names(self, chain: str, token: str) -> None:
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

    async def pay_and_record(
        self,
        wallet: str,
        request: DeployRequest,
        *,
        payment: PaymentProof | None,
        use_existing_credits: bool,
        chain: str,
        token: str,
    ) -> Started:
        """Meet the price (credits, or the payment presented) and record the project and
        its deployment with the charge; a 402 with the quote when it cannot be met."""
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
            return await self._charge_and_record(wallet, request, price, quote)

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
        project = await live_project(session, request.unique_name, wallet)
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
                .where(Project.id == project.id, Project.status.not_in(BUSY))
                .values(
                    status="queued",
                    display_name=request.display_name,
                    description=request.description,
                )
                .returning(Project.id)
            )
            if claimed is None:
                raise busy()
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
            project = await live_project(session, unique_name, wallet)
        if project is not None and project.status in BUSY:
            raise busy()
        return project

    @staticmethod
    async def _active_projects(session: AsyncSession, wallet: str, *, but: Project | None) -> int:
        query = (
            select(func.count())
            .select_from(Project)
            .where(
                Project.wallet == wallet,
                Project.deleted_at.is_(None),
                Project.status.in_(LIVE_PROJECT),
            )
        )
        if but is not None:
            query = query.where(Project.id != but.id)
        return int(await session.scalar(query) or 0)

    # -- reading -------------------------------------------------------------------------

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

    # -- failing -------------------------------------------------------------------------

    async def settle_failed(self, deployment_id: str, reason: str) -> bool:
        """Mark an unfinished deployment failed and refund its charge, once; False if it
        had already finished (ready or failed)."""
        async with self._db.sessions.begin() as session:
            settled = (
                await session.execute(
                    update(Deployment)
                    .where(Deployment.id == deployment_id, Deployment.status.in_(IN_PROGRESS))
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
            await append_deployment_event(
                session,
                wallet,
                "deployment.failed",
                deployment_id,
                {"project_id": project.id, "name": project.unique_name, "reason": reason[:4000]},
            )
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


def _spare_warning(balance: int, active: int) -> str:
    return (
        f"you have {balance} credits (${usd_of(balance):.2f}) and {active} other active "
        "project(s) they may be meant for; send X-Use-Existing-Credits: true to spend them "
        "on this deploy, or pay the amount quoted"
    )
