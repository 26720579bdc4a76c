"""The deploy dialect (``/agent``): nonces, projects, deployments, payments, credits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from hutch.store.models.base import Base, UtcDateTime, utcnow

__all__ = ["AgentNonce", "CreditEntry", "Deployment", "Payment", "Project"]


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
