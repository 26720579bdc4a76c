"""Engines and sessions for SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker

from hutch.store.events import RecordingSession

if TYPE_CHECKING:
    from hutch.settings import Settings

__all__ = ["Database", "normalize_url"]

_T = TypeVar("_T")

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

    def __init__(self, url: str, *, timeout_s: float = 3.0, lock_wait_s: float = 30.0,
                 max_connections: int = 30) -> None:  # fmt: skip
        self.url = normalize_url(url)
        self.timeout_s = timeout_s
        # PostgreSQL: this process holds at most ``max_connections`` at once (a burst past
        # them waits for one to come back), a fifth of them (at least one) kept for the
        # cluster's autocommit engine (hutch.cluster.oneshot), the rest this pool's.
        self.spare_connections = max(1, max_connections // 5)
        pooled = max(1, max_connections - self.spare_connections)
        kwargs: dict[str, Any] = {}
        self._file: str | None = None
        self._watch: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        if self.is_sqlite:
            database = self.url.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                self._file = database
            kwargs["connect_args"] = {"timeout": lock_wait_s}
        else:
            kwargs["pool_pre_ping"] = True  # a server restart leaves dead connections
            kwargs["connect_args"] = {"timeout": timeout_s, "command_timeout": 30}
            kwargs["pool_size"] = min(10, pooled)
            kwargs["max_overflow"] = pooled - min(10, pooled)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect",
                         functools.partial(_sqlite_pragmas, lock_wait_s))  # fmt: skip
        self.sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=RecordingSession
        )
        # SQLite file: short write transactions (:meth:`write`) run whole on one thread of
        # their own, on a plain (synchronous) connection of the same file.
        self._writer: ThreadPoolExecutor | None = None
        self._sync_engine: Engine | None = None
        self._sync_sessions: sessionmaker[Session] | None = None
        if self._file is not None:
            self._sync_engine = create_engine(
                self.url.set(drivername="sqlite"),
                connect_args={"timeout": lock_wait_s, "check_same_thread": False},
                pool_size=1,
                max_overflow=0,
            )
            event.listen(self._sync_engine, "connect",
                         functools.partial(_sqlite_pragmas, lock_wait_s))  # fmt: skip
            self._sync_sessions = sessionmaker(
                self._sync_engine, expire_on_commit=False, class_=RecordingSession
            )

    @classmethod
    def of(cls, settings: Settings) -> Database:
        """The store ``settings`` name, with their timeouts."""
        return cls(settings.resolved_database_url, timeout_s=settings.db_timeout_s,
                   lock_wait_s=settings.db_lock_wait_s,
                   max_connections=settings.db_max_connections)  # fmt: skip

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
        self._close_reader()

    def read_now(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
        """The rows of one small read (plain SQL, indexed), read at once in the caller's
        thread, with no round trip through the async driver; None when that cannot be
        (not a SQLite file, or the read would wait: then read the usual way).

        On a SQLite file in WAL mode a read never waits for writers, and an indexed
        lookup takes microseconds: less than one of the async driver's thread hops, of
        which a read through a session makes several (each waiting its turn on a busy
        event loop). The connection is read-only, with a 50 ms wait at most.
        """
        if self._file is None:
            return None
        try:
            if self._reader is None:
                self._reader = sqlite3.connect(
                    f"file:{quote(self._file)}?mode=ro", uri=True, timeout=0.05,
                    check_same_thread=False,
                )  # fmt: skip
            return self._reader.execute(sql, params).fetchall()
        except sqlite3.Error:
            self._close_reader()
            return None

    def _close_reader(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(sqlite3.Error):
                self._reader.close()
            self._reader = None

    async def write(self, work: Callable[[Session], _T]) -> _T:
        """Run ``work(session)`` (plain synchronous ORM code) in one transaction, commit
        it, and return what it returned; what it raises rolls the transaction back.

        For the short writes of hot paths (a create's record, status changes). Through the
        async session each statement is several hops between the event loop and the
        driver's thread, and on a busy loop each hop waits its turn: SQLite's write lock
        was held across all of them, and the other writers slept in its busy handler
        meanwhile (10 creates at once: ~400 ms for the last record). On a SQLite file the
        whole transaction runs on the store's writer thread instead, in one go (so writes
        of this process queue there, each woken as soon as the last commits); elsewhere
        (PostgreSQL) on an async session's connection, as ``run_sync``. The flush's events
        are the same (:mod:`hutch.store.events`). A caller cancelled meanwhile still waits
        for the transaction's end: it is committed or not, never left half done.
        """
        if self._sync_sessions is None:
            async with self.sessions.begin() as session:
                return await session.run_sync(work)
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="hutch-store-writer")
        sessions = self._sync_sessions

        def run() -> _T:
            with sessions.begin() as session:
                return work(session)

        done = asyncio.get_running_loop().run_in_executor(self._writer, run)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await done
            raise

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
        if self._writer is not None:
            await asyncio.to_thread(self._writer.shutdown)
            self._writer = None
        if self._sync_engine is not None:
            self._sync_engine.dispose()
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
