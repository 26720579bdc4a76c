"""Networks and their members."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from hutch.store.models import NetworkMember, NetworkRecord, SandboxRecord

_LIVE = ("running", "paused")

__all__ = [
    "all_network_ids",
    "count_for_user",
    "find_for_user",
    "list_for_user",
    "live_memberships_on_host",
    "member_counts",
    "members_of",
    "memberships_of",
    "peers_named",
    "subnets_in_use",
    "take_memberships",
]


async def find_for_user(session: AsyncSession, user_id: str, ident: str) -> NetworkRecord | None:
    """The user's network whose id or name is ``ident``."""
    return await session.scalar(
        select(NetworkRecord).where(
            NetworkRecord.user_id == user_id,
            or_(NetworkRecord.id == ident, NetworkRecord.name == ident),
        )
    )


async def list_for_user(
    session: AsyncSession, user_id: str, *, limit: int, offset: int
) -> Sequence[NetworkRecord]:
    rows = await session.scalars(
        select(NetworkRecord)
        .where(NetworkRecord.user_id == user_id)
        .order_by(NetworkRecord.created_at, NetworkRecord.id)
        .limit(limit)
        .offset(offset)
    )
    return rows.all()


async def count_for_user(session: AsyncSession, user_id: str) -> int:
    count = await session.scalar(
        select(func.count()).select_from(NetworkRecord).where(NetworkRecord.user_id == user_id)
    )
    return int(count or 0)


async def member_counts(session: AsyncSession, network_ids: Sequence[str]) -> dict[str, int]:
    rows = await session.execute(
        select(NetworkMember.network_id, func.count())
        .where(NetworkMember.network_id.in_(network_ids))
        .group_by(NetworkMember.network_id)
    )
    return {network_id: int(count) for network_id, count in rows}


async def members_of(
    session: AsyncSession, network_id: str
) -> Sequence[tuple[NetworkMember, SandboxRecord]]:
    rows = await session.execute(
        select(NetworkMember, SandboxRecord)
        .join(SandboxRecord, SandboxRecord.id == NetworkMember.sandbox_id)
        .where(NetworkMember.network_id == network_id)
        .order_by(NetworkMember.attached_at, NetworkMember.sandbox_id)
    )
    return [(member, sandbox) for member, sandbox in rows]


async def memberships_of(
    session: AsyncSession, sandbox_id: str
) -> Sequence[tuple[NetworkMember, NetworkRecord]]:
    rows = await session.execute(
        select(NetworkMember, NetworkRecord)
        .join(NetworkRecord, NetworkRecord.id == NetworkMember.network_id)
        .where(NetworkMember.sandbox_id == sandbox_id)
        .order_by(NetworkMember.attached_at, NetworkMember.network_id)
    )
    return [(member, network) for member, network in rows]


def take_memberships(
    session: Session, sandbox_id: str
) -> list[tuple[NetworkMember, NetworkRecord]]:
    """The sandbox's memberships with their networks, deleted (a sandbox gone or going
    leaves them all). Call in a transaction (:meth:`~hutch.store.db.Database.write`)."""
    rows = session.execute(
        select(NetworkMember, NetworkRecord)
        .join(NetworkRecord, NetworkRecord.id == NetworkMember.network_id)
        .where(NetworkMember.sandbox_id == sandbox_id)
        .order_by(NetworkMember.attached_at, NetworkMember.network_id)
    )
    taken = [(member, network) for member, network in rows]
    if taken:
        session.execute(delete(NetworkMember).where(NetworkMember.sandbox_id == sandbox_id))
    return taken


async def subnets_in_use(session: AsyncSession) -> set[str]:
    return set((await session.scalars(select(NetworkRecord.subnet))).all())


async def peers_named(
    session: AsyncSession, *, host_id: str, asker_ip: str, name: str
) -> list[str] | None:
    """The addresses at which the live sandbox with link address ``asker_ip`` on this host
    reaches its live peers named ``name``, one per network they share; None when no live
    sandbox here has that address."""
    asker = await session.scalar(
        select(SandboxRecord.id).where(
            SandboxRecord.host_id == host_id,
            SandboxRecord.ip == asker_ip,
            SandboxRecord.status.in_(_LIVE),
        )
    )
    if asker is None:
        return None
    shared = select(NetworkMember.network_id).where(NetworkMember.sandbox_id == asker)
    rows = await session.scalars(
        select(NetworkMember.ip)
        .join(SandboxRecord, SandboxRecord.id == NetworkMember.sandbox_id)
        .where(
            NetworkMember.network_id.in_(shared),
            SandboxRecord.name == name,
            SandboxRecord.status.in_(_LIVE),
        )
        .order_by(NetworkMember.attached_at)
    )
    return list(rows.all())


async def live_memberships_on_host(
    session: AsyncSession, host_id: str
) -> Sequence[tuple[NetworkMember, NetworkRecord]]:
    """Memberships of this host's running and paused sandboxes."""
    rows = await session.execute(
        select(NetworkMember, NetworkRecord)
        .join(NetworkRecord, NetworkRecord.id == NetworkMember.network_id)
        .join(SandboxRecord, SandboxRecord.id == NetworkMember.sandbox_id)
        .where(SandboxRecord.host_id == host_id, SandboxRecord.status.in_(_LIVE))
    )
    return [(member, network) for member, network in rows]


async def all_network_ids(session: AsyncSession) -> set[str]:
    return set((await session.scalars(select(NetworkRecord.id))).all())
