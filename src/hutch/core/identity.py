"""Users, API keys and who a request is.

API keys are 256 random bits, so a plain SHA-256 is the right way to keep them: it cannot
be reversed, and it lets a key be found with one indexed lookup. The key itself is shown
once, when it is made, and never stored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from hutch.core.access_tokens import RouteCall, confine, is_access_token
from hutch.core.errors import InvalidInput, NotFound, PermissionDenied, Unauthenticated
from hutch.core.ids import new_id
from hutch.core.sandbox_status import TERMINAL_STATUSES, SandboxStatus
from hutch.store import access_tokens as token_store
from hutch.store import sandboxes as sandbox_store
from hutch.store import users as user_store
from hutch.store.cache import ReadCache
from hutch.store.db import Database
from hutch.store.models import ApiKey, User, utcnow

__all__ = [
    "ADMIN_USER",
    "IdentityService",
    "IssuedKey",
    "KeyInfo",
    "Principal",
    "SandboxStats",
    "hash_key",
]

ADMIN_USER = "admin"
KEY_PREFIX = "hk_"
USER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
# Writing last_used_at on every request would turn every read into a write.
_TOUCH_EVERY = timedelta(minutes=1)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class Principal:
    """The user a request acts for, and the key it came with.

    ``sandbox_id`` is set when the credential is a sandbox's access token (``skp_sb_…``):
    it acts for the sandbox's owner, but only on that sandbox
    (:func:`hutch.core.access_tokens.confine` decides, per route).
    """

    user_id: str
    user_name: str
    is_admin: bool
    key_id: str
    sandbox_id: str | None = None
    sandbox_name: str | None = None


@dataclass(frozen=True, kw_only=True)
class IssuedKey:
    """A key just made. ``key`` is the only copy there will ever be."""

    key: str
    key_id: str
    user_id: str
    user_name: str
    user_created: bool


@dataclass(frozen=True, kw_only=True)
class KeyInfo:
    id: str
    prefix: str
    user_id: str
    user_name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class SandboxStats:
    running: int
    paused: int
    other: int
    total: int


class IdentityService:
    """Issues, checks, lists and revokes API keys."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Key hash -> who it is and when the key was last marked used.
        self._known: ReadCache[str, tuple[Principal, datetime]] = ReadCache(db)

    async def issue_key(self, user_name: str, *, admin: bool = False) -> IssuedKey:
        """Make a new key for ``user_name``, creating the user if there is none by that name.

        Raises :class:`InvalidInput` for a name that is not 1-64 of ``A-Za-z0-9._@-``.
        """
        if not USER_NAME_PATTERN.fullmatch(user_name):
            raise InvalidInput(
                "user names are 1-64 characters of letters, digits, '.', '_', '@' and '-', "
                "starting with a letter or digit",
                field="user",
            )
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        for attempt in range(2):
            try:
                async with self._db.sessions.begin() as session:
                    user = await user_store.get_user_by_name(session, user_name)
                    created = user is None
                    if user is None:
                        user = await user_store.add_user(
                            session, User(id=new_id("usr_"), name=user_name, is_admin=admin)
                        )
                    record = await user_store.add_key(
                        session,
                        ApiKey(
                            id=new_id("key_"),
                            user_id=user.id,
                            key_hash=hash_key(key),
                            prefix=key[: len(KEY_PREFIX) + 8],
                        ),
                    )
                    return IssuedKey(
                        key=key,
                        key_id=record.id,
                        user_id=user.id,
                        user_name=user.name,
                        user_created=created,
                    )
            except IntegrityError:
                # Another process created the same user between our read and our insert.
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def bootstrap_admin(self) -> IssuedKey | None:
        """On a store with no users at all, create the admin user and its first key."""
        async with self._db.sessions() as session:
            if await user_store.any_user(session):
                return None
        return await self.issue_key(ADMIN_USER, admin=True)

    async def authenticate(self, key: str | None, route: RouteCall | None = None) -> Principal:
        """Return who ``key`` acts as on ``route``. Raises :class:`Unauthenticated` for a
        missing, unknown or revoked key.

        A sandbox access token is accepted only with the route it is used on, and only where
        :func:`~hutch.core.access_tokens.confine` allows it (:class:`PermissionDenied`
        otherwise); without ``route`` it is always refused, so a caller that does not say
        where a key is used can never hand a token the owner's account.
        """
        if not key:
            raise Unauthenticated(
                "missing API key: send it as 'X-Api-Key: <key>' or 'Authorization: Bearer <key>'"
            )
        return confine(await self._principal(key), route)

    def known(self, key_hash: str, token: int | None) -> Principal | None:
        """Who the key of ``key_hash`` is, if that is known without touching the store:
        read while the store's change token was ``token`` and marked used within the last
        minute (what :meth:`authenticate` would serve without a store round trip)."""
        known = self._known.get(key_hash, token)
        if known is not None and utcnow() - known[1] <= _TOUCH_EVERY:
            return known[0]
        return None

    async def _principal(self, key: str) -> Principal:
        key_hash = hash_key(key)
        token = self._known.token()
        if (principal := self.known(key_hash, token)) is not None:
            return principal
        if is_access_token(key):
            principal = await self._delegated(key_hash)
            touched = utcnow()
        else:
            principal, touched = await self._owner(key_hash)
        # Kept until anyone writes to the store: a revocation is seen on the next request.
        self._known.put(key_hash, token, (principal, touched))
        return principal

    async def _owner(self, key_hash: str) -> tuple[Principal, datetime]:
        # Most often read at once, with no round trip (SQLite: the store's commits empty
        # the key cache, and in a burst of creates every request read its key again);
        # the usual read when that cannot be, or the key's use is to be noted.
        answered, owner = user_store.key_by_hash_now(self._db, key_hash)
        if answered:
            if owner is None or owner.revoked:
                raise Unauthenticated("invalid or revoked API key")
            principal = Principal(user_id=owner.user_id, user_name=owner.user_name,
                                  is_admin=owner.is_admin, key_id=owner.key_id)  # fmt: skip
            used = owner.last_used_at
            if used is not None and utcnow() - used <= _TOUCH_EVERY:
                return principal, used
            # Its use noted in one go on the store's writer (through the async session
            # SQLite's write lock was held across the event loop's turns).
            used = utcnow()
            await self._db.write(lambda session: user_store.touch_key(session, owner.key_id, used))
            return principal, used
        async with self._db.sessions.begin() as session:
            found = await user_store.key_by_hash(session, key_hash)
            if found is None or found[0].revoked_at is not None:
                raise Unauthenticated("invalid or revoked API key")
            record, user = found
            touched = record.last_used_at
            if touched is None or utcnow() - touched > _TOUCH_EVERY:
                touched = record.last_used_at = utcnow()
            principal = Principal(
                user_id=user.id, user_name=user.name, is_admin=user.is_admin, key_id=record.id
            )
        return principal, touched

    async def _delegated(self, key_hash: str) -> Principal:
        async with self._db.sessions() as session:
            found = await token_store.by_hash(session, key_hash)
        if found is None or found[1].status in TERMINAL_STATUSES:
            raise Unauthenticated("invalid, rotated or disabled sandbox access token")
        _, sandbox, user = found
        return Principal(
            user_id=user.id,
            user_name=user.name,
            is_admin=False,
            key_id=f"skp:{sandbox.id}",
            sandbox_id=sandbox.id,
            sandbox_name=sandbox.name,
        )

    async def list_keys(self) -> list[KeyInfo]:
        async with self._db.sessions() as session:
            return [_key_info(key, user) for key, user in await user_store.list_keys(session)]

    async def revoke(self, ident: str) -> KeyInfo:
        """Revoke the key that ``ident`` names: its id, the whole key, or the start of the key
        as ``hutch keys list`` shows it. Idempotent.

        Raises :class:`NotFound` when nothing matches, :class:`InvalidInput` when several do.
        """
        if not ident:
            raise InvalidInput("name a key by its id or its prefix", field="key")
        async with self._db.sessions.begin() as session:
            matches = await user_store.keys_matching(session, ident, hash_key(ident))
            if not matches:
                raise NotFound(f"no API key with id or prefix {ident!r}")
            if len(matches) > 1:
                raise InvalidInput(
                    f"{ident!r} matches {len(matches)} keys; give the key id instead", field="key"
                )
            record = matches[0]
            if record.revoked_at is None:
                record.revoked_at = utcnow()
            user = await user_store.get_user(session, record.user_id)
            assert user is not None
            return _key_info(record, user)

    # -- the API's view (``/v1/api-keys``): a user's own keys; an admin's, anyone's ---------

    async def keys_of(self, caller: Principal, *, all_users: bool = False) -> list[KeyInfo]:
        if all_users and not caller.is_admin:
            raise PermissionDenied("all=true is for admin keys", field="all")
        keys = await self.list_keys()
        return keys if all_users else [k for k in keys if k.user_id == caller.user_id]

    async def issue_key_for(self, caller: Principal, user_name: str | None) -> IssuedKey:
        """A new key for the caller, or (an admin's call) for ``user_name``, made if new."""
        name = user_name or caller.user_name
        if name != caller.user_name and not caller.is_admin:
            raise PermissionDenied("only an admin key makes keys for other users", field="user")
        return await self.issue_key(name)

    async def revoke_key_of(self, caller: Principal, key_id: str) -> KeyInfo:
        """Revoke one of the caller's keys by id (an admin: anyone's). Idempotent."""
        found = next((k for k in await self.list_keys() if k.id == key_id), None)
        if found is None or (found.user_id != caller.user_id and not caller.is_admin):
            raise NotFound(f"no API key {key_id!r}", field="key")
        return await self.revoke(key_id)

    async def sandbox_stats(self, user_id: str) -> SandboxStats:
        async with self._db.sessions() as session:
            counts = await sandbox_store.count_by_status(session, user_id)
        running = counts.get(SandboxStatus.RUNNING, 0)
        paused = counts.get(SandboxStatus.PAUSED, 0)
        terminal = sum(counts.get(status, 0) for status in TERMINAL_STATUSES)
        total = sum(counts.values())
        return SandboxStats(
            running=running, paused=paused, other=total - running - paused - terminal, total=total
        )


def _key_info(key: ApiKey, user: User) -> KeyInfo:
    return KeyInfo(
        id=key.id,
        prefix=key.prefix,
        user_id=user.id,
        user_name=user.name,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )
