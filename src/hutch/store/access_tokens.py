"""Per-sandbox access tokens (``sandbox_access_tokens``): one row per sandbox."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hutch.store.models import SandboxAccessToken, SandboxRecord, User

__all__ = ["by_hash", "for_sandbox"]


async def for_sandbox(session: AsyncSession, sandbox_id: str) -> SandboxAccessToken | None:
    return await session.get(SandboxAccessToken, sandbox_id)


async def by_hash(
    session: AsyncSession, token_hash: str
) -> tuple[SandboxAccessToken, SandboxRecord, User] | None:
    """The enabled token with this hash, its sandbox and the sandbox's owner."""
    row = (
        await session.execute(
            select(SandboxAccessToken, SandboxRecord, User)
            .join(SandboxRecord, SandboxRecord.id == SandboxAccessToken.sandbox_id)
            .join(User, User.id == SandboxRecord.user_id)
            .where(SandboxAccessToken.token_hash == token_hash, SandboxAccessToken.enabled)
        )
    ).first()
    return None if row is None else (row[0], row[1], row[2])
