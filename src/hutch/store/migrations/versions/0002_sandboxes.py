"""Everything a sandbox record needs to be run, listed and recovered.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from hutch.store.models import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_LIVE = "status NOT IN ('destroyed', 'failed')"


def upgrade() -> None:
    with op.batch_alter_table("sandboxes") as table:
        table.add_column(sa.Column("shape", sa.String(64), nullable=False, server_default=""))
        table.add_column(sa.Column("rootfs", sa.String(64), nullable=False, server_default=""))
        table.add_column(sa.Column("vcpu", sa.Integer, nullable=False, server_default="1"))
        table.add_column(sa.Column("mem_mib", sa.Integer, nullable=False, server_default="0"))
        table.add_column(sa.Column("disk_mib", sa.Integer, nullable=False, server_default="0"))
        table.add_column(sa.Column("ip", sa.String(45), nullable=True))
        table.add_column(sa.Column("spawn_ms", sa.Integer, nullable=True))
        table.add_column(sa.Column("envs", sa.JSON, nullable=False, server_default="{}"))
        table.add_column(sa.Column("egress", sa.JSON, nullable=False, server_default="[]"))
        table.add_column(
            sa.Column("ingress_enabled", sa.Boolean, nullable=False, server_default=sa.false())
        )
        table.add_column(sa.Column("auto_pause_after_seconds", sa.Integer, nullable=True))
        table.add_column(sa.Column("created_by", sa.String(40), nullable=True))
        table.add_column(sa.Column("reason", sa.Text, nullable=True))
        table.add_column(sa.Column("running_at", UtcDateTime, nullable=True))
        table.add_column(sa.Column("paused_at", UtcDateTime, nullable=True))
        table.add_column(sa.Column("last_resumed_at", UtcDateTime, nullable=True))
        table.add_column(sa.Column("destroyed_at", UtcDateTime, nullable=True))
        table.add_column(sa.Column("last_activity_at", UtcDateTime, nullable=True))
    op.create_index(
        "uq_sandboxes_live_name",
        "sandboxes",
        ["user_id", "name"],
        unique=True,
        sqlite_where=sa.text(_LIVE),
        postgresql_where=sa.text(_LIVE),
    )
    op.create_index("ix_sandboxes_ip", "sandboxes", ["ip"])


def downgrade() -> None:
    op.drop_index("ix_sandboxes_ip", "sandboxes")
    op.drop_index("uq_sandboxes_live_name", "sandboxes")
    with op.batch_alter_table("sandboxes") as table:
        for column in (
            "shape", "rootfs", "vcpu", "mem_mib", "disk_mib", "ip", "spawn_ms", "envs",
            "egress", "ingress_enabled", "auto_pause_after_seconds", "created_by", "reason",
            "running_at", "paused_at", "last_resumed_at", "destroyed_at", "last_activity_at",
        ):  # fmt: skip
            table.drop_column(column)
