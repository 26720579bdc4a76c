"""Disks attached to sandboxes.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from hutch.store.models import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "disk_attachments",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "sandbox_id",
            sa.String(40),
            sa.ForeignKey("sandboxes.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "disk_id", sa.String(40), sa.ForeignKey("disks.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("mount_path", sa.String(4096), nullable=False),
        sa.Column("sub_path", sa.String(4096), nullable=False),
        sa.Column("mount_status", sa.String(16), nullable=False),
        sa.Column("mount_error", sa.Text, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.UniqueConstraint("sandbox_id", "mount_path", name="uq_disk_attachments_path"),
    )
    op.create_index("ix_disk_attachments_disk", "disk_attachments", ["disk_id"])


def downgrade() -> None:
    op.drop_index("ix_disk_attachments_disk", "disk_attachments")
    op.drop_table("disk_attachments")
