"""The credit ledger on SQLite and PostgreSQL: balances are sums of appended lines, a charge
never takes a balance below zero, and two processes charging one wallet at once cannot
spend the same credits twice."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hutch.payments.ledger import InsufficientCredits, Ledger, LedgerLine
from hutch.store.db import Database
from hutch.store.models import CreditEntry, Payment, utcnow

pytestmark = pytest.mark.anyio
WALLET = "0x" + "ab" * 20


async def paid(db: Database, credits: int, tx: str = "0x" + "11" * 32) -> None:
    async def work(session: AsyncSession) -> None:
        session.add(
            Payment(
                tx_hash=tx,
                chain="arbitrum",
                token="usdc",
                wallet=WALLET,
                amount_raw=str(credits * 10_000),
                block_number=1,
                created_at=utcnow(),
            )
        )
        await session.flush()
        await Ledger.append(
            session, LedgerLine(wallet=WALLET, kind="payment", amount=credits, payment_tx=tx)
        )

    await Ledger.transact(db, work)


async def lines(db: Database) -> list[CreditEntry]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(CreditEntry).where(CreditEntry.wallet == WALLET).order_by(CreditEntry.seq)
        )
        return list(rows)


async def test_the_balance_is_the_sum_of_numbered_lines(db: Database) -> None:
    await paid(db, 100)
    for kind, amount in (("charge", -30), ("charge", -50)):
        await Ledger.transact(
            db,
            lambda s, k=kind, a=amount: Ledger.append(
                s, LedgerLine(wallet=WALLET.upper().replace("0X", "0x"), kind=k, amount=a)
            ),
        )
    with pytest.raises(InsufficientCredits) as refused:
        await Ledger.transact(
            db, lambda s: Ledger.append(s, LedgerLine(wallet=WALLET, kind="charge", amount=-21))
        )
    assert (refused.value.balance, refused.value.needed) == (20, 21)
    got = await lines(db)
    assert [(line.seq, line.kind, line.amount, line.balance_after) for line in got] == [
        (1, "payment", 100, 100),
        (2, "charge", -30, 70),
        (3, "charge", -50, 20),
    ]
    async with db.sessions() as session:
        assert await Ledger.balance(session, WALLET) == 20


async def test_a_transaction_hash_pays_once(db: Database) -> None:
    await paid(db, 100)
    with pytest.raises(IntegrityError):
        await paid(db, 100)
    assert len(await lines(db)) == 1


async def test_two_processes_charging_at_once_never_overspend(
    database_url: str, db: Database
) -> None:
    await paid(db, 100)
    # Two engines with a ledger each: two control planes that share only the store.
    planes = [(Database(database_url), Ledger()) for _ in range(2)]

    async def charge(plane: tuple[Database, Ledger]) -> bool:
        engine, ledger = plane
        async with ledger.locks[WALLET]:
            try:
                await ledger.transact(
                    engine,
                    lambda s: ledger.append(
                        s, LedgerLine(wallet=WALLET, kind="charge", amount=-30)
                    ),
                )
            except InsufficientCredits:
                return False
        return True

    try:
        results = await asyncio.gather(*(charge(planes[i % 2]) for i in range(10)))
    finally:
        for engine, _ in planes:
            await engine.dispose()
    assert results.count(True) == 3
    got = await lines(db)
    assert [line.seq for line in got] == list(range(1, 5))
    assert [line.balance_after for line in got] == [100, 70, 40, 10]
    assert sum(line.amount for line in got) == 10
