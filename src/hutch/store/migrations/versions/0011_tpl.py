"""Templates: users' own images built from a Dockerfile, and their build logs.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

from hutch.store.models import UtcDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "templates",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("base", sa.String(256), nullable=False),
        sa.Column("dockerfile", sa.Text, nullable=False),
        sa.Column("root", sa.String(512), nullable=False),
        sa.Column("layers", sa.JSON, nullable=False),
        sa.Column("start_cmd", sa.JSON, nullable=True),
        sa.Column("env", sa.JSON, nullable=False),
        sa.Column("workdir", sa.String(4096), nullable=False),
        sa.Column("run_as", sa.String(256), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("exposed", sa.JSON, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("steps_total", sa.Integer, nullable=False),
        sa.Column("steps_cached", sa.Integer, nullable=False),
        sa.Column("build_sandbox", sa.String(40), nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("started_at", UtcDateTime, nullable=True),
        sa.Column("built_at", UtcDateTime, nullable=True),
        sa.Column("deleted_at", UtcDateTime, nullable=True),
        sa.UniqueConstraint("user_id", "name", "version", name="uq_templates_user_name_version"),
    )
    op.create_index("ix_templates_user_name", "templates", ["user_id", "name"])
    op.create_index("ix_templates_status", "templates", ["status"])
    op.create_table(
        "template_log_lines",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "template_id",
            sa.String(40),
            sa.ForeignKey("templates.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("ts", UtcDateTime, nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("line", sa.Text, nullable=False),
    )
    op.create_index("ix_template_log_lines_template", "template_log_lines", ["template_id", "id"])


def downgrade() -> None:
    op.drop_table("template_log_lines")
    op.drop_table("templates")
