"""Placement reads what each sampled host holds: an index on the sandboxes' host and status
(rows are kept after destroy, so without it every placement read the whole history).

Revision ID: 0020
Revises: 0019
"""

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sandboxes_host_status", "sandboxes", ["host_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_sandboxes_host_status", table_name="sandboxes")
