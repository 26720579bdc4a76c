"""Nonces of wallet-signed requests to /agent, each usable once.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from hutch.store.models import UtcDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_nonces",
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("wallet", sa.String(42), nullable=False),
        sa.Column("used_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_agent_nonces_used_at", "agent_nonces", ["used_at"])


def downgrade() -> None:
    op.drop_index("ix_agent_nonces_used_at", "agent_nonces")
    op.drop_table("agent_nonces")
