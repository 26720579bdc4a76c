"""Reading the event log: pages of it, and a follow that yields events as they are committed.

The log is written by the store (:mod:`hutch.store.events`), so what is read here is only
what happened. ``since`` is an event's ``seq`` (everything after it) or a time (everything
at or after it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select

from hutch.core.errors import InvalidInput, PermissionDenied
from hutch.core.identity import Principal
from hutch.store.db import Database
from hutch.store.events import EVENT_TYPES, event_payload
from hutch.store.models import EventRecord

__all__ = ["EventFilter", "EventService", "aware_time"]

# A gap in seq (PostgreSQL hands out sequence numbers before commit) is waited for this
# long before a follower moves past it: an earlier transaction may still be committing.
_GAP_WAIT_S = 3.0
_POLL_S = 0.25
_MAX_SEQ = 2**63 - 1  # a BIGINT on PostgreSQL, SQLite's 64-bit rowid


def aware_time(text: str, malformed: str, field: str = "since") -> datetime:
    """``text`` as an ISO 8601 time with a zone (``Z`` too); :class:`InvalidInput` with
    ``malformed`` when it is none, or saying a zone is needed."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(malformed, field=field) from None
    if when.tzinfo is None:
        raise InvalidInput(f"{field} needs a time zone (say 2026-12-01T10:00:00Z)", field=field)
    return when


@dataclass(frozen=True, kw_only=True)
class EventFilter:
    after_seq: int = 0
    since_time: datetime | None = None
    types: frozenset[str] = frozenset()
    subject_id: str | None = None
    all_users: bool = False

    @classmethod
    def parse(
        cls, since: str | None, types: str | None, subject_id: str | None, all_users: bool
    ) -> EventFilter:
        after_seq, since_time = 0, None
        if since:
            if since.isascii() and since.isdigit():
                after_seq = int(since)
                if after_seq > _MAX_SEQ:
                    raise InvalidInput(
                        f"since is past any event's seq (at most {_MAX_SEQ})", field="since"
                    )
            else:
                since_time = aware_time(
                    since, "since must be an event's seq (a number) or an ISO 8601 time"
                )
        wanted = frozenset(t for t in (types or "").split(",") if t)
        unknown = sorted(wanted - set(EVENT_TYPES))
        if unknown:
            raise InvalidInput(
                f"unknown event type {unknown[0]!r}; known: {', '.join(EVENT_TYPES)}", field="type"
            )
        return cls(
            after_seq=after_seq,
            since_time=since_time,
            types=wanted,
            subject_id=subject_id or None,
            all_users=all_users,
        )


class EventService:
    def __init__(self, db: Database) -> None:
        self._db = db

    def check(self, user: Principal, wanted: EventFilter) -> None:
        """Raises what reading these events would raise."""
        self._query(user, wanted)

    def _query(self, user: Principal, wanted: EventFilter) -> Select[EventRecord]:
        if wanted.all_users and not user.is_admin:
            raise PermissionDenied(
                "all=true is for admin keys; leave it out for your own events", field="all"
            )
        query = select(EventRecord).where(EventRecord.seq > wanted.after_seq)
        if not wanted.all_users:
            query = query.where(EventRecord.user_id == user.user_id)
        if user.sandbox_id is not None:  # a sandbox's access token sees that sandbox only
            query = query.where(EventRecord.subject_id == user.sandbox_id)
        if wanted.since_time is not None:
            query = query.where(EventRecord.created_at >= wanted.since_time)
        if wanted.types:
            query = query.where(EventRecord.type.in_(wanted.types))
        if wanted.subject_id is not None:
            query = query.where(EventRecord.subject_id == wanted.subject_id)
        return query

    async def page(
        self, user: Principal, wanted: EventFilter, *, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Oldest first, so ``since=<the last seq seen>`` pages forward without gaps."""
        query = self._query(user, wanted)
        async with self._db.sessions() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            rows = await session.scalars(
                query.order_by(EventRecord.seq).limit(limit).offset(offset)
            )
            return [_shown(row) for row in rows], int(total or 0)

    async def follow(
        self, user: Principal, wanted: EventFilter, *, heartbeat_s: float = 15.0
    ) -> AsyncIterator[dict[str, Any] | None]:
        """The matching events after ``since``, then each new one as it is committed; None
        after ``heartbeat_s`` without one (for the stream to say it is alive)."""
        query = self._query(user, wanted)
        # The cursor walks every user's seq (the gaps are judged on the whole log), the
        # filter decides what is shown.
        cursor = wanted.after_seq
        if wanted.since_time is not None:
            async with self._db.sessions() as session:
                first = await session.scalar(
                    select(func.min(EventRecord.seq)).where(
                        EventRecord.created_at >= wanted.since_time
                    )
                )
            cursor = max(cursor, (first or 0) - 1) if first is not None else cursor
        gap_seen: float | None = None
        quiet_since = time.monotonic()
        while True:
            async with self._db.sessions() as session:
                seqs: Sequence[int] = (
                    await session.scalars(
                        select(EventRecord.seq)
                        .where(EventRecord.seq > cursor)
                        .order_by(EventRecord.seq)
                        .limit(500)
                    )
                ).all()
                upto = _contiguous(cursor, seqs)
                if upto == cursor and seqs:  # a gap right after the cursor
                    now = time.monotonic()
                    gap_seen = gap_seen or now
                    if now - gap_seen >= _GAP_WAIT_S:
                        upto, gap_seen = seqs[0], None
                else:
                    gap_seen = None
                if upto > cursor:
                    rows = await session.scalars(
                        query.where(EventRecord.seq > cursor, EventRecord.seq <= upto).order_by(
                            EventRecord.seq
                        )
                    )
                    shown = [_shown(row) for row in rows]
                    cursor = upto
                else:
                    shown = []
            for item in shown:
                yield item
            if shown:
                quiet_since = time.monotonic()
                continue
            if time.monotonic() - quiet_since >= heartbeat_s:
                quiet_since = time.monotonic()
                yield None
            await asyncio.sleep(_POLL_S)


def _contiguous(cursor: int, seqs: Sequence[int]) -> int:
    """The last seq reachable from ``cursor`` without a gap."""
    upto = cursor
    for seq in seqs:
        if seq != upto + 1 and upto != 0:
            break
        upto = seq
    return upto


def _shown(record: EventRecord) -> dict[str, Any]:
    return {**event_payload(record), "seq": record.seq}
