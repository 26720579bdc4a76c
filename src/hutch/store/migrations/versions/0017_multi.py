"""Many hosts: where each agent is reached, its labels, templates and capacity, its token;
join tokens; placement holds.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

from hutch.store.models import UtcDateTime

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as table:
        table.add_column(sa.Column("address", sa.String(255), nullable=True))
        table.add_column(sa.Column("labels", sa.JSON, nullable=False, server_default="{}"))
        table.add_column(sa.Column("templates", sa.JSON, nullable=False, server_default="[]"))
        table.add_column(sa.Column("capacity_mib", sa.Integer, nullable=False, server_default="0"))
        table.add_column(sa.Column("cpus", sa.Integer, nullable=False, server_default="0"))
        table.add_column(sa.Column("token_hash", sa.String(64), nullable=True))
        table.add_column(sa.Column("token_sealed", sa.Text, nullable=True))
    op.create_table(
        "join_tokens",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=True),
        sa.Column("revoked_at", UtcDateTime, nullable=True),
    )
    op.create_table(
        "placement_holds",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("host_id", sa.String(64), nullable=False, index=True),
        sa.Column("mem_mib", sa.Integer, nullable=False),
        sa.Column("vcpu", sa.Integer, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("placement_holds")
    op.drop_table("join_tokens")
    with op.batch_alter_table("hosts") as table:
        for column in ("token_sealed", "token_hash", "cpus", "capacity_mib", "templates",
                       "labels", "address"):  # fmt: skip
            table.drop_column(column)
