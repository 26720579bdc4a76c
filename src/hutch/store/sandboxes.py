"""Sandbox records."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hutch.store.models import SandboxRecord

__all__ = ["count_by_status", "count_on_hosts"]


async def count_by_status(session: AsyncSession, user_id: str) -> dict[str, int]:
    """``{status: count}`` over every sandbox the user ever owned."""
    rows = await session.execute(
        select(SandboxRecord.status, func.count())
        .where(SandboxRecord.user_id == user_id)
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
