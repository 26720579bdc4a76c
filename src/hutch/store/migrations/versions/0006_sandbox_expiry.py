"""When a sandbox is destroyed by itself (the Nullspace dialect's ``timeout_ms``).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from hutch.store.models import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandboxes") as table:
        table.add_column(sa.Column("expires_at", UtcDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sandboxes") as table:
        table.drop_column("expires_at")
