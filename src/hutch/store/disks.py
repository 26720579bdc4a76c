"""Disk records. Deleted disks stay as rows with ``deleted_at`` set and are never found."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hutch.store.models import DiskAttachment, DiskRecord, SandboxRecord

__all__ = [
    "attachment_at",
    "attachment_count",
    "attachments_of",
    "count_for_user",
    "find_for_user",
    "list_for_user",
    "live_attachments_on_host",
]


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


async def attachment_count(session: AsyncSession, disk_id: str) -> int:
    count = await session.scalar(
        select(func.count()).select_from(DiskAttachment).where(DiskAttachment.disk_id == disk_id)
    )
    return int(count or 0)


async def attachment_at(
    session: AsyncSession, sandbox_id: str, mount_path: str
) -> DiskAttachment | None:
    return await session.scalar(
        select(DiskAttachment).where(
            DiskAttachment.sandbox_id == sandbox_id, DiskAttachment.mount_path == mount_path
        )
    )


async def attachments_of(
    session: AsyncSession, sandbox_id: str
) -> Sequence[tuple[DiskAttachment, DiskRecord]]:
    rows = await session.execute(
        select(DiskAttachment, DiskRecord)
        .join(DiskRecord, DiskRecord.id == DiskAttachment.disk_id)
        .where(DiskAttachment.sandbox_id == sandbox_id)
        .order_by(DiskAttachment.created_at, DiskAttachment.id)
    )
    return [(attachment, disk) for attachment, disk in rows]


async def live_attachments_on_host(
    session: AsyncSession, host_id: str
) -> Sequence[tuple[DiskAttachment, DiskRecord]]:
    """Attachments of this host's running and paused sandboxes."""
    rows = await session.execute(
        select(DiskAttachment, DiskRecord)
        .join(DiskRecord, DiskRecord.id == DiskAttachment.disk_id)
        .join(SandboxRecord, SandboxRecord.id == DiskAttachment.sandbox_id)
        .where(SandboxRecord.host_id == host_id, SandboxRecord.status.in_(("running", "paused")))
    )
    return [(attachment, disk) for attachment, disk in rows]
