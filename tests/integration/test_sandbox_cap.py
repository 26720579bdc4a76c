"""The per-user running cap under a burst, held by the store's own statements (no lock of
the process), on real SQLite and a real PostgreSQL 15: inserts and resumes from several
connections at once (as from several processes), and creates through the service."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hutch.api.app import create_app
from hutch.core.identity import IdentityService
from hutch.core.ids import new_id
from hutch.host.drivers.fake import FakeDriver
from hutch.settings import Settings
from hutch.store import sandboxes as store
from hutch.store import users as user_store
from hutch.store.db import Database
from hutch.store.models import EventRecord, SandboxRecord
from tests.support.images import fake_image

pytestmark = pytest.mark.anyio

COUNTED = ("creating", "running", "resuming", "pausing")


def _sandbox(user_id: str, name: str, status: str = "creating") -> SandboxRecord:
    return SandboxRecord(id=new_id("sb_"), user_id=user_id, name=name, status=status)


async def _insert(url: str, record: SandboxRecord, cap: int | None) -> bool:
    other = Database(url)  # its own connection, as another process's
    try:
        return await other.write(
            lambda session: store.insert_within_cap(session, record, counted=COUNTED, cap=cap)
        )
    finally:
        await other.dispose()


async def _count(db: Database, model: type[SandboxRecord] | type[EventRecord]) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_ten_inserts_at_once_from_ten_connections_pass_a_cap_of_three_three_times(
    db: Database, database_url: str
) -> None:
    user = (await IdentityService(db).issue_key("alice")).user_id
    records = [_sandbox(user, f"box-{i}") for i in range(10)]
    done = await asyncio.gather(*(_insert(database_url, r, 3) for r in records))
    assert sorted(done) == [False] * 7 + [True] * 3
    assert await _count(db, SandboxRecord) == 3
    async with db.sessions() as session:  # the three written have their event, no others
        events = (await session.scalars(select(EventRecord))).all()
    written = {r.id for r, ok in zip(records, done, strict=True) if ok}
    assert {e.subject_id for e in events} == written
    assert {e.type for e in events} == {"sandbox.created"}
    # Stopped sandboxes do not count; a build's (cap None) is never held back.
    async with db.sessions.begin() as session:
        stopped = await session.get(SandboxRecord, next(iter(written)))
        assert stopped is not None
        stopped.status = "paused"
    assert await _insert(database_url, _sandbox(user, "after-pause"), 3)
    assert not await _insert(database_url, _sandbox(user, "over"), 3)
    build = _sandbox(user, "build")
    build.build_of = "tpl_x"
    assert await _insert(database_url, build, None)


async def test_a_burst_of_resumes_passes_the_cap_only_as_far_as_it_allows(
    db: Database, database_url: str
) -> None:
    user = (await IdentityService(db).issue_key("bob")).user_id
    paused = [_sandbox(user, f"p-{i}", "paused") for i in range(6)]
    running = _sandbox(user, "r", "running")
    async with db.sessions.begin() as session:
        session.add_all([*paused, running])

    async def resume(record: SandboxRecord) -> bool:
        other = Database(database_url)
        try:
            return await other.write(
                lambda session: store.set_status_within_cap(
                    session, record.id, user, "resuming", counted=COUNTED, cap=3
                )
            )
        finally:
            await other.dispose()

    done = await asyncio.gather(*(resume(r) for r in paused))
    assert done.count(True) == 2  # with the running one: 3
    async with db.sessions() as session:
        statuses = [s for (s,) in await session.execute(select(SandboxRecord.status))]
    assert statuses.count("resuming") == 2 and statuses.count("paused") == 4


async def test_inserts_at_once_from_one_process_pass_the_cap_as_far_as_it_allows(
    db: Database,
) -> None:
    # One Database (as one agent): on SQLite its writes queue on its writer thread.
    user = (await IdentityService(db).issue_key("erin")).user_id

    async def insert(i: int) -> bool:
        record = _sandbox(user, f"one-{i}")
        return await db.write(lambda s: store.insert_within_cap(s, record, counted=COUNTED, cap=4))

    assert (await asyncio.gather(*(insert(i) for i in range(12)))).count(True) == 4
    assert await _count(db, SandboxRecord) == 4


async def test_a_write_that_raises_leaves_nothing_and_a_cancelled_one_is_whole(
    db: Database,
) -> None:
    user = (await IdentityService(db).issue_key("fay")).user_id

    def half(session: Session) -> None:
        session.add(_sandbox(user, "half"))
        session.flush()
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        await db.write(half)
    assert await _count(db, SandboxRecord) == 0
    # A caller cancelled while its write runs: the write ends committed, not half done.
    started = threading.Event()

    def slow(session: Session) -> None:
        started.set()
        session.add(_sandbox(user, "whole"))
        time.sleep(0.2)

    task = asyncio.ensure_future(db.write(slow))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _count(db, SandboxRecord) == 1


async def test_a_taken_name_is_refused_by_the_insert(db: Database, database_url: str) -> None:
    from sqlalchemy.exc import IntegrityError

    user = (await IdentityService(db).issue_key("carol")).user_id
    assert await _insert(database_url, _sandbox(user, "same"), 3)
    with pytest.raises(IntegrityError):
        await _insert(database_url, _sandbox(user, "same"), 3)
    assert await _count(db, SandboxRecord) == 1


@pytest.fixture
def capped_client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    fake_image(tmp_path / "images", "devbox:1")
    settings = Settings(home=tmp_path / "home", images_dir=tmp_path / "images", driver="fake",
                        database_url=database_url, max_running_per_user=3,
                        proxy_enabled=False)  # fmt: skip
    with TestClient(create_app(settings)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        issued = client.portal.call(services.identity.issue_key, "dana")  # type: ignore[union-attr]
        client.headers["X-Api-Key"] = issued.key
        yield client
    asyncio.run(FakeDriver(settings.home / "fake-sandboxes").cleanup(set()))
    shutil.rmtree(tmp_path / "home", ignore_errors=True)


def test_ten_creates_at_once_start_three_and_answer_429_to_seven(
    capped_client: TestClient,
) -> None:
    import concurrent.futures

    def create(i: int) -> int:
        body = {"shape": "s-1vcpu-256mb", **({"name": f"named-{i}"} if i % 2 else {})}
        return int(capped_client.post("/v1/sandboxes", json=body).status_code)

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(create, range(10)))
    assert sorted(codes) == [201] * 3 + [429] * 7
    listed = capped_client.get("/v1/sandboxes").json()["data"]
    assert listed["pagination"]["total"] == 3
    assert {s["status"] for s in listed["data"]} == {"running"}


async def test_a_sandbox_being_forked_counts_toward_the_cap(db: Database) -> None:
    """A fork's child is inserted ``forking`` and runs at the fork's end with no check of
    its own: while it is made, it holds a place under the cap, so a create, a resume or
    another fork made meanwhile cannot pass the cap beside it."""
    from hutch.core.sandbox_base import COUNTED as SERVICE_COUNTED

    user = (await IdentityService(db).issue_key("hana")).user_id
    async with db.sessions.begin() as session:
        session.add_all([_sandbox(user, "child", "forking"), _sandbox(user, "p", "paused")])

    async def insert(record: SandboxRecord) -> bool:
        return await db.write(
            lambda s: store.insert_within_cap(s, record, counted=SERVICE_COUNTED, cap=1)
        )

    assert not await insert(_sandbox(user, "another"))
    async with db.sessions() as session:
        paused = await session.scalar(select(SandboxRecord.id).where(SandboxRecord.name == "p"))
    assert paused is not None
    resumed = await db.write(
        lambda s: store.set_status_within_cap(
            s, paused, user, "resuming", counted=SERVICE_COUNTED, cap=1
        )
    )
    assert not resumed


def test_a_create_while_a_fork_is_under_way_is_refused_at_the_cap(
    capped_client: TestClient,
) -> None:
    """Cap 3: two running and a fork's child still being made (``forking``, as the fork
    left it in the store); a create is one too many (429), and nothing of it is kept."""
    for _ in range(2):
        made = capped_client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
        assert made.status_code == 201, made.text
    services: Any = capped_client.app.state.services  # type: ignore[attr-defined]

    async def forking() -> None:
        async with services.db.sessions.begin() as session:
            owner = await user_store.get_user_by_name(session, "dana")
            assert owner is not None
            session.add(_sandbox(owner.id, "child-being-forked", "forking"))

    capped_client.portal.call(forking)  # type: ignore[union-attr]
    refused = capped_client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
    assert refused.status_code == 429, refused.text
    listed = capped_client.get("/v1/sandboxes").json()["data"]
    assert listed["pagination"]["total"] == 3


async def test_a_name_clash_is_told_apart_from_the_other_constraints_an_insert_fails(
    db: Database, database_url: str
) -> None:
    from sqlalchemy.exc import IntegrityError

    user = (await IdentityService(db).issue_key("ivy")).user_id
    first = _sandbox(user, "taken")
    assert await _insert(database_url, first, 3)

    async def refused(record: SandboxRecord) -> IntegrityError:
        with pytest.raises(IntegrityError) as caught:
            await _insert(database_url, record, 3)
        return caught.value

    assert store.is_live_name_clash(await refused(_sandbox(user, "taken")))
    same_id = _sandbox(user, "other")
    same_id.id = first.id
    assert not store.is_live_name_clash(await refused(same_id))
    assert not store.is_live_name_clash(await refused(_sandbox("usr_gone", "free")))
    # A destroyed sandbox's name is free again: that index is of live names only.
    async with db.sessions.begin() as session:
        gone = await session.get(SandboxRecord, first.id)
        assert gone is not None
        gone.status = "destroyed"
    assert await _insert(database_url, _sandbox(user, "taken"), 3)


def test_a_create_failing_another_constraint_is_not_retried_under_new_names(
    capped_client: TestClient,
) -> None:
    """Only the live name's clash draws another name; a row another constraint refuses
    (here: its id is taken) fails at once with that error, its name untouched, instead of
    fifty tries ending in 'could not find a free name'."""
    from sqlalchemy.exc import IntegrityError

    made = capped_client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
    assert made.status_code == 201, made.text
    services: Any = capped_client.app.state.services  # type: ignore[attr-defined]
    owner = capped_client.portal.call(  # type: ignore[union-attr]
        services.db.write, lambda s: s.get(SandboxRecord, made.json()["data"]["id"]).user_id
    )
    again = _sandbox(owner, "fresh-name")
    again.id = made.json()["data"]["id"]
    with pytest.raises(IntegrityError):
        capped_client.portal.call(  # type: ignore[union-attr]
            lambda: services.sandboxes._insert_new(again, capped=True, named=False)
        )
    assert again.name == "fresh-name"
    # The name clash itself still draws another generated name, or is a 409 when given.
    clash = _sandbox(owner, made.json()["data"]["name"])
    capped_client.portal.call(  # type: ignore[union-attr]
        lambda: services.sandboxes._insert_new(clash, capped=True, named=False)
    )
    assert clash.name != made.json()["data"]["name"]
    named = capped_client.post(
        "/v1/sandboxes", json={"shape": "s-1vcpu-256mb", "name": made.json()["data"]["name"]}
    )
    assert named.status_code == 409, named.text
