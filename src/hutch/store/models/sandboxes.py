"""Sandboxes, their access tokens and their cluster preview routes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from hutch.store.models.base import Base, UtcDateTime, utcnow

__all__ = ["PreviewRoute", "SandboxAccessToken", "SandboxRecord"]


_LIVE = "status NOT IN ('destroyed', 'failed')"


class SandboxRecord(Base):
    """A sandbox as the control plane knows it. Rows are kept after destroy, for history.

    ``envs`` holds the values too (they are injected into every exec); the API lists only
    the keys.
    """

    __tablename__ = "sandboxes"
    __table_args__ = (
        Index("ix_sandboxes_user_status", "user_id", "status"),
        Index("ix_sandboxes_host_status", "host_id", "status"),  # placement's sums
        Index(
            "uq_sandboxes_live_name",
            "user_id",
            "name",
            unique=True,
            sqlite_where=text(_LIVE),
            postgresql_where=text(_LIVE),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    host_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    shape: Mapped[str] = mapped_column(String(64), default="")
    rootfs: Mapped[str] = mapped_column(String(64), default="")
    vcpu: Mapped[int] = mapped_column(Integer, default=1)
    mem_mib: Mapped[int] = mapped_column(Integer, default=0)
    disk_mib: Mapped[int] = mapped_column(Integer, default=0)
    ip: Mapped[str | None] = mapped_column(String(45), index=True, nullable=True)
    spawn_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    envs: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    egress: Mapped[list[str]] = mapped_column(JSON, default=list)
    ingress_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_pause_after_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    running_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    paused_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_resumed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    destroyed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_activity_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    """When the sandbox destroys itself (the Nullspace dialect's ``timeout_ms``)."""
    ingress_token: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    """The secret part of the sandbox's ingress host names, made when ingress is enabled."""
    ssh_pubkeys: Mapped[list[str]] = mapped_column(JSON, default=list)
    """OpenSSH public keys, normalised and deduplicated; root's ``authorized_keys``."""
    forked_from: Mapped[str | None] = mapped_column(String(40), nullable=True)
    region: Mapped[str] = mapped_column(String(64), default="")
    bandwidth_quota_bytes: Mapped[int] = mapped_column(BigInteger, default=-1)
    """Outbound internet bytes allowed in all (recharges add to it); -1 is unmetered."""
    bandwidth_used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    """Outbound internet bytes sent, as last read from the kernel's counters."""
    bandwidth_ingress_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    """Inbound internet bytes received (counted, never enforced)."""
    runtime: Mapped[str] = mapped_column(String(16), default="runc")
    """What runs it: ``runc`` or ``gvisor``."""
    hibernated: Mapped[bool] = mapped_column(Boolean, default=False)
    """Paused with its memory written to a snapshot (gvisor): nothing of it runs."""
    auto_resume: Mapped[bool] = mapped_column(Boolean, default=False)
    """Resume it when an exec, a file or a process request finds it paused."""
    fork_mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """For a fork: ``processes`` (it went on from the source's snapshot) or ``files`` (a
    fresh start on a copy of the source's disk)."""
    build_of: Mapped[str | None] = mapped_column(String(40), nullable=True)
    """For a template build's sandbox, the template it builds. Such a sandbox is the
    platform's, run on its owner's behalf: it is not in the owner's list, cannot be read or
    changed through the API, does not count toward ``HUTCH_MAX_RUNNING_PER_USER``, and is
    destroyed at the next start if a crash left it."""


class SandboxAccessToken(Base):
    """A sandbox's delegated credential (``skp_sb_…``): only its SHA-256 is kept. One row per
    sandbox; disabling keeps the row (``enabled`` false) so a later create starts afresh."""

    __tablename__ = "sandbox_access_tokens"

    sandbox_id: Mapped[str] = mapped_column(
        ForeignKey("sandboxes.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    hint: Mapped[str | None] = mapped_column(String(32), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    rotated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class PreviewRoute(Base):
    """A cluster's preview URL: which sandbox its token (only its SHA-256 kept) belongs
    to, so that any control plane's public entry finds the host serving it."""

    __tablename__ = "preview_routes"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    sandbox_id: Mapped[str] = mapped_column(
        ForeignKey("sandboxes.id", ondelete="CASCADE"), index=True
    )
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
