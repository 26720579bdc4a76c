"""Apply Alembic migrations programmatically (``hutch serve`` does so on start)."""

from __future__ import annotations

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
    """Bring the schema to ``revision``. Safe to call from several processes at once."""
    async with db.engine.begin() as conn:
        if not db.is_sqlite:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        await conn.run_sync(_upgrade, revision)


def _upgrade(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
