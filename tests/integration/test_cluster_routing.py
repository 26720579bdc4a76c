"""Which agent the cluster's router passes a request about one sandbox to (real SQLite and
PostgreSQL): the host the sandbox lives on, found by id or by name for the caller."""

from __future__ import annotations

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
