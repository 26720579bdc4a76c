"""Cluster membership and placement on real SQLite and a real PostgreSQL 15: join tokens,
heartbeats, draining, hosts that go silent, and where creates are placed."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from hutch.cluster.membership import HostReport, Membership
from hutch.cluster.placement import PlacementRequest, Placer
from hutch.core.errors import Conflict, Unauthenticated, Unavailable
from hutch.core.hosts import HostService
from hutch.core.identity import IdentityService
from hutch.core.ids import new_id
from hutch.core.sealing import SealedBox
from hutch.store.db import Database
from hutch.store.models import Host, JoinToken, SandboxRecord, utcnow

pytestmark = pytest.mark.anyio

SMALL = PlacementRequest(mem_mib=256, vcpu=1, image="devbox:1")


def report(host_id: str, **overrides: object) -> HostReport:
    values: dict[str, object] = {
        "id": host_id, "address": f"http://{host_id}:8702", "rootfses": ["devbox:1"],
        "runtimes": ["runc"], "free_mib": 8192, "total_mib": 8192, "capacity_mib": 2048,
        "cpus": 2,
    }  # fmt: skip
    values.update(overrides)
    return HostReport(**values)  # type: ignore[arg-type]


def membership(db: Database) -> Membership:
    return Membership(db, SealedBox(b"k" * 32), dead_after_s=30)


async def joined(db: Database, *reports: HostReport) -> tuple[Membership, dict[str, str]]:
    members = membership(db)
    token, _ = await members.create_join_token()
    return members, {r.id: await members.join(token, r) for r in reports}


async def occupy(db: Database, host_id: str, mem_mib: int, *, status: str = "running") -> str:
    identity = IdentityService(db)
    async with db.sessions() as session:
        user = await session.scalar(select(SandboxRecord.user_id).limit(1))
    if user is None:
        user = (await identity.issue_key(f"u{random.randrange(10**9)}")).user_id
    sandbox_id = new_id("sb_")
    async with db.sessions.begin() as session:
        record = SandboxRecord(id=sandbox_id, user_id=user, name=sandbox_id.lower(),
                               status=status, host_id=host_id, mem_mib=mem_mib, vcpu=1)  # fmt: skip
        session.add(record)
    return sandbox_id


async def test_a_host_joins_only_with_a_live_join_token_kept_hashed(db: Database) -> None:
    members = membership(db)
    token, info = await members.create_join_token()
    async with db.sessions() as session:
        stored = (await session.scalars(select(JoinToken))).one()
    assert token not in (stored.token_hash, stored.prefix) and token.startswith(stored.prefix)

    with pytest.raises(Unauthenticated):
        await members.join("hjt_not-a-token", report("h1"))
    host_token = await members.join(token, report("h1", labels={"zone": "a"}))
    async with db.sessions() as session:
        host = await session.get(Host, "h1")
    assert host is not None and host.address == "http://h1:8702" and host.labels == {"zone": "a"}
    assert host_token not in (host.token_hash, host.token_sealed)
    assert members.host_token(host) == host_token  # the control plane can present it

    assert await members.heartbeat("h1", host_token, report("h1", free_mib=100)) == "active"
    with pytest.raises(Unauthenticated):
        await members.heartbeat("h1", "hht_forged", report("h1"))
    with pytest.raises(Unauthenticated):  # another host's token is not this one's
        await members.heartbeat("h2", host_token, report("h2"))

    await members.revoke_join_token(info.id)
    with pytest.raises(Unauthenticated):
        await members.join(token, report("h2"))
    late, _ = await members.create_join_token(ttl=timedelta(seconds=-1))
    with pytest.raises(Unauthenticated, match="expired"):
        await members.join(late, report("h2"))


async def test_hosts_list_with_status_address_labels_and_counts(db: Database) -> None:
    members, tokens = await joined(db, report("h1", labels={"gpu": "no"}), report("h2"))
    await occupy(db, "h1", 256)
    await occupy(db, "h1", 256, status="destroyed")
    await members.set_status("h2", "draining")
    await members.heartbeat("h2", tokens["h2"], report("h2"))  # a heartbeat keeps draining
    views, total = await HostService(db, dead_after_s=30).list(limit=None, offset=0)
    seen = {v.id: (v.status, v.vm_count, v.address, v.labels) for v in views}
    assert total == 2
    assert seen == {"h1": ("active", 1, "http://h1:8702", {"gpu": "no"}),
                    "h2": ("draining", 0, "http://h2:8702", {})}  # fmt: skip


async def test_placement_spreads_and_respects_selector_host_and_capacity(db: Database) -> None:
    await joined(db, report("h1", labels={"zone": "a"}), report("h2", labels={"zone": "b"}),
                 report("h3", labels={"zone": "b"}, rootfses=["devbox:1", "node"]))  # fmt: skip
    placer = Placer(db, dead_after_s=30, cpu_overcommit=16, rng=random.Random(7))
    spread: Counter[str] = Counter()
    for _ in range(15):  # 15 x 256 MiB over 3 x 2048 MiB: each gets some, none overfills
        placed = await placer.place(SMALL)
        await occupy(db, placed.host_id, 256)
        await placer.release(placed)
        spread[placed.host_id] += 1
    assert set(spread) == {"h1", "h2", "h3"} and max(spread.values()) <= 8, spread

    zone_b = PlacementRequest(mem_mib=256, vcpu=1, image="devbox:1", node_selector={"zone": "b"})
    for want, hosts in ((zone_b, {"h2", "h3"}),
                        (PlacementRequest(mem_mib=1, vcpu=1, image="node"), {"h3"}),
                        (PlacementRequest(mem_mib=256, vcpu=1, image="devbox:1", host_id="h1"),
                         {"h1"})):  # fmt: skip
        for _ in range(4):
            placed = await placer.place(want)
            await placer.release(placed)
            assert placed.host_id in hosts, (want, placed)

    with pytest.raises(Unavailable, match="no active host has labels zone=c"):
        await placer.place(PlacementRequest(mem_mib=1, vcpu=1, image="devbox:1",
                                             node_selector={"zone": "c"}))  # fmt: skip
    with pytest.raises(Unavailable, match="not an active host"):
        await placer.place(PlacementRequest(mem_mib=1, vcpu=1, image="devbox:1", host_id="h9"))
    with pytest.raises(Unavailable, match="no host has 4096 MiB free"):
        await placer.place(PlacementRequest(mem_mib=4096, vcpu=1, image="devbox:1"))


async def test_a_full_host_gets_no_more_and_holds_count_until_released(db: Database) -> None:
    await joined(db, report("h1", capacity_mib=1024), report("h2", capacity_mib=1024))
    placer = Placer(db, dead_after_s=30, cpu_overcommit=16)
    await occupy(db, "h1", 1024)
    for _ in range(4):  # held, not yet created: each placement still sees the others
        assert (await placer.place(SMALL)).host_id == "h2"
    with pytest.raises(Unavailable, match="no host has 256 MiB free"):
        await placer.place(SMALL)


async def test_draining_and_silent_hosts_get_nothing(db: Database) -> None:
    members, _ = await joined(db, report("h1"), report("h2"))
    placer = Placer(db, dead_after_s=30, cpu_overcommit=16)
    await members.set_status("h1", "draining")
    assert {(await placer.place(SMALL)).host_id for _ in range(5)} == {"h2"}
    async with db.sessions.begin() as session:
        await session.execute(update(Host).where(Host.id == "h2")
                              .values(heartbeat_at=utcnow() - timedelta(minutes=5)))  # fmt: skip
    with pytest.raises(Unavailable, match="no host is active"):
        await placer.place(SMALL)


async def test_a_silent_host_is_dead_its_sandboxes_error_and_it_comes_back(db: Database) -> None:
    members, tokens = await joined(db, report("h1"), report("h2"))
    lost = await occupy(db, "h1", 256)
    other = await occupy(db, "h2", 256)
    async with db.sessions.begin() as session:
        await session.execute(update(Host).where(Host.id == "h1")
                              .values(heartbeat_at=utcnow() - timedelta(minutes=5)))  # fmt: skip
    assert await members.reap() == ["h1"]
    assert await members.reap() == []  # once
    async with db.sessions() as session:
        gone = await session.get(SandboxRecord, lost)
        kept = await session.get(SandboxRecord, other)
        host = await session.get(Host, "h1")
    assert gone is not None and gone.status == "error"
    assert gone.reason is not None and "its host h1 stopped answering" in gone.reason
    assert kept is not None and kept.status == "running"
    assert host is not None and host.status == "dead"
    assert await members.heartbeat("h1", tokens["h1"], report("h1")) == "active"


async def test_a_host_with_live_sandboxes_is_removed_only_with_force(db: Database) -> None:
    members, tokens = await joined(db, report("h1"))
    sandbox = await occupy(db, "h1", 256)
    with pytest.raises(Conflict, match="1 sandboxes still live"):
        await members.remove("h1")
    assert await members.remove("h1", force=True) == 1
    async with db.sessions() as session:
        record = await session.get(SandboxRecord, sandbox)
    assert record is not None and record.status == "error"
    with pytest.raises(Unauthenticated):  # its agent must join again
        await members.heartbeat("h1", tokens["h1"], report("h1"))


@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)  # fmt: skip
async def test_concurrent_placements_never_overfill_a_host(db: Database) -> None:
    """Twelve creates at once on three hosts with room for two each, through two placers
    (two control planes: each its own connections): six are placed, two per host, and six
    are refused; none waits forever or fails on a lock."""
    await joined(db, *(report(f"h{n}", capacity_mib=512) for n in range(3)))
    placers = [Placer(db, dead_after_s=30, cpu_overcommit=16) for _ in range(2)]
    try:
        outcomes = await asyncio.gather(*(placers[n % 2].place(SMALL) for n in range(12)),
                                        return_exceptions=True)  # fmt: skip
    finally:
        for placer in placers:
            await placer.aclose()
    placed = Counter(o.host_id for o in outcomes if not isinstance(o, BaseException))
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert placed == {"h0": 2, "h1": 2, "h2": 2}
    assert len(refused) == 6 and all(isinstance(o, Unavailable) for o in refused), refused


async def test_a_host_lacking_the_image_is_placed_on_after_those_that_have_it(
    db: Database,
) -> None:
    """Hosts that hold the image come first; one that lacks it is chosen when pinned or
    when no holder fits, and the placement names the holders to fetch it from (a draining
    holder too). An image no live host holds is still a 503 saying so."""
    members, _ = await joined(
        db, report("h1", templates=["tpl_a"], capacity_mib=512), report("h2"), report("h3")
    )
    placer = Placer(db, dead_after_s=30, cpu_overcommit=16, rng=random.Random(3))
    want = PlacementRequest(mem_mib=256, vcpu=1, image="tpl_a")
    placed = [await placer.place(want) for _ in range(2)]  # room for two on h1
    assert [(p.host_id, p.sources) for p in placed] == [("h1", ()), ("h1", ())]
    third = await placer.place(want)  # h1 is full: another host, which fetches from h1
    assert third.host_id in ("h2", "h3") and third.sources == ("h1",)
    for done in (*placed, third):
        await placer.release(done)

    pinned = await placer.place(PlacementRequest(mem_mib=256, vcpu=1, image="tpl_a",
                                                 host_id="h2"))  # fmt: skip
    assert (pinned.host_id, pinned.sources) == ("h2", ("h1",))
    await placer.release(pinned)

    await members.set_status("h1", "draining")  # no placements there, still a source
    placer.forget()
    moved = await placer.place(want)
    assert moved.host_id in ("h2", "h3") and moved.sources == ("h1",)
    await placer.release(moved)

    with pytest.raises(Unavailable, match="no active host has the image 'tpl_nowhere'"):
        await placer.place(PlacementRequest(mem_mib=1, vcpu=1, image="tpl_nowhere"))
