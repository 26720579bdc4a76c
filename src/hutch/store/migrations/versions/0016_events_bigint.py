"""events.seq is 64 bits on PostgreSQL (a 32-bit serial runs out after 2^31 events; pruning
old ones does not reset it). SQLite's INTEGER PRIMARY KEY is a 64-bit rowid already.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.alter_column("events", "seq", type_=sa.BigInteger(), existing_type=sa.Integer())
    op.execute("ALTER SEQUENCE IF EXISTS events_seq_seq AS bigint")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER SEQUENCE IF EXISTS events_seq_seq AS integer")
    op.alter_column("events", "seq", type_=sa.Integer(), existing_type=sa.BigInteger())
