"""Template builds' sandboxes are the platform's: a sandbox's ``build_of``.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandboxes") as table:
        table.add_column(sa.Column("build_of", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sandboxes") as table:
        table.drop_column("build_of")
