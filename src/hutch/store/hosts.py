"""Hosts, as their heartbeats report them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hutch.store.models import Host

__all__ = ["count_hosts", "list_hosts"]


async def list_hosts(session: AsyncSession, *, limit: int | None, offset: int) -> Sequence[Host]:
    rows = await session.scalars(select(Host).order_by(Host.id).limit(limit).offset(offset))
    return rows.all()


async def count_hosts(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Host)) or 0)
