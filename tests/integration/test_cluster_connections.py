"""HUTCH_DB_MAX_CONNECTIONS bounds what one control worker holds on a real PostgreSQL 15:
the store's pool and the cluster's one-statement engine (cluster/oneshot.py) together,
under a burst far larger than the bound (review 4.5: a worker could open 50)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text

from hutch.cluster.oneshot import OneShot
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.migrate import upgrade
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


async def test_a_burst_never_holds_more_connections_than_the_setting(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.create_database("hutch_test_connection_bound")
    settings = Settings(home=tmp_path / "home", driver="fake", database_url=url,
                        db_max_connections=6)  # fmt: skip
    db = Database.of(settings)
    await upgrade(db)
    oneshot = OneShot(db)
    watcher = await asyncpg.connect(url.replace("postgresql://", "postgres://"))
    peak = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            held = await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            peak = max(peak, int(held))
            await asyncio.sleep(0.005)

    async def through_oneshot() -> int:
        rows = await oneshot.rows(text("SELECT 1 FROM pg_sleep(0.1)"))
        return len(rows)

    async def through_sessions() -> int:
        async with db.sessions() as session:
            return len(list(await session.execute(text("SELECT 1 FROM pg_sleep(0.1)"))))

    watching = asyncio.create_task(watch())
    try:
        answers = await asyncio.gather(
            *(through_oneshot() for _ in range(40)), *(through_sessions() for _ in range(40))
        )
    finally:
        done.set()
        await watching
        await oneshot.aclose()
        await db.dispose()
        await watcher.close()
    assert answers == [1] * 80  # every request of the burst was answered, none refused
    # It used what it may (the connections stay in their pools) and never one more.
    assert peak == 6
