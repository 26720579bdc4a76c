"""The tables of hutch. Schema changes go through an Alembic migration in ``migrations/``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AgentNonce",
    "ApiKey",
    "Base",
    "CreditEntry",
    "Deployment",
    "DiskAttachment",
    "DiskRecord",
    "EventRecord",
    "Host",
    "JoinToken",
    "NetworkMember",
    "NetworkRecord",
    "Payment",
    "PlacementHold",
    "Project",
    "SandboxAccessToken",
    "SandboxRecord",
    "TemplateLogLine",
    "TemplateRecord",
    "User",
    "UtcDateTime",
    "WebhookDelivery",
    "WebhookRecord",
    "utcnow",
]


_LIVE = "status NOT IN ('destroyed', 'failed')"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use hutch.store.models.utcnow()")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ApiKey(Base):
    """An API key. Only the SHA-256 of the key is kept; ``prefix`` lets people tell keys apart."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


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


class NetworkRecord(Base):
    """A private network. ``subnet`` is unique across the whole store, so members of
    different networks never share an address (and a future overlay can span hosts)."""

    __tablename__ = "networks"
    __table_args__ = (
        UniqueConstraint("user_id", "name", name="uq_networks_user_name"),
        UniqueConstraint("vni", name="uq_networks_vni"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    subnet: Mapped[str] = mapped_column(String(43), unique=True)
    vni: Mapped[int] = mapped_column(Integer)
    """Its VXLAN id when it spans hosts (2 … 2**24 - 1): drawn at random when the network
    is made, unique among the store's networks (the constraint decides a race), so no two
    networks ever share a segment between hosts."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class NetworkMember(Base):
    """A sandbox attached to a network: its address there and its interface inside."""

    __tablename__ = "network_members"
    __table_args__ = (
        UniqueConstraint("network_id", "ip", name="uq_network_members_ip"),
        UniqueConstraint("sandbox_id", "ifname", name="uq_network_members_ifname"),
        Index("ix_network_members_sandbox", "sandbox_id"),
    )

    network_id: Mapped[str] = mapped_column(
        ForeignKey("networks.id", ondelete="CASCADE"), primary_key=True
    )
    sandbox_id: Mapped[str] = mapped_column(
        ForeignKey("sandboxes.id", ondelete="CASCADE"), primary_key=True
    )
    ip: Mapped[str] = mapped_column(String(45))
    ifname: Mapped[str] = mapped_column(String(15))
    attached_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class DiskRecord(Base):
    """A registered S3 bucket. ``credentials`` is sealed (:mod:`hutch.core.sealing`) with
    the row's id as context. Deleting sets ``deleted_at``; the row stays."""

    __tablename__ = "disks"
    __table_args__ = (
        Index(
            "uq_disks_live_name",
            "user_id",
            "name",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    bucket: Mapped[str] = mapped_column(String(255))
    endpoint: Mapped[str] = mapped_column(String(2048))
    region: Mapped[str] = mapped_column(String(64))
    use_path_style: Mapped[bool] = mapped_column(Boolean)
    credentials: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    def __repr__(self) -> str:  # the sealed credentials stay out of logs too
        return f"DiskRecord(id={self.id!r}, name={self.name!r}, bucket={self.bucket!r})"


class DiskAttachment(Base):
    """A disk mounted (or being mounted) at ``mount_path`` in a sandbox."""

    __tablename__ = "disk_attachments"
    __table_args__ = (
        UniqueConstraint("sandbox_id", "mount_path", name="uq_disk_attachments_path"),
        Index("ix_disk_attachments_disk", "disk_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    sandbox_id: Mapped[str] = mapped_column(ForeignKey("sandboxes.id", ondelete="CASCADE"))
    disk_id: Mapped[str] = mapped_column(ForeignKey("disks.id", ondelete="CASCADE"))
    mount_path: Mapped[str] = mapped_column(String(4096))
    sub_path: Mapped[str] = mapped_column(String(4096))
    mount_status: Mapped[str] = mapped_column(String(16))
    mount_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class AgentNonce(Base):
    """A nonce a wallet signed a request to /agent with; the key makes it single-use."""

    __tablename__ = "agent_nonces"
    __table_args__ = (Index("ix_agent_nonces_used_at", "used_at"),)

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    wallet: Mapped[str] = mapped_column(String(42))
    used_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Project(Base):
    """A deployed project of a wallet (``/agent``). ``unique_name`` is its host name under
    the apps domain, unique among projects not deleted; a deleted row stays, for the ledger."""

    __tablename__ = "projects"
    __table_args__ = (
        Index(
            "uq_projects_live_name",
            "unique_name",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index("ix_projects_wallet", "wallet"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    wallet: Mapped[str] = mapped_column(String(42))
    """The deployer, lower case."""
    unique_name: Mapped[str] = mapped_column(String(32))
    display_name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    sandbox_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    """The sandbox serving the project now (None until a deployment is ready)."""
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    url: Mapped[str | None] = mapped_column(String(512), nullable=True)
    paid_until: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class Deployment(Base):
    """One build of a project: queued, building, deploying, then ready or failed."""

    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_project", "project_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    sandbox_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    plan: Mapped[str | None] = mapped_column(Text, nullable=True)
    """What build-ai recognised, and the commands it ran."""
    months: Mapped[int] = mapped_column(Integer)
    credits: Mapped[int] = mapped_column(Integer)
    """What the deployment was charged."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class Payment(Base):
    """An on-chain transfer that paid for credits. The hash is the key: a transaction pays
    once, whichever wallet or chain it is presented with."""

    __tablename__ = "payments"

    tx_hash: Mapped[str] = mapped_column(String(66), primary_key=True)
    chain: Mapped[str] = mapped_column(String(16))
    token: Mapped[str] = mapped_column(String(16))
    wallet: Mapped[str] = mapped_column(String(42))
    amount_raw: Mapped[str] = mapped_column(String(80))
    """The token's smallest units, as a decimal string (uint256 outgrows every integer type)."""
    block_number: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class CreditEntry(Base):
    """One line of a wallet's credit ledger ($1 = 100 credits). Lines are only appended:
    a payment adds, a deployment's charge takes away, a failed deployment's refund gives
    back. ``seq`` numbers a wallet's lines without gaps; its uniqueness is what stops two
    racing charges from both spending the same balance."""

    __tablename__ = "credit_entries"
    __table_args__ = (
        UniqueConstraint("wallet", "seq", name="uq_credit_entries_wallet_seq"),
        UniqueConstraint("deployment_id", "kind", name="uq_credit_entries_deployment_kind"),
        UniqueConstraint("payment_tx", name="uq_credit_entries_payment"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    wallet: Mapped[str] = mapped_column(String(42))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # payment | charge | refund
    amount: Mapped[int] = mapped_column(Integer)
    balance_after: Mapped[int] = mapped_column(Integer)
    payment_tx: Mapped[str | None] = mapped_column(ForeignKey("payments.tx_hash"), nullable=True)
    deployment_id: Mapped[str | None] = mapped_column(ForeignKey("deployments.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class TemplateRecord(Base):
    """A user's template: one version of one name, built from a Dockerfile (or imported).

    A name used again is a new row with the next ``version``; creates use the newest
    ``ready`` one. Rows are kept after delete (``deleted_at``) so sandboxes made from them
    keep their image. ``layers`` are the layer store's keys, bottom first, above ``root``
    (a catalog image name, or empty when the bottom layer is a whole root filesystem).
    """

    __tablename__ = "templates"
    __table_args__ = (
        UniqueConstraint("user_id", "name", "version", name="uq_templates_user_name_version"),
        Index("ix_templates_user_name", "user_id", "name"),
        Index("ix_templates_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    base: Mapped[str] = mapped_column(String(256), default="")
    """What the Dockerfile's FROM names (a catalog image, a template, an OCI reference)."""
    dockerfile: Mapped[str] = mapped_column(Text, default="")
    root: Mapped[str] = mapped_column(String(512), default="")
    """The catalog image under the layers ('' when the bottom layer is a whole rootfs)."""
    layers: Mapped[list[str]] = mapped_column(JSON, default=list)
    start_cmd: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    """CMD and ENTRYPOINT combined: the argv run when a sandbox starts from it."""
    env: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    workdir: Mapped[str] = mapped_column(String(4096), default="/")
    run_as: Mapped[str] = mapped_column(String(256), default="")
    """The Dockerfile's USER: who exec and the start command run as ('' is root)."""
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    exposed: Mapped[list[str]] = mapped_column(JSON, default=list)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    steps_total: Mapped[int] = mapped_column(Integer, default=0)
    steps_cached: Mapped[int] = mapped_column(Integer, default=0)
    build_sandbox: Mapped[str | None] = mapped_column(String(40), nullable=True)
    """The build's sandbox while a step runs in one (destroyed at a restart if left)."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    built_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class TemplateLogLine(Base):
    """One line of a template build's log (``attempt`` counts from 1)."""

    __tablename__ = "template_log_lines"
    __table_args__ = (Index("ix_template_log_lines_template", "template_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    template_id: Mapped[str] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    ts: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    level: Mapped[str] = mapped_column(String(8), default="info")
    line: Mapped[str] = mapped_column(Text, default="")


class EventRecord(Base):
    """One lifecycle change, appended in the same transaction as the change itself.

    ``seq`` orders events and is the cursor of ``GET /v1/events?since=``; ``id`` is the
    public id a webhook delivery names. ``user_id`` is whose the subject is.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_user_seq", "user_id", "seq"),
        Index("ix_events_created", "created_at"),
    )

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    """64 bits on PostgreSQL (a 32-bit serial would run out); SQLite's rowid is 64 already."""
    id: Mapped[str] = mapped_column(String(40), unique=True)
    user_id: Mapped[str] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class WebhookRecord(Base):
    """A user's webhook: where events of the listed types are POSTed, signed with the secret
    (kept sealed under the master key)."""

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_user", "user_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    secret_sealed: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One event for one webhook: pending until delivered (2xx) or out of attempts."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook", "webhook_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)
    """The exact body POSTed (what the signature covers)."""
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
