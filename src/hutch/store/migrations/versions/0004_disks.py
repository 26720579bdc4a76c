"""Disks: registered S3 buckets, their credentials sealed.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from hutch.store.models import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_LIVE = "deleted_at IS NULL"


def upgrade() -> None:
    op.create_table(
        "disks",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("bucket", sa.String(255), nullable=False),
        sa.Column("endpoint", sa.String(2048), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("use_path_style", sa.Boolean, nullable=False),
        sa.Column("credentials", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("deleted_at", UtcDateTime, nullable=True),
    )
    op.create_index(
        "uq_disks_live_name",
        "disks",
        ["user_id", "name"],
        unique=True,
        sqlite_where=sa.text(_LIVE),
        postgresql_where=sa.text(_LIVE),
    )


def downgrade() -> None:
    op.drop_index("uq_disks_live_name", "disks")
    op.drop_table("disks")
