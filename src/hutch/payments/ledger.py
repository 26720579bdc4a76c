"""Credits: a wallet's balance is the sum of its ledger lines, and lines are only appended.

$1 is 100 credits; a token unit of 6 decimals is 10^-6 dollars, so 10,000 raw units are
one credit. A payment adds a line tied to its transaction, a deployment's charge takes one
away tied to the deployment, a failed deployment's refund gives it back. Every line
carries the wallet's next ``seq``; two racing writers both read the same last line, both
try the same ``seq``, and the store's unique constraint lets only one through (the other
retries against the new balance), within one process and across processes alike.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hutch.store.db import Database
from hutch.store.models import CreditEntry, utcnow

T = TypeVar("T")

__all__ = [
    "CREDITS_PER_USD",
    "RAW_PER_CREDIT",
    "InsufficientCredits",
    "Ledger",
    "LedgerLine",
    "credits_for_usd",
    "usd_of",
]

CREDITS_PER_USD = 100
RAW_PER_CREDIT = 10_000  # token units (6 decimals) per credit
TRIES = 5


class InsufficientCredits(Exception):
    def __init__(self, balance: int, needed: int) -> None:
        super().__init__(f"{balance} credits, {needed} needed")
        self.balance = balance
        self.needed = needed


@dataclass(frozen=True, kw_only=True)
class LedgerLine:
    wallet: str
    kind: str
    amount: int
    payment_tx: str | None = None
    deployment_id: str | None = None


def credits_for_usd(usd: Decimal) -> int:
    return int((usd * CREDITS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def usd_of(credits: int) -> float:
    return float(Decimal(credits) / CREDITS_PER_USD)


class Ledger:
    """Appends lines inside the caller's transaction (:meth:`transact`), so a charge
    commits or rolls back together with what it pays for."""

    def __init__(self) -> None:
        # Within one process, writers of one wallet take turns (fewer retries); across
        # processes the (wallet, seq) constraint decides.
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    @staticmethod
    async def transact(db: Database, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """``work`` in one transaction, run again from the start when the store refuses it
        (a racing writer took the wallet's next line, or whatever else ``work`` inserts was
        taken: ``work`` reads again and decides). The last refusal propagates."""
        for attempt in range(TRIES):
            try:
                async with db.sessions.begin() as session:
                    return await work(session)
            except IntegrityError:
                if attempt == TRIES - 1:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    async def balance(session: AsyncSession, wallet: str) -> int:
        total = await session.scalar(
            select(func.coalesce(func.sum(CreditEntry.amount), 0)).where(
                CreditEntry.wallet == wallet.lower()
            )
        )
        return int(total or 0)

    @staticmethod
    async def append(session: AsyncSession, line: LedgerLine) -> CreditEntry:
        """Add ``line``; a charge that would take the balance below zero raises
        :class:`InsufficientCredits` and adds nothing."""
        wallet = line.wallet.lower()
        last = (
            await session.execute(
                select(CreditEntry.seq, CreditEntry.balance_after)
                .where(CreditEntry.wallet == wallet)
                .order_by(CreditEntry.seq.desc())
                .limit(1)
            )
        ).first()
        seq, balance = (last[0], last[1]) if last is not None else (0, 0)
        if balance + line.amount < 0:
            raise InsufficientCredits(balance, -line.amount)
        entry = CreditEntry(
            wallet=wallet,
            seq=seq + 1,
            kind=line.kind,
            amount=line.amount,
            balance_after=balance + line.amount,
            payment_tx=line.payment_tx,
            deployment_id=line.deployment_id,
            created_at=utcnow(),
        )
        session.add(entry)
        await session.flush()
        return entry
