"""CreateOS parity and egress: a sandbox's ssh keys, fork source, region and bandwidth
ledger; per-sandbox access tokens.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from hutch.store.models import UtcDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandboxes") as table:
        table.add_column(sa.Column("ssh_pubkeys", sa.JSON, nullable=False, server_default="[]"))
        table.add_column(sa.Column("forked_from", sa.String(40), nullable=True))
        table.add_column(sa.Column("region", sa.String(64), nullable=False, server_default=""))
        table.add_column(
            sa.Column("bandwidth_quota_bytes", sa.BigInteger, nullable=False, server_default="-1")
        )
        table.add_column(
            sa.Column("bandwidth_used_bytes", sa.BigInteger, nullable=False, server_default="0")
        )
        table.add_column(
            sa.Column("bandwidth_ingress_bytes", sa.BigInteger, nullable=False, server_default="0")
        )
    op.create_table(
        "sandbox_access_tokens",
        sa.Column(
            "sandbox_id",
            sa.String(40),
            sa.ForeignKey("sandboxes.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("token_hash", sa.String(64), nullable=True, unique=True),
        sa.Column("hint", sa.String(32), nullable=True),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", UtcDateTime, nullable=True),
        sa.Column("rotated_at", UtcDateTime, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("sandbox_access_tokens")
    with op.batch_alter_table("sandboxes") as table:
        for column in (
            "bandwidth_ingress_bytes",
            "bandwidth_used_bytes",
            "bandwidth_quota_bytes",
            "region",
            "forked_from",
            "ssh_pubkeys",
        ):
            table.drop_column(column)
