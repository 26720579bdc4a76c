"""Engines and sessions for SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)

from hutch.store.events import RecordingSession

if TYPE_CHECKING:
    from hutch.settings import Settings

__all__ = ["Database", "normalize_url"]

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def normalize_url(url: str) -> URL:
    """Accept the URLs people write (``postgresql://…``, ``sqlite:///…``) and pick async drivers.

    Raises ``ValueError`` for anything but SQLite and PostgreSQL.
    """
    parsed = make_url(url)
    if parsed.drivername in _ASYNC_DRIVERS:
        parsed = parsed.set(drivername=_ASYNC_DRIVERS[parsed.drivername])
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")
    return parsed


class Database:
    """One engine and its session factory. Call :meth:`dispose` when done."""

    def __init__(self, url: str, *, timeout_s: float = 3.0, lock_wait_s: float = 30.0) -> None:
        self.url = normalize_url(url)
        self.timeout_s = timeout_s
        kwargs: dict[str, Any] = {}
        self._file: str | None = None
        self._watch: sqlite3.Connection | None = None
        if self.is_sqlite:
            database = self.url.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                self._file = database
            kwargs["connect_args"] = {"timeout": lock_wait_s}
        else:
            kwargs["pool_pre_ping"] = True  # a server restart leaves dead connections
            kwargs["connect_args"] = {"timeout": timeout_s, "command_timeout": 30}
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 20
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect",
                         functools.partial(_sqlite_pragmas, lock_wait_s))  # fmt: skip
        self.sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=RecordingSession
        )

    @classmethod
    def of(cls, settings: Settings) -> Database:
        """The store ``settings`` name, with their timeouts."""
        return cls(settings.resolved_database_url, timeout_s=settings.db_timeout_s,
                   lock_wait_s=settings.db_lock_wait_s)  # fmt: skip

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    def change_token(self) -> int | None:
        """A number that moves whenever any connection, of any process, commits to the store.

        Reading it costs microseconds and never waits for a lock, so hot paths can keep what
        they read while it stays put (:class:`hutch.store.cache.ReadCache`). None where there
        is no such signal (PostgreSQL, an in-memory database): then nothing may be kept.
        """
        if self._file is None:
            return None
        try:
            if self._watch is None:
                self._watch = sqlite3.connect(
                    f"file:{quote(self._file)}?mode=ro", uri=True, check_same_thread=False
                )
            # SQLite's own counter of commits made by connections other than this one.
            token: int = self._watch.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            self._close_watch()
            return None
        return token

    def _close_watch(self) -> None:
        if self._watch is not None:
            with contextlib.suppress(sqlite3.Error):
                self._watch.close()
            self._watch = None

    async def ping(self) -> None:
        """Round-trip ``SELECT 1``; raises on failure or after ``timeout_s``."""
        async with asyncio.timeout(self.timeout_s), self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    @staticmethod
    def redacted(url: str) -> str:
        """``url`` with its password hidden, for logs and banners."""
        return make_url(url).render_as_string(hide_password=True)

    async def dispose(self) -> None:
        self._close_watch()
        await self.engine.dispose()


def _sqlite_pragmas(lock_wait_s: float, dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the CLI (`hutch keys create`) write while the server runs; busy_timeout makes
    # writers wait for each other instead of failing at once. Several processes write
    # (the agent, API workers, the CLI); on a busy host a write may queue behind dozens,
    # each slowed by the CPU it shares: 5 s ran out at load 13 with 20 clients (503s).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(lock_wait_s * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
