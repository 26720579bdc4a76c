"""Per-sandbox access tokens: a credential that acts for the owner on one sandbox only.

A token is ``skp_sb_`` and 256 random bits. Like API keys it is shown once, when it is made
or rotated, and only its SHA-256 is kept (with a masked hint such as ``skp_sb_fi...irst``).
A sandbox has at most one token; only the owner's own API key may manage it.

What a token may do is decided in one place, :func:`confine`, from the *path template* of
the route a request matched, so a route added later is covered without touching it:

- a route under ``…/sandboxes/{sandbox_id}`` works on the token's own sandbox (by id or
  name); on any other sandbox id it acts as a caller who owns nothing, so the answer is the
  very 404 a made-up id gets;
- a few of those routes stay with the owner (:data:`OWNER_ONLY`): managing the token,
  changing the sandbox's exposure, lifetime or limits, adding SSH keys (access that would
  outlive the token), and anything touching the account's networks and disks;
- every other route (lists, create, networks, disks, templates, keys, whoami) is a 403.

Disabling or rotating a token commits to the store, and the key cache
(:class:`hutch.store.cache.ReadCache`) drops everything on any commit, so a revoked token
is refused on the very next request. A token dies with its sandbox: once the sandbox is
destroyed or failed the token no longer authenticates.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from hutch.core.errors import Conflict, NotFound, PermissionDenied
from hutch.core.sandbox_status import TERMINAL_STATUSES
from hutch.store import access_tokens as token_store
from hutch.store.db import Database
from hutch.store.models import SandboxAccessToken, SandboxRecord, utcnow

if TYPE_CHECKING:
    from hutch.core.identity import Principal

__all__ = [
    "OUTSIDER",
    "OWNER_ONLY",
    "TOKEN_PREFIX",
    "AccessTokenService",
    "AccessTokenState",
    "IssuedAccessToken",
    "RouteCall",
    "confine",
    "is_access_token",
    "mask",
]

TOKEN_PREFIX = "skp_sb_"
OUTSIDER = "usr_outside-the-tokens-sandbox"
"""The user id a delegated token acts as on any sandbox but its own: nobody owns anything
under it, so every lookup answers exactly as for an id that does not exist."""

_SANDBOX_ROUTE = re.compile(r"^(?:/nullspace)?/v1/sandboxes/\{sandbox_id\}(?P<rest>/.*)?$")
OWNER_ONLY: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (method, re.compile(pattern))
    for method, pattern in (
        ("*", r"/access-token(/.*)?"),  # only the owner manages the token
        ("PATCH", r""),  # ingress (public exposure) and auto-pause
        ("*", r"/(networks|disks)(/.*)?"),  # the account's networks and disks
        ("*", r"/(fork|resize|ssh-pubkeys|snapshot)"),  # new sandboxes/templates, quota, access
        ("PUT", r"/egress"),  # the owner's firewall policy
        ("*", r"/bandwidth/recharge"),  # spends the owner's credit
        ("*", r"/(host|timeout)"),  # Nullspace: public preview URLs, lifetime
    )
)
"""Routes under ``…/sandboxes/{sandbox_id}`` (the part after it) that only the owner's key
may call, by method (``*`` for any)."""

_FORBIDDEN = (
    "a sandbox access token works only on its own sandbox (exec, files, processes, "
    "pause, resume, destroy); use the owner's API key for this"
)
_NOT_FOUND = "sandbox access token not found"


def is_access_token(key: str) -> bool:
    return key.startswith(TOKEN_PREFIX) and len(key) > len(TOKEN_PREFIX)


def mask(token: str) -> str:
    """``skp_sb_first…`` → ``skp_sb_fi...irst``: enough to tell tokens apart, not to use one."""
    return f"{token[: len(TOKEN_PREFIX) + 2]}...{token[-4:]}"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class RouteCall:
    """The route a request matched: its method, path template and path parameters."""

    method: str
    template: str
    params: Mapping[str, str]


def confine(principal: Principal, route: RouteCall | None) -> Principal:
    """The principal a request acts as on ``route``.

    An owner's key passes unchanged. A delegated token passes on its own sandbox's routes,
    acts as :data:`OUTSIDER` on another sandbox's, and is refused everywhere else (or when
    the caller could not say which route it serves: ``route`` None) with
    :class:`PermissionDenied`.
    """
    if principal.sandbox_id is None:
        return principal
    matched = _SANDBOX_ROUTE.match(route.template) if route is not None else None
    if route is None or matched is None:
        raise PermissionDenied(_FORBIDDEN, field="token")
    rest = matched["rest"] or ""
    method = route.method.upper()
    if any(m in ("*", method) and p.fullmatch(rest) for m, p in OWNER_ONLY):
        raise PermissionDenied(_FORBIDDEN, field="token")
    if route.params.get("sandbox_id") in (principal.sandbox_id, principal.sandbox_name):
        return principal
    return replace(principal, user_id=OUTSIDER, sandbox_name=None)


@dataclass(frozen=True, kw_only=True)
class IssuedAccessToken:
    """A token just made. ``token`` is the only copy there will ever be."""

    token: str
    created_at: datetime
    rotated_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class AccessTokenState:
    enabled: bool
    hint: str | None = None
    created_at: datetime | None = None
    rotated_at: datetime | None = None


class AccessTokenService:
    """Creates, shows, rotates and disables a sandbox's token. Callers look the sandbox up
    with the owner's principal first, so another user's sandbox is already a 404."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, sandbox_record: SandboxRecord) -> IssuedAccessToken:
        """Make the sandbox's token. :class:`Conflict` if one is enabled already (also when
        another request made it a moment ago), or if the sandbox is gone."""
        _alive(sandbox_record)
        try:
            async with self._db.sessions.begin() as session:
                row = await token_store.for_sandbox(session, sandbox_record.id)
                if row is not None and row.enabled:
                    raise _already_enabled()
                if row is None:
                    row = SandboxAccessToken(
                        sandbox_id=sandbox_record.id, user_id=sandbox_record.user_id
                    )
                    session.add(row)
                token = _fresh(row)
                row.created_at = utcnow()
                row.rotated_at = None
                return IssuedAccessToken(token=token, created_at=row.created_at, rotated_at=None)
        except IntegrityError:
            # Two creates at once: the other one's row won.
            raise _already_enabled() from None

    async def state(self, sandbox_record: SandboxRecord) -> AccessTokenState:
        async with self._db.sessions() as session:
            row = await token_store.for_sandbox(session, sandbox_record.id)
        if row is None or not row.enabled or sandbox_record.status in TERMINAL_STATUSES:
            return AccessTokenState(enabled=False)
        return AccessTokenState(
            enabled=True, hint=row.hint, created_at=row.created_at, rotated_at=row.rotated_at
        )

    async def rotate(self, sandbox_record: SandboxRecord) -> IssuedAccessToken:
        """Replace the token; the old one stops working at once. :class:`NotFound` without an
        enabled token."""
        async with self._db.sessions.begin() as session:
            row = await token_store.for_sandbox(session, sandbox_record.id)
            if (
                row is None
                or not row.enabled
                or sandbox_record.status in TERMINAL_STATUSES
                or row.created_at is None
            ):
                raise NotFound(_NOT_FOUND, code="access_token_not_found", bare=True)
            token = _fresh(row)
            row.rotated_at = utcnow()
            return IssuedAccessToken(
                token=token, created_at=row.created_at, rotated_at=row.rotated_at
            )

    async def disable(self, sandbox_record: SandboxRecord) -> None:
        """Stop the token working. Idempotent: a sandbox without one is fine."""
        async with self._db.sessions.begin() as session:
            row = await token_store.for_sandbox(session, sandbox_record.id)
            if row is not None and (row.enabled or row.token_hash is not None):
                row.enabled = False
                row.token_hash = None
                row.hint = None


def _already_enabled() -> Conflict:
    return Conflict(
        "this sandbox already has an enabled access token; rotate it "
        "(POST …/access-token/rotate) or disable it (DELETE …/access-token) first",
        field="access_token",
    )


def _fresh(row: SandboxAccessToken) -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row.token_hash = _hash(token)
    row.hint = mask(token)
    row.enabled = True
    return token


def _alive(record: SandboxRecord) -> None:
    if record.status in TERMINAL_STATUSES:
        raise Conflict(
            f"the sandbox is {record.status}; a token for it could never be used",
            field="sandbox",
        )
