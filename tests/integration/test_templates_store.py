"""The templates store on real SQLite and a real PostgreSQL 15: versions, what a create
gets (the newest ready, never a deleted one), another user's templates, build logs by
attempt. (Builds themselves run on runc: tests/e2e/test_templates_runc.py.)"""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from hutch.core.identity import IdentityService
from hutch.core.ids import new_id
from hutch.store import templates as store
from hutch.store.db import Database
from hutch.store.models import TemplateLogLine, TemplateRecord, utcnow

pytestmark = pytest.mark.anyio


async def user(db: Database, name: str) -> str:
    identity = IdentityService(db)
    return (await identity.authenticate((await identity.issue_key(name)).key)).user_id


async def add(
    db: Database, user_id: str, name: str, status: str, **extra: object
) -> TemplateRecord:
    async with db.sessions.begin() as session:
        version = await store.next_version(session, user_id, name)
        record = TemplateRecord(
            id=new_id("tpl_"),
            user_id=user_id,
            name=name,
            version=version,
            status=status,
            base="devbox:1",
            dockerfile="FROM devbox:1\n",
            root="devbox:1",
            layers=["a" * 32],
            env={"A": "1"},
            workdir="/",
            run_as="",
            labels={},
            exposed=[],
            size_bytes=1 << 40,
            attempts=1,
            steps_total=1,
            steps_cached=0,
            created_at=utcnow(),
            **extra,
        )
        session.add(record)
    return record


async def test_versions_and_what_a_create_gets(db: Database) -> None:
    alice, bob = await user(db, "alice"), await user(db, "bob")
    first = await add(db, alice, "web", store.READY)
    second = await add(db, alice, "web", store.FAILED)
    third = await add(db, alice, "web", store.BUILDING)
    assert (first.version, second.version, third.version) == (1, 2, 3)
    async with db.sessions() as session:
        newest = await store.find_for_user(session, alice, "web")
        ready = await store.newest_ready(session, alice, "web")
        by_id = await store.newest_ready(session, alice, second.id)
        assert newest is not None and newest.id == third.id
        assert ready is not None and ready.id == first.id and ready.size_bytes == 1 << 40
        assert by_id is None  # failed: no create gets it
        assert await store.find_for_user(session, bob, "web") is None
        assert await store.newest_ready(session, bob, first.id) is None
        assert await store.count_for_user(session, alice) == 3
        assert await store.count_for_user(session, alice, store.BUILDING) == 1
        assert [
            r.version for r in await store.list_for_user(session, alice, limit=2, offset=1)
        ] == [
            2,
            3,
        ]
    async with db.sessions.begin() as session:
        deleted = await session.get(TemplateRecord, first.id)
        assert deleted is not None
        deleted.deleted_at = utcnow()
    async with db.sessions() as session:
        assert await store.newest_ready(session, alice, "web") is None
        assert await store.count_for_user(session, alice) == 2
        assert await store.next_version(session, alice, "web") == 4  # never reused


async def test_a_version_is_unique_per_user_and_name(db: Database) -> None:
    alice = await user(db, "alice")
    record = await add(db, alice, "web", store.READY)
    with pytest.raises(IntegrityError):
        async with db.sessions.begin() as session:
            session.add(
                TemplateRecord(
                    id=new_id("tpl_"),
                    user_id=alice,
                    name="web",
                    version=record.version,
                    status=store.PENDING,
                    base="devbox:1",
                    dockerfile="",
                    root="",
                    layers=[],
                    env={},
                    workdir="/",
                    run_as="",
                    labels={},
                    exposed=[],
                    size_bytes=0,
                    attempts=0,
                    steps_total=0,
                    steps_cached=0,
                    created_at=utcnow(),
                )
            )


async def test_log_lines_by_attempt_in_order(db: Database) -> None:
    alice = await user(db, "alice")
    record = await add(db, alice, "web", store.BUILDING)
    async with db.sessions.begin() as session:
        for attempt, line in ((1, "one"), (1, "two"), (2, "three")):
            session.add(
                TemplateLogLine(
                    template_id=record.id, attempt=attempt, ts=utcnow(), level="info", line=line
                )
            )
    async with db.sessions() as session:
        every = await store.log_lines(session, record.id)
        assert [row.line for row in every] == ["one", "two", "three"]
        second = await store.log_lines(session, record.id, attempt=2)
        assert [row.line for row in second] == ["three"]
        after = await store.log_lines(session, record.id, after=every[0].id)
        assert [row.line for row in after] == ["two", "three"]
