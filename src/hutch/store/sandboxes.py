"""Sandbox records."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hutch.store.models import SandboxRecord

__all__ = [
    "count_by_status",
    "count_on_hosts",
    "count_user_in",
    "find_by_ip",
    "find_for_user",
    "list_for_user",
    "live_on_host",
    "name_taken",
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


async def count_user_in(session: AsyncSession, user_id: str, statuses: Collection[str]) -> int:
    """How many of the user's own sandboxes are in ``statuses`` (builds' are not counted)."""
    return int(
        await session.scalar(
            select(func.count())
            .select_from(SandboxRecord)
            .where(SandboxRecord.user_id == user_id, SandboxRecord.status.in_(statuses), _USERS_OWN)
        )
        or 0
    )


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


async def name_taken(session: AsyncSession, user_id: str, name: str) -> bool:
    found = await session.scalar(
        select(SandboxRecord.id).where(
            SandboxRecord.user_id == user_id,
            SandboxRecord.name == name,
            SandboxRecord.status.not_in(_TERMINAL),
        )
    )
    return found is not None


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
