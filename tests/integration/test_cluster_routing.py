"""Which agent the cluster's router passes a request about one sandbox to (real SQLite and
PostgreSQL): the host the sandbox lives on, found by id or by name for the caller."""

from __future__ import annotations

import json
import socket
from types import SimpleNamespace

import pytest

from hutch.cluster.membership import HostReport, Membership
from hutch.cluster.routing import ClusterRouter
from hutch.core.access_tokens import AccessTokenService
from hutch.core.identity import IdentityService
from hutch.core.ids import new_id
from hutch.core.sealing import SealedBox
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.models import SandboxRecord

pytestmark = pytest.mark.anyio


async def _sandbox(db: Database, user_id: str, name: str, host_id: str) -> SandboxRecord:
    record = SandboxRecord(id=new_id("sb_"), user_id=user_id, name=name, status="running",
                           host_id=host_id, mem_mib=256, vcpu=1)  # fmt: skip
    async with db.sessions.begin() as session:
        session.add(record)
    return record


async def test_a_sandbox_named_with_its_access_token_is_routed_to_its_host(
    db: Database, settings: Settings
) -> None:
    members = Membership(db, SealedBox(b"k" * 32), dead_after_s=30)
    join, _ = await members.create_join_token()
    for host_id in ("h1", "h2"):
        await members.join(join, HostReport(id=host_id, address=f"http://{host_id}:8702"))
    identity = IdentityService(db)
    alice = await identity.issue_key("alice")
    bob = await identity.issue_key("bob")
    web = await _sandbox(db, alice.user_id, "web", "h2")
    await _sandbox(db, bob.user_id, "api", "h1")
    token = (await AccessTokenService(db).create(web)).token
    state = SimpleNamespace(services=SimpleNamespace(db=db, identity=identity),
                            membership=members)  # fmt: skip
    router = ClusterRouter(settings, state)

    def scope(key: str) -> dict[str, object]:
        return {"headers": [(b"x-api-key", key.encode())]}

    async def host_of(key: str, ident: str) -> str | None:
        agent = await router._agent_of_sandbox(scope(key), ident)
        return agent.host_id if agent is not None else None

    assert await host_of(alice.key, "web") == "h2"  # the owner's key, by name
    assert await host_of(token, web.id) == "h2"  # the token, by id
    # The token names its sandbox by name too (as the agents accept): its host, not any.
    assert await host_of(token, "web") == "h2"
    # ... and no other sandbox: bob's "api" is not found for it (any agent says 404).
    assert await host_of(token, "api") is None
    assert await host_of(bob.key, "web") is None


async def _ask(router: ClusterRouter, path: str, body: dict[str, object],
               headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[str, object]]:  # fmt: skip
    """One request through the router, as a control plane's worker passes it: its answer."""
    sent: list[dict[str, object]] = []
    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": [(b"content-type", b"application/json"), *headers],
             "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 8700),
             "client": ("127.0.0.1", 50000), "root_path": ""}  # fmt: skip
    body_bytes = json.dumps(body).encode()

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body_bytes, "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await router(scope, receive, send)  # type: ignore[arg-type]
    status = next(int(str(m["status"])) for m in sent if m["type"] == "http.response.start")
    answer = b"".join(bytes(m.get("body", b"")) for m in sent if m["type"] == "http.response.body")  # type: ignore[call-overload]
    return status, json.loads(answer)


async def test_a_create_without_a_valid_key_is_refused_before_any_placement(
    db: Database, settings: Settings
) -> None:
    """The control plane places a create (room held on a host, an image copied there if it
    lacks it) only for a caller it knows: without a key, or with one that is not, the
    answer is a 401 in the dialect's words, and nothing about the cluster's hosts (a
    placement's 503 names them and their free room)."""
    members = Membership(db, SealedBox(b"k" * 32), dead_after_s=30)
    join, _ = await members.create_join_token()
    await members.join(join, HostReport(id="h1", address="http://h1:8702"))
    identity = IdentityService(db)
    alice = await identity.issue_key("alice")
    state = SimpleNamespace(services=SimpleNamespace(db=db, identity=identity),
                            membership=members)  # fmt: skip
    router = ClusterRouter(settings, state)
    try:
        want = {"shape": "s-1vcpu-256mb", "host_id": "h9", "node_selector": {"zone": "x"}}
        for headers in ([], [(b"x-api-key", b"hk_not-a-key")],
                        [(b"authorization", b"Bearer hk_not-a-key")]):  # fmt: skip
            for path in ("/v1/sandboxes", "/nullspace/v1/sandboxes"):
                status, answer = await _ask(router, path, want, headers)
                assert status == 401, (path, headers, answer)
                assert "h9" not in json.dumps(answer) and "h1" not in json.dumps(answer)
        # A known caller's create is placed as before (here: no such host, a 503 saying so).
        status, answer = await _ask(router, "/v1/sandboxes", want,
                                    [(b"x-api-key", alice.key.encode())])  # fmt: skip
        assert status == 503, answer
        assert "h9" in json.dumps(answer), answer
    finally:
        await router.aclose()


async def test_a_store_it_cannot_reach_is_a_503_in_the_dialects_words(settings: Settings) -> None:
    """Where the sandbox lives cannot be read (the database is down): a 503 in JSend, as the
    agents answer it (it reached uvicorn: a bare 500 in plain text)."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = Database(f"postgresql://hutch@127.0.0.1:{port}/hutch", timeout_s=2)
    state = SimpleNamespace(services=SimpleNamespace(db=down), membership=None)
    router = ClusterRouter(settings, state)
    try:
        status, answer = await _ask(router, f"/v1/sandboxes/{new_id('sb_')}/exec",
                                    {"cmd": "true"}, [(b"x-api-key", b"k")])  # fmt: skip
    finally:
        await router.aclose()
        await down.dispose()
    assert status == 503
    assert answer["status"] == "error" and "database" in str(answer["message"]), answer
