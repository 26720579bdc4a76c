"""Single statements in a round trip each, for the control plane's hot paths.

A read or write through the store's usual engine costs four round trips to PostgreSQL
(the pool's ping, BEGIN, the statement, ROLLBACK or COMMIT), each a wait for the
server's process; on a busy machine each wait can be a scheduler's time slice. What
the control plane does on every create and every request it passes on (a placement, a
hold dropped, where a sandbox lives) is one statement that needs no transaction of its
own, so :class:`OneShot` sends each alone on its own autocommit connections, without
the ping (a connection the server dropped is retried once on a new one). On SQLite
(one process's file, no round trips) it uses the store's engine as it is.

Its connections are the store's spare ones (``Database.spare_connections``, a fifth of
``HUTCH_DB_MAX_CONNECTIONS``): the store's pool and this engine together never hold more
than that setting, however many requests come at once (the others wait their turn).
One per store (:meth:`OneShot.of`): the control plane's routes, placements and reaper and
an agent's drain share it; a second would hold as many again.
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from hutch.store.db import Database

__all__ = ["OneShot"]

_SHARED: weakref.WeakKeyDictionary[Database, OneShot] = weakref.WeakKeyDictionary()


class OneShot:
    @classmethod
    def of(cls, db: Database) -> OneShot:
        """The one of ``db`` (made at the first call)."""
        found = _SHARED.get(db)
        if found is None:
            found = _SHARED[db] = cls(db)
        return found

    def __init__(self, db: Database) -> None:
        self._db = db
        self._own: AsyncEngine | None = None
        self.postgresql = db.url.get_backend_name() == "postgresql"

    def _engine(self) -> AsyncEngine:
        if not self.postgresql:
            return self._db.engine
        if self._own is None:
            spare = self._db.spare_connections
            self._own = create_async_engine(
                self._db.url, isolation_level="AUTOCOMMIT", pool_size=min(4, spare),
                max_overflow=spare - min(4, spare),
                connect_args={"timeout": self._db.timeout_s, "command_timeout": 30},
            )  # fmt: skip
        return self._own

    async def rows(self, statement: Any, params: dict[str, Any] | None = None) -> list[Any]:
        """Run ``statement`` alone, committed by itself; its rows (none for a write)."""
        engine = self._engine()
        for attempt in (1, 2):
            try:
                async with engine.connect() as conn:
                    result = await conn.execute(statement, params or {})
                    rows = list(result) if result.returns_rows else []
                    if not self.postgresql:
                        await conn.commit()
                    return rows
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self._own is not None:
            await self._own.dispose()
            self._own = None
