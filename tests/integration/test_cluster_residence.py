"""An agent's "not here" for a control plane's kept routes (cluster/residence.py), on a
real store of each backend: what it answers for its own sandboxes, another host's, one it
is moving out, and the ones its creates made."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from hutch.cluster.residence import NOT_HERE_HEADER, ROUTED_HEADER, ResidenceMiddleware, Residents
from hutch.core.identity import IdentityService
from hutch.core.ids import new_id
from hutch.core.sandbox_base import MOVED_HEADER
from hutch.store.db import Database
from hutch.store.models import SandboxRecord

pytestmark = pytest.mark.anyio


async def _sandbox(db: Database, user: str, host_id: str) -> str:
    sandbox_id = new_id("sb_")
    async with db.sessions.begin() as session:
        record = SandboxRecord(id=sandbox_id, user_id=user, name=sandbox_id.lower(),
                               status="running", host_id=host_id, mem_mib=256, vcpu=1)  # fmt: skip
        session.add(record)
    return sandbox_id


class _App:
    """The agent's app: counts what reached it; a create answers 201 with ``made``."""

    def __init__(self, made: str) -> None:
        self.reached: list[str] = []
        self.made = made

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.reached.append(scope["path"])
        body = json.dumps({"status": "success", "data": {"id": self.made}}).encode()
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": body})


async def _ask(middleware: ResidenceMiddleware, db: Database, method: str, path: str,
               routed: bool = True, said: list[Message] | None = None) -> int:  # fmt: skip
    app = SimpleNamespace(state=SimpleNamespace(services=SimpleNamespace(
        db=db, host_agent=SimpleNamespace(host_id="h1"))))  # fmt: skip
    headers = [(ROUTED_HEADER, b"h1")] if routed else []
    scope = {"type": "http", "method": method, "path": path, "headers": headers, "app": app}
    said = [] if said is None else said

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        said.append(message)

    await middleware(scope, receive, send)
    start: dict[str, Any] = said[0]
    if start["status"] == 421:
        assert (NOT_HERE_HEADER, b"1") in start["headers"]
    return int(start["status"])


async def test_an_agent_says_not_here_only_for_sandboxes_that_are_not_its_own(
    db: Database,
) -> None:
    user = (await IdentityService(db).issue_key("u")).user_id
    mine, theirs = await _sandbox(db, user, "h1"), await _sandbox(db, user, "h2")
    made = new_id("sb_")
    app = _App(made)
    residents = Residents()
    middleware = ResidenceMiddleware(app, residents)

    # Its own (read once from the store, then known) and another host's (never passed on).
    assert await _ask(middleware, db, "POST", f"/v1/sandboxes/{mine}/exec") == 201
    assert residents.knows(mine)
    assert await _ask(middleware, db, "POST", f"/v1/sandboxes/{theirs}/exec") == 421
    assert await _ask(middleware, db, "GET", f"/nullspace/v1/sandboxes/{theirs}") == 421
    assert not residents.knows(theirs)
    assert app.reached == [f"/v1/sandboxes/{mine}/exec"]
    # Without the control plane's mark, the request is the app's, as before.
    assert await _ask(middleware, db, "POST", f"/v1/sandboxes/{theirs}/exec", routed=False) == 201

    # One this host's drain is moving out is read at every request: once the store says
    # another host has it, it is "not here", though this host knew it a moment before.
    with residents.leaving(mine):
        assert not residents.knows(mine)
        assert await _ask(middleware, db, "GET", f"/v1/sandboxes/{mine}/files") == 201
        assert not residents.knows(mine)  # not learnt again while it moves
        async with db.sessions.begin() as session:
            record = await session.get(SandboxRecord, mine)
            assert record is not None
            record.host_id = "h2"
        assert await _ask(middleware, db, "GET", f"/v1/sandboxes/{mine}/files") == 421
    assert await _ask(middleware, db, "GET", f"/v1/sandboxes/{mine}/files") == 421

    # A sandbox its create made is known at once (no store read: it has no row here).
    assert await _ask(middleware, db, "POST", "/v1/sandboxes", routed=False) == 201
    assert residents.knows(made)
    assert await _ask(middleware, db, "POST", f"/v1/sandboxes/{made}/exec") == 201


class _MovedApp:
    """The agent's core for a sandbox another host took: refuses with the 503 that names
    where it lives (SandboxBase._moved_away), having done nothing."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b'{"status":"error","message":"sandbox now lives on host h2; try again"}'
        headers = [(b"retry-after", b"1"), (MOVED_HEADER.lower().encode(), b"h2")]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def test_a_sandbox_known_here_but_moved_is_not_here_once_the_core_says_so(
    db: Database,
) -> None:
    """What this host knew went stale (a move finished without its drain seeing it
    through): the core's refusal becomes a 421, so the control plane asks the store and
    does not send the client's retries here for ever; and the sandbox is forgotten."""
    user = (await IdentityService(db).issue_key("u")).user_id
    moved = await _sandbox(db, user, "h2")
    residents = Residents()
    residents.add(moved)  # stale
    middleware = ResidenceMiddleware(_MovedApp(), residents)
    assert await _ask(middleware, db, "POST", f"/v1/sandboxes/{moved}/resume") == 421
    assert not residents.knows(moved)
    # Without the control plane's mark the core's answer is the client's, as it was.
    assert await _ask(middleware, db, "POST", f"/v1/sandboxes/{moved}/resume", routed=False) == 503


async def test_a_store_it_cannot_reach_is_a_503_in_the_dialects_words() -> None:
    """Where the sandbox lives cannot be read (the database is down): the client gets the
    503 the app gives for that, in JSend, and nothing reaches the app (it was a bare 500
    in plain text: this middleware runs outside the app's error envelope)."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = Database(f"postgresql://hutch@127.0.0.1:{port}/hutch", timeout_s=2)
    app = _App(new_id("sb_"))
    said: list[Message] = []
    try:
        status = await _ask(ResidenceMiddleware(app, Residents()), down, "POST",
                            f"/v1/sandboxes/{new_id('sb_')}/exec", said=said)  # fmt: skip
    finally:
        await down.dispose()
    assert status == 503
    answer = json.loads(b"".join(m.get("body", b"") for m in said[1:]))
    assert answer["status"] == "error" and "database" in answer["message"], answer
    assert app.reached == []


class _AnswerLate:
    """The store, whose reads' answers arrive after ``meanwhile`` has run (a read sent,
    then a busy event loop or a slow connection while the rest of the world goes on)."""

    def __init__(self, db: Database, meanwhile: Callable[[], Awaitable[None]]) -> None:
        self._db, self._meanwhile = db, meanwhile

    @contextlib.asynccontextmanager
    async def sessions(self) -> AsyncIterator[Any]:
        async with self._db.sessions() as session:
            meanwhile = self._meanwhile

            class Late:
                async def scalar(self, statement: Any) -> Any:
                    found = await session.scalar(statement)
                    await meanwhile()
                    return found

            yield Late()


async def test_a_read_that_saw_the_sandbox_before_a_whole_move_does_not_keep_it_here(
    db: Database,
) -> None:
    """The read finds the row this host's, then this host's drain moves the sandbox
    (begun and ended) before the read's answer is taken: the answer is stale. The request
    is "not here" (the control plane asks the store), and the sandbox is not noted as this
    host's: the next request is "not here" too (it was taken for this host's for good)."""
    user = (await IdentityService(db).issue_key("u")).user_id
    mine = await _sandbox(db, user, "h1")
    app = _App(new_id("sb_"))
    residents = Residents()
    middleware = ResidenceMiddleware(app, residents)

    async def whole_move() -> None:
        with residents.leaving(mine):
            async with db.sessions.begin() as session:
                record = await session.get(SandboxRecord, mine)
                assert record is not None
                record.host_id = "h2"

    late = _AnswerLate(db, whole_move)
    assert await _ask(middleware, late, "POST", f"/v1/sandboxes/{mine}/exec") == 421  # type: ignore[arg-type]
    assert not residents.knows(mine)
    assert await _ask(middleware, db, "POST", f"/v1/sandboxes/{mine}/exec") == 421
    assert app.reached == []
