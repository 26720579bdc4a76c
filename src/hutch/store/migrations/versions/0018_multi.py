"""Networks get their VXLAN id from the store: ``networks.vni``, unique.

Existing networks keep the id hutch derived from theirs before (what their VXLAN devices
were made with), except where two clashed: the later one gets the next free id.

Revision ID: 0018
Revises: 0017
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_LAST = (1 << 24) - 1


def _derived(network_id: str) -> int:
    """The id hutch 0017 derived from a network's id (24 bits, 0 and 1 left out)."""
    return int(hashlib.sha256(network_id.encode()).hexdigest()[:6], 16) % ((1 << 24) - 2) + 2


def upgrade() -> None:
    with op.batch_alter_table("networks") as table:
        table.add_column(sa.Column("vni", sa.Integer, nullable=True))
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT id FROM networks ORDER BY created_at, id"))
    taken: set[int] = set()
    for (network_id,) in rows.fetchall():
        vni = _derived(network_id)
        while vni in taken:
            vni = vni + 1 if vni < _LAST else 2
        taken.add(vni)
        connection.execute(sa.text("UPDATE networks SET vni = :vni WHERE id = :id"),
                           {"vni": vni, "id": network_id})  # fmt: skip
    with op.batch_alter_table("networks") as table:
        table.alter_column("vni", existing_type=sa.Integer, nullable=False)
        table.create_unique_constraint("uq_networks_vni", ["vni"])


def downgrade() -> None:
    with op.batch_alter_table("networks") as table:
        table.drop_constraint("uq_networks_vni", type_="unique")
        table.drop_column("vni")
