"""A host never resumes or wakes a sandbox whose row another host holds now.

A drain (hutch.cluster.drain) moves a hibernated sandbox's row to the host that adopted
it while requests for it may still reach the draining host: a resume that waited on the
sandbox's lock there, or a request to the ingress route the draining host had kept
asleep. Either woke the sandbox on the wrong host and wrote ``error`` into the row of a
sandbox that is whole on the other. In-process on the fake driver: the row is moved as
the adopting agent moves it (its ``host_id``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from hutch.store.models import Host, SandboxRecord, utcnow
from tests.support.inprocess import fake_app_client


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from fake_app_client(tmp_path)


def _move(client: TestClient, sandbox_id: str, host_id: str) -> None:
    services: Any = client.app.state.services  # type: ignore[attr-defined]

    async def move() -> None:
        async with services.db.sessions.begin() as session:
            await session.execute(
                update(SandboxRecord).where(SandboxRecord.id == sandbox_id).values(host_id=host_id)
            )

    client.portal.call(move)  # type: ignore[union-attr]


def test_a_sandbox_moved_to_another_host_is_neither_resumed_nor_woken_here(
    client: TestClient,
) -> None:
    services: Any = client.app.state.services  # type: ignore[attr-defined]
    made = client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb", "auto_resume": True})
    assert made.status_code == 201, made.text
    box = made.json()["data"]
    assert client.post(f"/v1/sandboxes/{box['id']}/pause").status_code == 202
    here = client.get(f"/v1/sandboxes/{box['id']}").json()["data"]
    assert here["status"] == "paused"
    wakes = services.sandboxes.wakes_on_traffic
    assert client.portal.call(wakes, box["id"]) is True  # type: ignore[union-attr]

    _move(client, box["id"], "another-host")
    # Its URLs here are let go of at the move (not kept asleep), and a resume that reaches
    # this host is refused, saying where it lives, with the row left as the other host has it.
    assert client.portal.call(wakes, box["id"]) is False  # type: ignore[union-attr]
    resumed = client.post(f"/v1/sandboxes/{box['id']}/resume")
    assert resumed.status_code == 503, resumed.text
    assert "another-host" in resumed.json()["message"], resumed.text
    assert resumed.headers["retry-after"] == "1"
    after = client.get(f"/v1/sandboxes/{box['id']}").json()["data"]
    assert (after["status"], after["reason"]) == ("paused", here["reason"]), after

    # Back on this host: it resumes as ever.
    _move(client, box["id"], services.host_agent.host_id)
    assert client.post(f"/v1/sandboxes/{box['id']}/resume").status_code == 202


def _host(client: TestClient, host_id: str, *, silent_s: float = 0) -> None:
    """A host row as a cluster agent's heartbeats keep it, last heard ``silent_s`` ago."""
    services: Any = client.app.state.services  # type: ignore[attr-defined]

    async def add() -> None:
        async with services.db.sessions.begin() as session:
            host = await session.get(Host, host_id) or Host(id=host_id)
            host.status = "active"
            host.heartbeat_at = utcnow() - timedelta(seconds=silent_s)
            session.add(host)

    client.portal.call(add)  # type: ignore[union-attr]


def test_a_delete_fork_or_rename_of_a_sandbox_another_host_took_is_left_to_that_host(
    client: TestClient,
) -> None:
    """A delete, fork or rename that waited on the sandbox's lock while a drain moved it
    would act on the copy this host let go of: the new host would keep the sandbox's disk,
    address and wake route, the fork would fail, the rename would say it could not be made.
    Each is refused (503, retry: the retry goes to the host that holds it), the row left as
    that host has it. Once that host has left (silent past HUTCH_HOST_DEAD_AFTER_S, as a
    removed one), any host may delete it."""
    made = client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
    assert made.status_code == 201, made.text
    box = made.json()["data"]
    assert client.post(f"/v1/sandboxes/{box['id']}/pause").status_code == 202
    _host(client, "other-live-host")
    _move(client, box["id"], "other-live-host")
    asked = [
        client.delete(f"/v1/sandboxes/{box['id']}"),
        client.post(f"/v1/sandboxes/{box['id']}/fork", json={}),
        client.patch(f"/v1/sandboxes/{box['id']}", json={"name": "renamed-otter"}),
    ]
    for answer in asked:
        assert answer.status_code == 503, answer.text
        assert "other-live-host" in answer.json()["message"], answer.text
        assert answer.headers["retry-after"] == "1"
    after = client.get(f"/v1/sandboxes/{box['id']}").json()["data"]
    assert (after["status"], after["name"]) == ("paused", box["name"]), after
    listed = client.get("/v1/sandboxes").json()["data"]["data"]
    assert [s["id"] for s in listed] == [box["id"]]  # no fork child was made

    _host(client, "other-live-host", silent_s=3600)  # it left the cluster
    gone = client.delete(f"/v1/sandboxes/{box['id']}")
    assert gone.status_code == 200, gone.text
    assert client.get(f"/v1/sandboxes/{box['id']}").json()["data"]["status"] == "destroyed"
