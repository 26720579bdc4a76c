"""Sandbox records."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from hutch.store.events import created_events
from hutch.store.models import SandboxRecord, User

__all__ = [
    "count_by_status",
    "count_on_hosts",
    "find_by_ip",
    "find_for_user",
    "insert_within_cap",
    "is_live_name_clash",
    "list_for_user",
    "live_on_host",
    "set_status_within_cap",
]

_TERMINAL = ("destroyed", "failed")
# Not a build's sandbox (:attr:`SandboxRecord.build_of`): those are the platform's, so the
# owner neither sees them nor has them counted.
_USERS_OWN = SandboxRecord.build_of.is_(None)


async def count_by_status(session: AsyncSession, user_id: str) -> dict[str, int]:
    """``{status: count}`` over every sandbox the user ever owned (builds' are not theirs)."""
    rows = await session.execute(
        select(SandboxRecord.status, func.count())
        .where(SandboxRecord.user_id == user_id, _USERS_OWN)
        .group_by(SandboxRecord.status)
    )
    return {status: int(count) for status, count in rows}


async def count_on_hosts(session: AsyncSession, statuses: tuple[str, ...]) -> dict[str, int]:
    """``{host_id: count}`` of sandboxes in ``statuses``, per host."""
    rows = await session.execute(
        select(SandboxRecord.host_id, func.count())
        .where(SandboxRecord.status.in_(statuses), SandboxRecord.host_id.is_not(None))
        .group_by(SandboxRecord.host_id)
    )
    return {str(host_id): int(count) for host_id, count in rows}


async def find_for_user(
    session: AsyncSession, user_id: str, ident: str, *, builds: bool = False
) -> SandboxRecord | None:
    """The user's sandbox with id ``ident``, else its live sandbox named ``ident``; a
    build's sandbox only with ``builds`` (the platform's own use)."""
    record = await session.get(SandboxRecord, ident)
    if record is None:
        record = await session.scalar(
            select(SandboxRecord).where(
                SandboxRecord.user_id == user_id,
                SandboxRecord.name == ident,
                SandboxRecord.status.not_in(_TERMINAL),
            )
        )
    if record is None or record.user_id != user_id:
        return None
    return record if builds or record.build_of is None else None


async def find_by_ip(session: AsyncSession, user_id: str, ip: str) -> SandboxRecord | None:
    return await session.scalar(
        select(SandboxRecord).where(
            SandboxRecord.user_id == user_id,
            SandboxRecord.ip == ip,
            SandboxRecord.status.not_in(_TERMINAL),
            _USERS_OWN,
        )
    )


async def list_for_user(
    session: AsyncSession,
    user_id: str,
    *,
    statuses: Collection[str] | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[SandboxRecord], int]:
    """A page of the user's sandboxes, newest first; by default only the live ones. Builds'
    sandboxes are not listed."""
    where = [SandboxRecord.user_id == user_id, _USERS_OWN]
    if statuses is None:
        where.append(SandboxRecord.status.not_in(_TERMINAL))
    else:
        where.append(SandboxRecord.status.in_(statuses))
    total = await session.scalar(select(func.count()).select_from(SandboxRecord).where(*where))
    rows = await session.scalars(
        select(SandboxRecord)
        .where(*where)
        .order_by(SandboxRecord.created_at.desc(), SandboxRecord.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return rows.all(), int(total or 0)


async def live_on_host(session: AsyncSession, host_id: str) -> Sequence[SandboxRecord]:
    rows = await session.scalars(
        select(SandboxRecord).where(
            SandboxRecord.host_id == host_id, SandboxRecord.status.not_in(_TERMINAL)
        )
    )
    return rows.all()


# -- the running cap, held by the store itself ----------------------------------------------
#
# The cap is checked in the statement that would pass it, so that no lock of the process's
# own is needed and any number of creates (and resumes), from any number of processes, at
# once never take a user past it. On SQLite the statement is the transaction's first write:
# it holds the database's write lock from its start, so its count is exact. On PostgreSQL
# (read committed: a statement's count would not see a concurrent uncommitted insert) the
# transaction first locks the user's row (``FOR NO KEY UPDATE``: foreign-key checks of other
# inserts are not held up), which the other capped writes of that user wait for; each
# statement after it counts afresh.


def _under_cap(user_id: str, counted: Collection[str], cap: int) -> ColumnElement[bool]:
    running = (
        select(func.count())
        .select_from(SandboxRecord)
        .where(SandboxRecord.user_id == user_id, SandboxRecord.status.in_(counted), _USERS_OWN)
        .scalar_subquery()
    )
    return running < cap


def _hold_user(session: Session, user_id: str) -> None:
    """On PostgreSQL, lock the user's row until the transaction ends (see above)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(User.id).where(User.id == user_id).with_for_update(key_share=True))


def _filled(record: SandboxRecord) -> dict[str, Any]:
    """``record``'s column values, its columns' Python defaults filled in (on it too)."""
    values: dict[str, Any] = {}
    for column in SandboxRecord.__table__.columns:
        value = getattr(record, column.key)
        default = column.default
        if value is None and default is not None and not column.nullable:
            value = default.arg(None) if default.is_callable else default.arg
            setattr(record, column.key, value)
        values[column.key] = value
    return values


_LIVE_NAME_INDEX = "uq_sandboxes_live_name"
# SQLite names the columns of the unique index that failed, never the index itself.
_SQLITE_LIVE_NAME = "UNIQUE constraint failed: sandboxes.user_id, sandboxes.name"


def is_live_name_clash(exc: IntegrityError) -> bool:
    """Whether ``exc`` is the unique index of live names refusing a row (the user already
    has a live sandbox of that name), and not another constraint (a taken id, a user who
    is gone): on PostgreSQL by the constraint's name, on SQLite by the columns its message
    names."""
    orig = exc.orig
    # asyncpg's own error (the cause of the driver adapter's) carries the constraint's name.
    for error in (orig, getattr(orig, "__cause__", None)):
        name = getattr(error, "constraint_name", None)
        if isinstance(name, str):
            return name == _LIVE_NAME_INDEX
    text = str(orig)
    return _SQLITE_LIVE_NAME in text or f'"{_LIVE_NAME_INDEX}"' in text


def insert_within_cap(
    session: Session, record: SandboxRecord, *, counted: Collection[str], cap: int | None
) -> bool:
    """Insert ``record`` (a new sandbox) with its ``sandbox.created`` events, in one
    statement that inserts nothing when its user already has ``cap`` of their own sandboxes
    in ``counted``; False then. ``cap`` None: no cap (a build's sandbox, a paused fork).
    Call in a transaction (:meth:`~hutch.store.db.Database.write`); raises
    ``IntegrityError`` for a taken live name (:func:`is_live_name_clash`) and for any
    other constraint the row fails."""
    values = _filled(record)
    if cap is None:
        session.execute(insert(SandboxRecord), [values])
    else:
        _hold_user(session, record.user_id)
        table = cast(Table, SandboxRecord.__table__)
        row = select(
            *(literal(values[c.key], type_=c.type).label(c.name) for c in table.columns)
        ).where(_under_cap(record.user_id, counted, cap))
        result = session.execute(insert(table).from_select([c.name for c in table.columns], row))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
    created_events(session, record)
    return True


def set_status_within_cap(
    session: Session,
    sandbox_id: str,
    user_id: str,
    status: str,
    *,
    counted: Collection[str],
    cap: int,
) -> bool:
    """Set the sandbox's ``status`` (one of ``counted``: a resume) in one statement that
    changes nothing when its user already has ``cap`` sandboxes in ``counted``; False then.
    Call in a transaction."""
    _hold_user(session, user_id)
    result = session.execute(
        update(SandboxRecord)
        .where(SandboxRecord.id == sandbox_id, _under_cap(user_id, counted, cap))
        .values(status=status)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
