"""Hosts, as their heartbeats report them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hutch.store.models import Host

__all__ = ["count_hosts", "list_hosts", "upsert_host"]


async def upsert_host(session: AsyncSession, host: Host) -> None:
    """Insert the host, or overwrite the stored one with the same id."""
    await session.merge(host)
    await session.flush()


async def list_hosts(session: AsyncSession, *, limit: int | None, offset: int) -> Sequence[Host]:
    rows = await session.scalars(select(Host).order_by(Host.id).limit(limit).offset(offset))
    return rows.all()


async def count_hosts(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Host)) or 0)
