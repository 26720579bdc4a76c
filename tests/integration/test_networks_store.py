"""The network service on real SQLite and a real PostgreSQL 15: subnets, addresses,
membership and the DNS lookup, with the fake network layer (the real one is in e2e)."""

from __future__ import annotations

import asyncio
import importlib.util
from datetime import UTC, datetime
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import hutch.store
from hutch.core.errors import Conflict, InvalidInput, NotFound
from hutch.core.identity import IdentityService, Principal
from hutch.core.ids import new_id
from hutch.core.networks import NetworkService
from hutch.host.agent import HostAgent
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.migrate import upgrade
from hutch.store.models import SandboxRecord

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", driver="fake", host_id="test-host",
                    network_pool=IPv4Network("10.50.0.0/22"))  # fmt: skip


@pytest.fixture
async def service(db: Database, settings: Settings) -> NetworkService:
    return NetworkService(settings, db, HostAgent(settings, db))


async def principal(db: Database, name: str) -> Principal:
    identity = IdentityService(db)
    return await identity.authenticate((await identity.issue_key(name)).key)


async def sandbox(db: Database, user: Principal, name: str, ip: str) -> SandboxRecord:
    record = SandboxRecord(id=new_id("sb_"), user_id=user.user_id, name=name, status="running",
                           host_id="test-host", ip=ip)  # fmt: skip
    async with db.sessions.begin() as session:
        session.add(record)
    return record


async def test_subnets_are_distinct_under_races_and_reused_after_delete(
    db: Database, service: NetworkService
) -> None:
    alice = await principal(db, "alice")
    made = await asyncio.gather(*(service.create(alice, f"n{i}") for i in range(4)))
    subnets = {view.network.subnet for view in made}
    assert subnets == {"10.50.0.0/24", "10.50.1.0/24", "10.50.2.0/24", "10.50.3.0/24"}
    with pytest.raises(Exception, match="no free subnet"):
        await service.create(alice, "n4")
    freed = (await service.get(alice, "n1")).network.subnet
    await service.delete(alice, "n1")
    assert (await service.create(alice, "again")).network.subnet == freed
    with pytest.raises(InvalidInput):
        await service.create(alice, "n0")
    with pytest.raises(NotFound):
        await service.delete(alice, "n1")


async def test_members_get_distinct_addresses_and_dns_answers_only_peers(
    db: Database, service: NetworkService
) -> None:
    alice = await principal(db, "alice")
    await service.create(alice, "alpha")
    await service.create(alice, "beta")
    boxes = [await sandbox(db, alice, f"box{i}", f"10.89.0.{4 * i + 2}") for i in range(4)]
    await asyncio.gather(*(service.attach(alice, box.id, "alpha") for box in boxes[:3]))
    await service.attach(alice, boxes[3].id, "beta")
    members = (await service.get(alice, "alpha")).members
    ips = [member.ip for member, _ in members]
    assert len(set(ips)) == 3 and all(ip.startswith("10.50.0.") for ip in ips)
    assert "10.50.0.1" not in ips, ".1 is kept free"

    asker = boxes[0].ip or ""
    box1_ip = next(m.ip for m, s in members if s.id == boxes[1].id)
    assert await service.resolve(asker, "box1") == [box1_ip]
    assert await service.resolve(asker, "box3") == [], "not a shared network"
    assert await service.resolve("10.89.9.9", "box1") is None, "not a sandbox: refused"

    with pytest.raises(Conflict):
        await service.delete(alice, "alpha")
    await service.detach(alice, boxes[1].id, "alpha")
    assert await service.resolve(asker, "box1") == []
    with pytest.raises(NotFound):
        await service.detach(alice, boxes[1].id, "alpha")
    await service.leave_all(boxes[0].id)
    assert [s.id for _, s in (await service.get(alice, "alpha")).members] == [boxes[2].id]

    bob = await principal(db, "bob")
    with pytest.raises(NotFound):
        await service.get(bob, "alpha")
    with pytest.raises(NotFound):
        await service.attach(bob, boxes[0].id, "alpha")


async def test_every_network_gets_its_own_vxlan_id_even_when_the_draw_repeats(
    db: Database, service: NetworkService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VXLAN ids come from the store, unique: networks made at once all differ, and a
    draw that repeats one in use (forced here: one in 16 million by chance) is drawn again,
    not shared (two networks sharing one would be one segment between hosts)."""
    alice, bob = await principal(db, "alice"), await principal(db, "bob")
    made = await asyncio.gather(*(service.create(alice, f"n{i}") for i in range(3)))
    vnis = [view.network.vni for view in made]
    assert len(set(vnis)) == 3 and all(2 <= v < 1 << 24 for v in vnis)
    draws = iter([vnis[0], vnis[0], 4242])
    monkeypatch.setattr("hutch.core.networks.new_vni", lambda: next(draws))
    assert (await service.create(bob, "b")).network.vni == 4242
    # A deleted network's id is free again.
    await service.delete(alice, "n0")
    draws = iter([vnis[0]])
    assert (await service.create(bob, "c")).network.vni == vnis[0]


def _migration_0018() -> Any:
    path = Path(hutch.store.__file__).parent / "migrations" / "versions" / "0018_multi.py"
    spec = importlib.util.spec_from_file_location("hutch_migration_0018", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_networks_made_before_0018_keep_their_vxlan_id_and_a_clash_is_moved(
    database_url: str,
) -> None:
    """The upgrade gives each existing network the id hutch derived from its id before
    (what its VXLAN devices were made with); of two whose ids clashed, the later one gets
    another, so no two share one. Their other columns are kept."""
    derived = _migration_0018()._derived
    first_seen: dict[int, str] = {}
    n = 0
    while True:  # two ids whose derived VXLAN ids clash (a birthday search: ~5,000 tries)
        candidate = f"net-{n}"
        n += 1
        if derived(candidate) in first_seen:
            older, newer = first_seen[derived(candidate)], candidate
            break
        first_seen[derived(candidate)] = candidate
    database = Database(database_url)
    try:
        await upgrade(database, "0017")
        async with database.engine.begin() as connection:
            await connection.execute(text("INSERT INTO users (id, name, is_admin, created_at) "
                                          "VALUES ('u1', 'alice', false, :at)"),
                                     {"at": datetime(2026, 1, 1, tzinfo=UTC)})  # fmt: skip
            for k, network_id in enumerate((older, newer, "net-alone")):
                await connection.execute(
                    text("INSERT INTO networks (id, user_id, name, subnet, created_at) "
                         "VALUES (:id, 'u1', :name, :subnet, :at)"),
                    {"id": network_id, "name": f"n{k}", "subnet": f"10.9.{k}.0/24",
                     "at": datetime(2026, 1, k + 1, tzinfo=UTC)},
                )  # fmt: skip
        await upgrade(database)
        async with database.engine.connect() as connection:
            rows = (
                await connection.execute(text("SELECT id, vni, name, subnet FROM networks"))
            ).all()
        vnis = {row[0]: row[1] for row in rows}
        assert vnis[older] == derived(older) and vnis["net-alone"] == derived("net-alone")
        assert vnis[newer] != derived(newer) and len(set(vnis.values())) == 3
        assert sorted((row[2], row[3]) for row in rows) == [
            ("n0", "10.9.0.0/24"),
            ("n1", "10.9.1.0/24"),
            ("n2", "10.9.2.0/24"),
        ]
    finally:
        await database.dispose()
