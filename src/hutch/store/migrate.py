"""Apply Alembic migrations programmatically (``hutch serve`` does so on start).

A store already at the newest revision is recognised without Alembic: every ``hutch``
command that opens the store calls :func:`upgrade`, and importing Alembic (and the
template engine it pulls in) and reading its scripts cost each of them ~0.3-0.5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import Connection, inspect, text

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
        if revision == "head" and await conn.run_sync(_at_head):
            return
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


_REVISION = re.compile(r'^revision = "([^"]+)"$', re.MULTILINE)
_DOWN_REVISION = re.compile(r'^down_revision = (?:"([^"]+)"|None)$', re.MULTILINE)


@functools.cache
def _head() -> str | None:
    """The newest revision, read from the scripts' ``revision``/``down_revision`` lines;
    None when they are not one plain chain (then Alembic decides)."""
    revisions, parents = set(), set()
    for script in (MIGRATIONS_DIR / "versions").glob("*.py"):
        source = script.read_text()
        revision, down = _REVISION.findall(source), _DOWN_REVISION.search(source)
        if len(revision) != 1 or down is None:
            return None
        revisions.add(revision[0])
        if down.group(1):
            parents.add(down.group(1))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def _at_head(connection: Connection) -> bool:
    """Whether the store is at the newest revision already (then nothing is to be done)."""
    head = _head()
    if head is None or not inspect(connection).has_table("alembic_version"):
        return False
    stored = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
    return list(stored) == [head]


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command  # only when there is something to do (see the docstring)
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
