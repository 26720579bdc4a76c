"""The store and the identity service on real SQLite and a real PostgreSQL 15."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select, text

from hutch.core.errors import InvalidInput, NotFound, Unauthenticated
from hutch.core.hosts import HostService
from hutch.core.identity import IdentityService, hash_key
from hutch.core.ids import new_id
from hutch.store.db import Database
from hutch.store.migrate import MIGRATIONS_DIR, _head, upgrade
from hutch.store.models import ApiKey, Base, Host, SandboxRecord, utcnow

pytestmark = pytest.mark.anyio


async def test_a_key_authenticates_its_user_and_only_its_hash_is_stored(db: Database) -> None:
    identity = IdentityService(db)
    issued = await identity.issue_key("alice")
    assert (
        issued.user_created and issued.key.startswith("hk_") and issued.user_id.startswith("usr_")
    )

    principal = await identity.authenticate(issued.key)
    assert (principal.user_id, principal.user_name, principal.is_admin) == (
        issued.user_id,
        "alice",
        False,
    )
    async with db.sessions() as session:
        stored = (await session.scalars(select(ApiKey))).one()
        dump = " ".join(
            str(v) for v in (await session.execute(text("SELECT * FROM api_keys"))).one()
        )
    assert stored.key_hash == hash_key(issued.key)
    assert issued.key not in dump


async def test_a_second_key_for_a_user_is_the_same_user(db: Database) -> None:
    identity = IdentityService(db)
    first = await identity.issue_key("bob")
    second = await identity.issue_key("bob")
    assert not second.user_created and second.user_id == first.user_id
    assert second.key != first.key
    assert (await identity.authenticate(second.key)).user_id == first.user_id


async def test_concurrent_first_keys_for_one_user_make_one_user(db: Database) -> None:
    identity = IdentityService(db)
    issued = await asyncio.gather(*(identity.issue_key("carol") for _ in range(5)))
    assert len({i.user_id for i in issued}) == 1
    assert len({i.key for i in issued}) == 5


@pytest.mark.parametrize("key", [None, "", "hk_nope", "x" * 5000])
async def test_unknown_keys_are_refused(db: Database, key: str | None) -> None:
    with pytest.raises(Unauthenticated):
        await IdentityService(db).authenticate(key)


async def test_revoked_keys_stop_working_and_revoke_is_idempotent(db: Database) -> None:
    identity = IdentityService(db)
    keep = await identity.issue_key("dave")
    drop = await identity.issue_key("dave")
    info = await identity.revoke(drop.key[:11])
    assert info.id == drop.key_id and info.revoked_at is not None
    again = await identity.revoke(drop.key_id)
    assert again.revoked_at == info.revoked_at
    with pytest.raises(Unauthenticated):
        await identity.authenticate(drop.key)
    assert (await identity.authenticate(keep.key)).user_name == "dave"


async def test_a_key_revoked_by_another_process_fails_on_the_next_request(
    db: Database, database_url: str
) -> None:
    # The server keeps who a key belongs to between requests; a revocation made elsewhere
    # (here a second engine, as `hutch keys revoke` is) must still count at once.
    server = IdentityService(db)
    issued = await server.issue_key("erin")
    for _ in range(3):
        assert (await server.authenticate(issued.key)).user_name == "erin"
    other = Database(database_url)
    try:
        await IdentityService(other).revoke(issued.key_id)
    finally:
        await other.dispose()
    with pytest.raises(Unauthenticated):
        await server.authenticate(issued.key)


async def test_the_change_token_moves_with_every_commit_from_anywhere(
    db: Database, database_url: str
) -> None:
    first = db.change_token()
    if not db.is_sqlite:
        assert first is None  # PostgreSQL gives no cheap signal: nothing is kept
        return
    assert first is not None and db.change_token() == first
    other = Database(database_url)
    try:
        await IdentityService(other).issue_key("frank")
    finally:
        await other.dispose()
    second = db.change_token()
    assert second is not None and second != first
    await IdentityService(db).issue_key("grace")
    assert db.change_token() not in (first, second)


async def test_revoke_of_nothing_or_of_many_is_refused(db: Database) -> None:
    identity = IdentityService(db)
    await identity.issue_key("erin")
    await identity.issue_key("erin")
    with pytest.raises(NotFound):
        await identity.revoke("key_NOPE")
    with pytest.raises(InvalidInput, match="matches 2 keys"):
        await identity.revoke("hk_")
    with pytest.raises(InvalidInput):
        await identity.revoke("")


@pytest.mark.parametrize("name", ["", "-lead", "has space", "a" * 65, "semi;colon", "ü"])
async def test_bad_user_names_are_refused(db: Database, name: str) -> None:
    with pytest.raises(InvalidInput):
        await IdentityService(db).issue_key(name)


async def test_admin_is_bootstrapped_once(db: Database) -> None:
    identity = IdentityService(db)
    first = await identity.bootstrap_admin()
    assert first is not None and first.user_name == "admin"
    assert (await identity.authenticate(first.key)).is_admin
    assert await identity.bootstrap_admin() is None


async def test_sandbox_stats_group_statuses_per_user(db: Database) -> None:
    identity = IdentityService(db)
    alice = await identity.issue_key("alice")
    bob = await identity.issue_key("bob")
    statuses = ["running", "running", "paused", "creating", "resuming", "destroyed", "failed"]
    async with db.sessions.begin() as session:
        for i, status in enumerate(statuses):
            session.add(
                SandboxRecord(id=new_id("sb_"), user_id=alice.user_id, name=f"s{i}", status=status)
            )
        session.add(
            SandboxRecord(id=new_id("sb_"), user_id=bob.user_id, name="b", status="running")
        )
    stats = await identity.sandbox_stats(alice.user_id)
    assert (stats.running, stats.paused, stats.other, stats.total) == (2, 1, 2, 7)
    bob_stats = await identity.sandbox_stats(bob.user_id)
    assert (bob_stats.running, bob_stats.total) == (1, 1)


async def test_hosts_that_stop_heartbeating_are_dead(db: Database) -> None:
    now = utcnow()
    async with db.sessions.begin() as session:
        session.add(
            Host(
                id="10.0.0.1",
                status="active",
                free_mib=1000,
                total_mib=2000,
                rootfses=["devbox:1"],
                started_at=now,
                heartbeat_at=now,
            )
        )
        session.add(
            Host(
                id="10.0.0.2",
                status="draining",
                free_mib=500,
                total_mib=2000,
                rootfses=["node"],
                started_at=now,
                heartbeat_at=now,
            )
        )
        session.add(
            Host(
                id="10.0.0.3",
                status="active",
                free_mib=9,
                total_mib=2000,
                rootfses=["node", "devbox:1"],
                started_at=now,
                heartbeat_at=now - timedelta(minutes=5),
            )
        )
    hosts = HostService(db, dead_after_s=30)
    views, total = await hosts.list(limit=2, offset=1)
    assert total == 3
    assert [(v.id, v.status) for v in views] == [("10.0.0.2", "draining"), ("10.0.0.3", "dead")]
    assert await hosts.built_rootfses() == {"devbox:1", "node"}


async def test_migrations_are_idempotent_and_safe_to_race(database_url: str) -> None:
    databases = [Database(database_url) for _ in range(3)]
    try:
        await asyncio.gather(*(upgrade(d) for d in databases))
        await upgrade(databases[0])
        async with databases[0].engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        assert version == ScriptDirectory.from_config(config).get_current_head()
    finally:
        for d in databases:
            await d.dispose()


def test_a_store_at_the_newest_revision_is_opened_without_alembic(tmp_path: Path) -> None:
    """Every ``hutch`` command migrates the store first; one already at the head is
    recognised by the revision lines of the scripts, which must name Alembic's own head."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert _head() == ScriptDirectory.from_config(config).get_current_head()
    script = (
        "import asyncio, sys\n"
        "from hutch.store.db import Database\n"
        "from hutch.store.migrate import upgrade\n"
        "async def main():\n"
        "    db = Database(sys.argv[1])\n"
        "    await upgrade(db)\n"
        "    await db.dispose()\n"
        "asyncio.run(main())\n"
        "print('alembic' in sys.modules)\n"
    )
    url = f"sqlite:///{tmp_path / 'hutch.db'}"
    run = [sys.executable, "-c", script, url]
    first = subprocess.run(run, capture_output=True, text=True, check=True)
    again = subprocess.run(run, capture_output=True, text=True, check=True)
    assert (first.stdout, again.stdout) == ("True\n", "False\n")


async def test_the_migrations_make_what_the_models_describe(db: Database) -> None:
    async with db.engine.connect() as conn:
        drift = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    assert drift == []


async def test_a_key_read_at_once_is_the_key_as_stored_and_a_revoked_one_is_refused(
    db: Database,
) -> None:
    from hutch.store import users as user_store

    identity = IdentityService(db)
    issued = await identity.issue_key("gail")
    await identity.authenticate(issued.key)  # notes its use
    async with db.sessions() as session:
        found = await user_store.key_by_hash(session, hash_key(issued.key))
    assert found is not None
    answered, owner = user_store.key_by_hash_now(db, hash_key(issued.key))
    if not db.is_sqlite:  # nothing is read so on PostgreSQL: the usual read serves
        assert (answered, owner) == (False, None)
        return
    assert answered and owner is not None
    assert (owner.key_id, owner.user_id, owner.user_name, owner.is_admin, owner.revoked) == (
        found[0].id, found[1].id, "gail", False, False,
    )  # fmt: skip
    assert owner.last_used_at == found[0].last_used_at
    assert user_store.key_by_hash_now(db, hash_key("hk_nope")) == (True, None)
    # Revoked by another process: refused on the next request, through this read.
    other = Database(str(db.url).replace("+aiosqlite", ""))
    try:
        await IdentityService(other).revoke(issued.key_id)
    finally:
        await other.dispose()
    assert user_store.key_by_hash_now(db, hash_key(issued.key))[1].revoked  # type: ignore[union-attr]
    with pytest.raises(Unauthenticated):
        await identity.authenticate(issued.key)
