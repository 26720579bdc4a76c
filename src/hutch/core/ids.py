"""Identifiers: ULIDs with a type prefix (``sb_01K…``, ``usr_01K…``, ``net-01k…``).

A ULID is 48 bits of milliseconds and 80 random bits in Crockford base32, so ids sort by
creation time and never collide in practice. They are made here, not by the database, so
an object's id is known before it is stored.
"""

from __future__ import annotations

import os
import time

__all__ = ["new_id", "new_ulid"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_ulid(*, now_ms: int | None = None) -> str:
    """Return a new 26-character ULID, upper case."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str, *, lower: bool = False) -> str:
    """Return ``prefix`` followed by a new ULID, e.g. ``new_id("sb_")``."""
    ulid = new_ulid()
    return prefix + (ulid.lower() if lower else ulid)
