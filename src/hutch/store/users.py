"""Users and their API keys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from hutch.store.db import Database
from hutch.store.models import ApiKey, User

__all__ = [
    "KeyOwner",
    "add_key",
    "add_user",
    "any_user",
    "get_user",
    "get_user_by_name",
    "key_by_hash",
    "key_by_hash_now",
    "keys_matching",
    "list_keys",
    "touch_key",
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


def touch_key(session: Session, key_id: str, when: datetime) -> None:
    """Note that the key was used at ``when``. Call in a transaction."""
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when))


@dataclass(frozen=True, kw_only=True)
class KeyOwner:
    """An API key and its user, as :func:`key_by_hash_now` reads them."""

    key_id: str
    revoked: bool
    last_used_at: datetime | None
    user_id: str
    user_name: str
    is_admin: bool


_KEY_NOW = (
    "SELECT k.id, k.revoked_at IS NOT NULL, k.last_used_at, u.id, u.name, u.is_admin "
    "FROM api_keys AS k JOIN users AS u ON u.id = k.user_id WHERE k.key_hash = ?"
)


def key_by_hash_now(db: Database, key_hash: str) -> tuple[bool, KeyOwner | None]:
    """:func:`key_by_hash` read at once (:meth:`Database.read_now`): ``(True, owner)``,
    ``(True, None)`` for no such key, ``(False, None)`` when it cannot be read so (read
    the usual way then)."""
    rows = db.read_now(_KEY_NOW, (key_hash,))
    if rows is None:
        return False, None
    if not rows:
        return True, None
    key_id, revoked, used, user_id, user_name, is_admin = rows[0]
    try:  # (SQLite keeps a UTC time as text without its zone)
        last_used = None if used is None else datetime.fromisoformat(used).replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return False, None
    owner = KeyOwner(key_id=key_id, revoked=bool(revoked), last_used_at=last_used,
                     user_id=user_id, user_name=user_name, is_admin=bool(is_admin))  # fmt: skip
    return True, owner


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
