"""Templates and their build logs."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hutch.store.models import TemplateLogLine, TemplateRecord

__all__ = [
    "BUILDING",
    "CANCELLED",
    "FAILED",
    "FINAL",
    "PENDING",
    "READY",
    "count_for_user",
    "find_for_user",
    "list_for_user",
    "log_lines",
    "newest_ready",
    "next_version",
]

PENDING, BUILDING, READY, FAILED, CANCELLED = "pending", "building", "ready", "failed", "cancelled"
FINAL = (READY, FAILED, CANCELLED)


async def find_for_user(session: AsyncSession, user_id: str, ident: str) -> TemplateRecord | None:
    """The user's template with id ``ident``, or the newest version named ``ident``;
    deleted ones are gone."""
    return await session.scalar(
        select(TemplateRecord)
        .where(
            TemplateRecord.user_id == user_id,
            TemplateRecord.deleted_at.is_(None),
            or_(TemplateRecord.id == ident, TemplateRecord.name == ident),
        )
        .order_by(TemplateRecord.version.desc())
        .limit(1)
    )


async def newest_ready(session: AsyncSession, user_id: str, ident: str) -> TemplateRecord | None:
    """What a create naming ``ident`` gets: that ready template by id, or the newest ready
    version of that name; never a deleted one."""
    return await session.scalar(
        select(TemplateRecord)
        .where(
            TemplateRecord.user_id == user_id,
            TemplateRecord.deleted_at.is_(None),
            TemplateRecord.status == READY,
            or_(TemplateRecord.id == ident, TemplateRecord.name == ident),
        )
        .order_by(TemplateRecord.version.desc())
        .limit(1)
    )


async def list_for_user(
    session: AsyncSession, user_id: str, *, limit: int, offset: int
) -> Sequence[TemplateRecord]:
    rows = await session.scalars(
        select(TemplateRecord)
        .where(TemplateRecord.user_id == user_id, TemplateRecord.deleted_at.is_(None))
        .order_by(TemplateRecord.created_at, TemplateRecord.id)
        .limit(limit)
        .offset(offset)
    )
    return rows.all()


async def count_for_user(session: AsyncSession, user_id: str, *statuses: str) -> int:
    query = (
        select(func.count())
        .select_from(TemplateRecord)
        .where(TemplateRecord.user_id == user_id, TemplateRecord.deleted_at.is_(None))
    )
    if statuses:
        query = query.where(TemplateRecord.status.in_(statuses))
    return int(await session.scalar(query) or 0)


async def next_version(session: AsyncSession, user_id: str, name: str) -> int:
    newest = await session.scalar(
        select(func.max(TemplateRecord.version)).where(
            TemplateRecord.user_id == user_id, TemplateRecord.name == name
        )
    )
    return int(newest or 0) + 1


async def log_lines(
    session: AsyncSession,
    template_id: str,
    *,
    after: int = 0,
    attempt: int | None = None,
    limit: int = 1000,
) -> Sequence[TemplateLogLine]:
    query = select(TemplateLogLine).where(
        TemplateLogLine.template_id == template_id, TemplateLogLine.id > after
    )
    if attempt is not None:
        query = query.where(TemplateLogLine.attempt == attempt)
    rows = await session.scalars(query.order_by(TemplateLogLine.id).limit(limit))
    return rows.all()
