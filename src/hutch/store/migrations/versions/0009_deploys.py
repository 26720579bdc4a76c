"""Deployed projects, their deployments, on-chain payments and the credit ledger.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from hutch.store.models import UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("wallet", sa.String(42), nullable=False),
        sa.Column("unique_name", sa.String(32), nullable=False),
        sa.Column("display_name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("sandbox_id", sa.String(40), nullable=True),
        sa.Column("port", sa.Integer, nullable=True),
        sa.Column("url", sa.String(512), nullable=True),
        sa.Column("paid_until", UtcDateTime, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("deleted_at", UtcDateTime, nullable=True),
    )
    op.create_index(
        "uq_projects_live_name",
        "projects",
        ["unique_name"],
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index("ix_projects_wallet", "projects", ["wallet"])
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "project_id",
            sa.String(36),
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("sandbox_id", sa.String(40), nullable=True),
        sa.Column("plan", sa.Text, nullable=True),
        sa.Column("months", sa.Integer, nullable=False),
        sa.Column("credits", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("finished_at", UtcDateTime, nullable=True),
    )
    op.create_index("ix_deployments_project", "deployments", ["project_id"])
    op.create_table(
        "payments",
        sa.Column("tx_hash", sa.String(66), primary_key=True),
        sa.Column("chain", sa.String(16), nullable=False),
        sa.Column("token", sa.String(16), nullable=False),
        sa.Column("wallet", sa.String(42), nullable=False),
        sa.Column("amount_raw", sa.String(80), nullable=False),
        sa.Column("block_number", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "credit_entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("wallet", sa.String(42), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.Integer, nullable=False),
        sa.Column("balance_after", sa.Integer, nullable=False),
        sa.Column("payment_tx", sa.String(66), sa.ForeignKey("payments.tx_hash"), nullable=True),
        sa.Column("deployment_id", sa.String(36), sa.ForeignKey("deployments.id"), nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.UniqueConstraint("wallet", "seq", name="uq_credit_entries_wallet_seq"),
        sa.UniqueConstraint("deployment_id", "kind", name="uq_credit_entries_deployment_kind"),
        sa.UniqueConstraint("payment_tx", name="uq_credit_entries_payment"),
    )


def downgrade() -> None:
    op.drop_table("credit_entries")
    op.drop_table("payments")
    op.drop_index("ix_deployments_project", "deployments")
    op.drop_table("deployments")
    op.drop_index("ix_projects_wallet", "projects")
    op.drop_index("uq_projects_live_name", "projects")
    op.drop_table("projects")
