"""Who is in the cluster: join tokens, hosts joining and heartbeating, draining, removal,
and hosts that went silent.

A host's ``status`` column is what an operator or the reaper set: ``active``,
``draining`` (no new placements; set by ``hutch hosts drain``, kept across heartbeats and
re-joins) or ``dead`` (written by :meth:`Membership.reap` once no heartbeat came for
``HUTCH_HOST_DEAD_AFTER_S``; a heartbeat makes it ``active`` again). Readers also treat a
host whose last heartbeat is too old as dead before the reaper has run.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hutch.cluster.oneshot import OneShot
from hutch.core.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from hutch.core.ids import new_id
from hutch.core.sandbox_status import SandboxStatus as S
from hutch.core.sealing import SealedBox
from hutch.store.db import Database
from hutch.store.models import Host, JoinToken, PlacementHold, SandboxRecord, utcnow

__all__ = [
    "HOST_LOST_PREFIX",
    "HostReport",
    "JoinTokenInfo",
    "Membership",
    "hash_token",
    "host_lost_reason",
]

JOIN_PREFIX = "hjt_"
HOST_PREFIX = "hht_"
HOST_LOST_PREFIX = "its host "
_SEAL_CONTEXT = "host-token"
# Statuses a sandbox is put in ``error`` from when its host goes silent (it occupies the
# host and something of it runs or is kept there).
_OCCUPYING = (S.RUNNING, S.PAUSED, S.PAUSING, S.RESUMING, S.CREATING, S.FORKING)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def host_lost_reason(host_id: str, silent_s: float) -> str:
    """The reason a sandbox shows while its host is dead; recovery looks for the prefix."""
    return (
        f"{HOST_LOST_PREFIX}{host_id} stopped answering (no heartbeat for {silent_s:.0f} s); "
        "it comes back by itself if the host returns with it"
    )


@dataclass(frozen=True, kw_only=True)
class HostReport:
    """What an agent says about its machine when it joins and in every heartbeat."""

    id: str
    address: str
    labels: dict[str, str] = field(default_factory=dict)
    runtimes: list[str] = field(default_factory=list)
    rootfses: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    free_mib: int = 0
    total_mib: int = 0
    capacity_mib: int = 0
    cpus: int = 0
    proxy: str = ""
    """``host:port`` of its preview proxy (the public entry passes requests there)."""


@dataclass(frozen=True, kw_only=True)
class JoinTokenInfo:
    id: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class Membership:
    """Join tokens and hosts, in the store. ``box`` seals host tokens (the master key)."""

    def __init__(self, db: Database, box: SealedBox | None, *, dead_after_s: float) -> None:
        self._db = db
        self._box = box
        self.dead_after = timedelta(seconds=dead_after_s)
        self._opened: dict[str, str] = {}  # sealed host token -> the token

    # -- join tokens ----------------------------------------------------------------------

    async def create_join_token(self, *, ttl: timedelta | None = None) -> tuple[str, JoinTokenInfo]:
        """A new join token (shown once; only its hash is kept) and its description."""
        token = JOIN_PREFIX + secrets.token_urlsafe(32)
        row = JoinToken(
            id=new_id("jt_"),
            token_hash=hash_token(token),
            prefix=token[: len(JOIN_PREFIX) + 6],
            created_at=utcnow(),
            expires_at=utcnow() + ttl if ttl is not None else None,
        )
        async with self._db.sessions.begin() as session:
            session.add(row)
        return token, _token_info(row)

    async def list_join_tokens(self) -> list[JoinTokenInfo]:
        async with self._db.sessions() as session:
            rows = await session.scalars(select(JoinToken).order_by(JoinToken.created_at))
            return [_token_info(row) for row in rows]

    async def revoke_join_token(self, ident: str) -> JoinTokenInfo:
        """Revoke by id or prefix; agents that joined with it keep their host tokens."""
        async with self._db.sessions.begin() as session:
            row = await session.get(JoinToken, ident)
            if row is None:
                row = await session.scalar(select(JoinToken).where(JoinToken.prefix == ident))
            if row is None:
                raise NotFound(f"no join token {ident!r}")
            row.revoked_at = row.revoked_at or utcnow()
            return _token_info(row)

    async def _check_join_token(self, session: AsyncSession, token: str) -> None:
        row = await session.scalar(
            select(JoinToken).where(JoinToken.token_hash == hash_token(token))
        )
        now = utcnow()
        if row is None or row.revoked_at is not None:
            raise Unauthenticated(
                "unknown or revoked join token (make one: hutch hosts token create)"
            )
        if row.expires_at is not None and row.expires_at <= now:
            raise Unauthenticated(
                "this join token has expired (make another: hutch hosts token create)"
            )

    # -- hosts ----------------------------------------------------------------------------

    async def join(self, join_token: str, report: HostReport) -> str:
        """Register (or re-register) the host and return its new host token.

        A host that was ``draining`` stays so; ``dead`` or new hosts become ``active``.
        Raises Unauthenticated for a bad join token, Unavailable-free InvalidInput for a
        report without an id or address.
        """
        if not report.id or not report.address.startswith(("http://", "https://")):
            raise InvalidInput("a host needs an id and an http(s) address", field="address")
        if self._box is None:
            raise Conflict("the control plane has no master key, so it cannot keep host tokens")
        token = HOST_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        async with self._db.sessions.begin() as session:
            await self._check_join_token(session, join_token)
            host = await session.get(Host, report.id, with_for_update=True)
            if host is None:
                host = Host(id=report.id, status="active", started_at=now)
                session.add(host)
            elif host.status != "draining":
                host.status = "active"
            host.started_at = now
            host.token_hash = hash_token(token)
            host.token_sealed = self._box.seal(token.encode(), context=_SEAL_CONTEXT)
            _apply(host, report, now)
        return token

    async def heartbeat(self, host_id: str, host_token: str, report: HostReport) -> str:
        """Record a heartbeat; returns the host's status. Unauthenticated if the token is
        not this host's (it was removed, or joined again elsewhere)."""
        now = utcnow()
        async with self._db.sessions.begin() as session:
            host = await session.get(Host, host_id, with_for_update=True)
            if (
                host is None
                or host.token_hash is None
                or not hmac.compare_digest(host.token_hash, hash_token(host_token))
            ):
                raise Unauthenticated(f"host {host_id!r} is not in the cluster; join it again")
            if host.status == "dead":
                host.status = "active"
            _apply(host, report, now)
            return host.status

    def host_token(self, host: Host) -> str | None:
        """The plaintext token the control plane presents to ``host``'s agent."""
        return self.token_of(host.token_sealed)

    def token_of(self, sealed: str | None) -> str | None:
        """A host's token from its sealed form (``hosts.token_sealed``); opened once."""
        if self._box is None or sealed is None:
            return None
        known = self._opened.get(sealed)
        if known is None:
            known = self._box.open(sealed, context=_SEAL_CONTEXT).decode()
            if len(self._opened) > 10_000:
                self._opened.clear()
            self._opened[sealed] = known
        return known

    async def set_status(self, host_id: str, status: str) -> None:
        """``draining`` (no new placements) or ``active`` again."""
        async with self._db.sessions.begin() as session:
            host = await session.get(Host, host_id, with_for_update=True)
            if host is None:
                raise NotFound(f"no host {host_id!r} (see hutch hosts ls)")
            host.status = status

    async def remove(self, host_id: str, *, force: bool = False) -> int:
        """Forget the host (its agent can no longer heartbeat). Refused while sandboxes
        live there unless ``force``: then they are ``error`` with the reason. Returns how
        many sandboxes were still there."""
        async with self._db.sessions.begin() as session:
            host = await session.get(Host, host_id, with_for_update=True)
            if host is None:
                raise NotFound(f"no host {host_id!r} (see hutch hosts ls)")
            live = list(
                await session.scalars(
                    select(SandboxRecord.id).where(
                        SandboxRecord.host_id == host_id,
                        SandboxRecord.status.not_in((S.DESTROYED, S.FAILED)),
                    )
                )
            )
            if live and not force:
                raise Conflict(
                    f"{len(live)} sandboxes still live on {host_id}; drain it and destroy "
                    "them first, or pass --force to mark them error"
                )
            if live:
                await session.execute(
                    update(SandboxRecord)
                    .where(SandboxRecord.id.in_(live), SandboxRecord.status.in_(_OCCUPYING))
                    .values(status=S.ERROR, reason=f"{HOST_LOST_PREFIX}{host_id} was removed")
                )
            await session.execute(delete(PlacementHold).where(PlacementHold.host_id == host_id))
            await session.delete(host)
            return len(live)

    async def reap(self) -> list[str]:
        """Mark hosts silent for ``dead_after`` as ``dead`` and their sandboxes ``error``
        with the reason; returns the hosts marked. Safe to run in every control process at
        once: each host row is taken with ``FOR UPDATE SKIP LOCKED`` and re-checked."""
        cutoff = utcnow() - self.dead_after
        marked: list[str] = []
        # Most often none is silent: one statement on the shared autocommit connections
        # says so (a transaction on the store's pool is four round trips on PostgreSQL,
        # every heartbeat interval in every control worker).
        silent_now = (
            select(Host.id)
            .where(Host.status != "dead", Host.heartbeat_at < cutoff)
            .where(Host.address.is_not(None))
            .limit(1)
        )
        if not await OneShot.of(self._db).rows(silent_now):
            return marked
        async with self._db.sessions.begin() as session:
            silent = list(
                await session.scalars(
                    select(Host)
                    .where(Host.status != "dead", Host.heartbeat_at < cutoff)
                    .where(Host.address.is_not(None))
                    .with_for_update(skip_locked=True)
                )
            )
            for host in silent:
                host.status = "dead"
                silent_s = (utcnow() - host.heartbeat_at).total_seconds()
                await session.execute(
                    update(SandboxRecord)
                    .where(SandboxRecord.host_id == host.id, SandboxRecord.status.in_(_OCCUPYING))
                    .values(status=S.ERROR, reason=host_lost_reason(host.id, silent_s))
                )
                marked.append(host.id)
        return marked


def _apply(host: Host, report: HostReport, now: datetime) -> None:
    host.address = report.address
    host.labels = dict(report.labels)
    host.runtimes = list(report.runtimes)
    host.rootfses = list(report.rootfses)
    host.templates = list(report.templates)
    host.free_mib = report.free_mib
    host.total_mib = report.total_mib
    host.capacity_mib = report.capacity_mib or report.total_mib
    host.cpus = report.cpus
    host.proxy_address = report.proxy or None
    host.heartbeat_at = now


def _token_info(row: JoinToken) -> JoinTokenInfo:
    return JoinTokenInfo(id=row.id, prefix=row.prefix, created_at=row.created_at,
                         expires_at=row.expires_at, revoked_at=row.revoked_at)  # fmt: skip
