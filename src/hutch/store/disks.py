"""Disk records. Deleted disks stay as rows with ``deleted_at`` set and are never found."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hutch.store.models import DiskRecord

__all__ = ["count_for_user", "find_for_user", "list_for_user"]


async def find_for_user(session: AsyncSession, user_id: str, ident: str) -> DiskRecord | None:
    """The user's live disk whose id or name is ``ident``."""
    return await session.scalar(
        select(DiskRecord).where(
            DiskRecord.user_id == user_id,
            DiskRecord.deleted_at.is_(None),
            or_(DiskRecord.id == ident, DiskRecord.name == ident),
        )
    )


async def list_for_user(
    session: AsyncSession, user_id: str, *, limit: int, offset: int
) -> Sequence[DiskRecord]:
    rows = await session.scalars(
        select(DiskRecord)
        .where(DiskRecord.user_id == user_id, DiskRecord.deleted_at.is_(None))
        .order_by(DiskRecord.created_at, DiskRecord.id)
        .limit(limit)
        .offset(offset)
    )
    return rows.all()


async def count_for_user(session: AsyncSession, user_id: str) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(DiskRecord)
        .where(DiskRecord.user_id == user_id, DiskRecord.deleted_at.is_(None))
    )
    return int(count or 0)
