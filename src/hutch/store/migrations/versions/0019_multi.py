"""One public entry for a cluster's previews: where each host's proxy is, which sandbox
each preview token belongs to, and ingress tokens looked up by an index.

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

from hutch.store.models import UtcDateTime

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as table:
        table.add_column(sa.Column("proxy_address", sa.String(255), nullable=True))
    op.create_index("ix_sandboxes_ingress_token", "sandboxes", ["ingress_token"])
    op.create_table(
        "preview_routes",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("sandbox_id", sa.String(40),
                  sa.ForeignKey("sandboxes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
    )  # fmt: skip
    op.create_index("ix_preview_routes_sandbox_id", "preview_routes", ["sandbox_id"])


def downgrade() -> None:
    op.drop_index("ix_preview_routes_sandbox_id", "preview_routes")
    op.drop_table("preview_routes")
    op.drop_index("ix_sandboxes_ingress_token", "sandboxes")
    with op.batch_alter_table("hosts") as table:
        table.drop_column("proxy_address")
