"""The cluster's tables: hosts, join tokens and placement holds."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hutch.store.models.base import Base, UtcDateTime, utcnow

__all__ = ["Host", "JoinToken", "PlacementHold"]


class Host(Base):
    """A machine that runs sandboxes, as last reported by its host agent's heartbeat."""

    __tablename__ = "hosts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    free_mib: Mapped[int] = mapped_column(Integer, default=0)
    total_mib: Mapped[int] = mapped_column(Integer, default=0)
    rootfses: Mapped[list[str]] = mapped_column(JSON, default=list)
    runtimes: Mapped[list[str]] = mapped_column(JSON, default=list)
    """The runtimes that can start sandboxes on this host (``runc``, ``gvisor``)."""
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    address: Mapped[str | None] = mapped_column(String(255), nullable=True)
    """Where the control plane reaches a cluster agent (``http://10.0.0.2:8702``); none
    for the one-machine agent, which serves on its home's unix socket."""
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    """Placement labels (``HUTCH_HOST_LABELS``) a create's ``node_selector`` must match."""
    templates: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Ids of the templates whose image this host holds."""
    capacity_mib: Mapped[int] = mapped_column(Integer, default=0)
    """Memory offered to sandboxes (``HUTCH_HOST_CAPACITY_MIB``, or the machine's total)."""
    cpus: Mapped[int] = mapped_column(Integer, default=0)
    token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """SHA-256 of the host token the agent got when it joined (it sends it with heartbeats)."""
    token_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The same token sealed with the master key: the control plane sends it to the agent."""
    proxy_address: Mapped[str | None] = mapped_column(String(255), nullable=True)
    """``host:port`` of a cluster agent's preview proxy, where the public entry
    (:mod:`hutch.cluster.entry`) passes its sandboxes' preview and ingress requests."""


class JoinToken(Base):
    """A token an operator made for agents to join the cluster with; only its hash is kept."""

    __tablename__ = "join_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class PlacementHold(Base):
    """Room a placement took on a host for a create still under way, so placements made
    meanwhile see it; removed when the create ends, ignored after ``expires_at``."""

    __tablename__ = "placement_holds"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    host_id: Mapped[str] = mapped_column(String(64), index=True)
    mem_mib: Mapped[int] = mapped_column(Integer)
    vcpu: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
