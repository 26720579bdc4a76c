"""Private networks and their members.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from hutch.store.models import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "networks",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("subnet", sa.String(43), nullable=False, unique=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.UniqueConstraint("user_id", "name", name="uq_networks_user_name"),
    )
    op.create_table(
        "network_members",
        sa.Column(
            "network_id",
            sa.String(40),
            sa.ForeignKey("networks.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "sandbox_id",
            sa.String(40),
            sa.ForeignKey("sandboxes.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("ip", sa.String(45), nullable=False),
        sa.Column("ifname", sa.String(15), nullable=False),
        sa.Column("attached_at", UtcDateTime, nullable=False),
        sa.UniqueConstraint("network_id", "ip", name="uq_network_members_ip"),
        sa.UniqueConstraint("sandbox_id", "ifname", name="uq_network_members_ifname"),
    )
    op.create_index("ix_network_members_sandbox", "network_members", ["sandbox_id"])


def downgrade() -> None:
    op.drop_index("ix_network_members_sandbox", "network_members")
    op.drop_table("network_members")
    op.drop_table("networks")
