"""Keeping what the hot paths read from the store, for exactly as long as it is true."""

from __future__ import annotations

from typing import Generic, TypeVar

from hutch.store.db import Database

__all__ = ["ReadCache"]

K = TypeVar("K")
V = TypeVar("V")


class ReadCache(Generic[K, V]):
    """Values read from the store, served until anyone commits anything.

    Take a :meth:`token` *before* reading, then :meth:`put` the value with it. An entry is
    served only while the store's change token is still the one it was read under, so a
    write from any process (a key revoked by ``hutch keys revoke``, a sandbox paused by
    another request) is seen on the very next lookup. Where the store gives no token
    (PostgreSQL) nothing is kept and every lookup reads the store.

    Every commit empties the cache, so it holds only what was read since the last one.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._token: int | None = None
        self._entries: dict[K, V] = {}

    def token(self) -> int | None:
        return self._db.change_token()

    def get(self, key: K, token: int | None) -> V | None:
        if token is None or token != self._token:
            return None
        return self._entries.get(key)

    def put(self, key: K, token: int | None, value: V) -> None:
        if token is None:
            return
        if token != self._token:
            self._entries.clear()
            self._token = token
        self._entries[key] = value
