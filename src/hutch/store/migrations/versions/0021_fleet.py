"""Placement in one round trip on PostgreSQL: ``hutch_place``, a function that locks the
sampled hosts' rows, reads what they hold in a fresh snapshot, picks the least loaded one
that fits and writes its placement hold (:mod:`hutch.cluster.placement`). SQLite has no
such functions: placement there stays three statements in one transaction.

Revision ID: 0021
Revises: 0020
"""

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# VOLATILE (the default): each statement inside takes a fresh snapshot (READ COMMITTED),
# so the sums are read after the locks are held and see every hold committed by the
# placement that held them before (one statement could not: its snapshot would predate
# the lock). Locks are taken in id order (no deadlock) and kept until the calling
# statement's transaction ends, with the hold written.
PLACE = """
CREATE OR REPLACE FUNCTION hutch_place(
    p_ids text[], p_capacity integer[], p_cpus integer[], p_holds boolean[],
    p_mem integer, p_vcpu integer, p_overcommit double precision, p_live text[],
    p_fresh timestamptz, p_now timestamptz, p_wait boolean,
    p_hold_id text, p_hold_until timestamptz
) RETURNS TABLE (o_host text, o_free integer, o_mem bigint, o_vcpu bigint, o_chosen boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    locked text[];
    frees integer[];
BEGIN
    IF p_wait THEN
        SELECT coalesce(array_agg(l.id ORDER BY l.id), '{}'),
               coalesce(array_agg(l.free_mib ORDER BY l.id), '{}')
          INTO locked, frees
          FROM (SELECT h.id, h.free_mib FROM hosts h
                 WHERE h.id = ANY (p_ids) AND h.status = 'active' AND h.heartbeat_at >= p_fresh
                 ORDER BY h.id FOR UPDATE) l;
    ELSE
        SELECT coalesce(array_agg(l.id ORDER BY l.id), '{}'),
               coalesce(array_agg(l.free_mib ORDER BY l.id), '{}')
          INTO locked, frees
          FROM (SELECT h.id, h.free_mib FROM hosts h
                 WHERE h.id = ANY (p_ids) AND h.status = 'active' AND h.heartbeat_at >= p_fresh
                 ORDER BY h.id FOR UPDATE SKIP LOCKED) l;
    END IF;
    RETURN QUERY
    WITH c AS (
        SELECT * FROM unnest(p_ids, p_capacity, p_cpus, p_holds) AS c (id, capacity, cpus, holds)
    ), f AS (
        SELECT * FROM unnest(locked, frees) AS f (id, free)
    ), s AS (
        SELECT sb.host_id AS id, sum(sb.mem_mib) AS mem, sum(sb.vcpu) AS vcpu FROM sandboxes sb
         WHERE sb.host_id = ANY (locked) AND sb.status = ANY (p_live) GROUP BY sb.host_id
    ), p AS (
        SELECT ph.host_id AS id, sum(ph.mem_mib) AS mem, sum(ph.vcpu) AS vcpu
          FROM placement_holds ph
         WHERE ph.host_id = ANY (locked) AND ph.expires_at > p_now GROUP BY ph.host_id
    ), u AS (
        SELECT c.id, c.capacity, c.cpus, c.holds, f.free,
               coalesce(s.mem, 0) + coalesce(p.mem, 0) AS mem,
               coalesce(s.vcpu, 0) + coalesce(p.vcpu, 0) AS vcpu
          FROM f JOIN c ON c.id = f.id LEFT JOIN s ON s.id = f.id LEFT JOIN p ON p.id = f.id
    ), best AS (
        SELECT u.id FROM u
         WHERE p_mem <= least(u.free, u.capacity - u.mem)
           AND (u.cpus = 0 OR p_vcpu <= u.cpus * p_overcommit - u.vcpu)
         ORDER BY (u.mem + p_mem)::double precision / greatest(u.capacity, 1)
                  + CASE WHEN u.holds THEN 0 ELSE 1 END, u.id
         LIMIT 1
    ), ins AS (
        INSERT INTO placement_holds (id, host_id, mem_mib, vcpu, expires_at)
        SELECT p_hold_id, best.id, p_mem, p_vcpu, p_hold_until FROM best
        RETURNING host_id
    )
    SELECT u.id::text, u.free, u.mem::bigint, u.vcpu::bigint,
           EXISTS (SELECT 1 FROM ins WHERE ins.host_id = u.id)
      FROM u ORDER BY u.id;
END
$$
"""

DROP = (
    "DROP FUNCTION IF EXISTS hutch_place(text[], integer[], integer[], boolean[], integer, "
    "integer, double precision, text[], timestamptz, timestamptz, boolean, text, timestamptz)"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PLACE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DROP)
