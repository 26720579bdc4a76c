"""Apply Alembic migrations programmatically (``hutch serve`` does so on start)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from hutch.store.db import Database

__all__ = ["MIGRATIONS_DIR", "upgrade"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Any constant will do; it only has to be the same in every hutch process on one database.
_PG_LOCK_KEY = 0x68757463


async def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``. Safe to call from several processes at once:
    PostgreSQL serialises them with an advisory lock, SQLite with a lock file beside it."""
    async with _sqlite_lock(db), db.engine.begin() as conn:
        if not db.is_sqlite:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        await conn.run_sync(_upgrade, revision)


@contextlib.asynccontextmanager
async def _sqlite_lock(db: Database) -> AsyncIterator[None]:
    path = db.url.database if db.is_sqlite else None
    if not path or path == ":memory:":
        yield
        return
    fd = await asyncio.to_thread(os.open, f"{path}.migrate-lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        # flock blocks; in a thread, so other coroutines of this process keep running.
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _upgrade(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
