"""Users and their API keys."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hutch.store.models import ApiKey, User

__all__ = [
    "add_key",
    "add_user",
    "any_user",
    "get_user",
    "get_user_by_name",
    "key_by_hash",
    "keys_matching",
    "list_keys",
]


async def any_user(session: AsyncSession) -> bool:
    return (await session.scalar(select(User.id).limit(1))) is not None


async def get_user(session: AsyncSession, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_name(session: AsyncSession, name: str) -> User | None:
    return await session.scalar(select(User).where(User.name == name))


async def add_user(session: AsyncSession, user: User) -> User:
    session.add(user)
    await session.flush()
    return user


async def add_key(session: AsyncSession, key: ApiKey) -> ApiKey:
    session.add(key)
    await session.flush()
    return key


async def key_by_hash(session: AsyncSession, key_hash: str) -> tuple[ApiKey, User] | None:
    row = (
        await session.execute(
            select(ApiKey, User)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.key_hash == key_hash)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def list_keys(session: AsyncSession) -> Sequence[tuple[ApiKey, User]]:
    rows = await session.execute(
        select(ApiKey, User).join(User, User.id == ApiKey.user_id).order_by(ApiKey.id)
    )
    return [(key, user) for key, user in rows]


async def keys_matching(session: AsyncSession, ident: str, ident_hash: str) -> Sequence[ApiKey]:
    """Keys whose id is ``ident``, whose hash is ``ident_hash``, or whose prefix starts with it."""
    rows = await session.scalars(
        select(ApiKey).where(
            (ApiKey.id == ident)
            | (ApiKey.key_hash == ident_hash)
            | ApiKey.prefix.startswith(ident, autoescape=True)
        )
    )
    return rows.all()
