"""The gvisor runtime, hibernate and fork: a sandbox's runtime, whether its pause holds a
snapshot of its memory, and how a fork was made; the runtimes a host offers.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandboxes") as table:
        table.add_column(sa.Column("runtime", sa.String(16), nullable=False, server_default="runc"))
        table.add_column(
            sa.Column("hibernated", sa.Boolean, nullable=False, server_default=sa.false())
        )
        table.add_column(sa.Column("fork_mode", sa.String(16), nullable=True))
    with op.batch_alter_table("hosts") as table:
        table.add_column(sa.Column("runtimes", sa.JSON, nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as table:
        table.drop_column("runtimes")
    with op.batch_alter_table("sandboxes") as table:
        for column in ("fork_mode", "hibernated", "runtime"):
            table.drop_column(column)
