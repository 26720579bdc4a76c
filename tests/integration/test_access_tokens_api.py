"""Access tokens on SQLite and PostgreSQL (fake driver): the rules hold on both stores,
revocation by another connection (another process) is seen on the next request, and
concurrent creates make exactly one token."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hutch.api.app import create_app
from hutch.core.access_tokens import AccessTokenService, IssuedAccessToken
from hutch.core.errors import Conflict
from hutch.host.drivers.fake import FakeDriver
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.models import SandboxRecord
from tests.support.images import fake_image


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    fake_image(tmp_path / "images", "devbox:1")
    settings = Settings(home=tmp_path / "home", images_dir=tmp_path / "images", driver="fake",
                        proxy_enabled=False, database_url=database_url)  # fmt: skip
    with TestClient(create_app(settings)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        assert client.portal is not None
        client.headers["X-Api-Key"] = client.portal.call(services.identity.issue_key, "ann").key
        yield client
    asyncio.run(FakeDriver(settings.home / "fake-sandboxes").cleanup(set()))


def sandbox(client: TestClient) -> dict[str, Any]:
    made = client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
    assert made.status_code == 201, made.text
    data: dict[str, Any] = made.json()["data"]
    return data


def exec_with(client: TestClient, token: str, sandbox_id: str) -> int:
    answer = client.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": "echo hi"},
                         headers={"X-Api-Key": token})  # fmt: skip
    return answer.status_code


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_token_disabled_through_another_connection_is_refused_next(
    client: TestClient, database_url: str
) -> None:
    box = sandbox(client)
    token = client.post(f"/v1/sandboxes/{box['id']}/access-token").json()["data"]["token"]
    assert exec_with(client, token, box["id"]) == 200
    assert exec_with(client, token, box["id"]) == 200  # now from the server's key cache

    async def disable_elsewhere() -> None:
        other = Database(database_url)  # its own connections, as another process has
        try:
            async with other.sessions() as session:
                record = await session.get(SandboxRecord, box["id"])
            assert record is not None
            await AccessTokenService(other).disable(record)
        finally:
            await other.dispose()

    assert client.portal is not None
    client.portal.call(disable_elsewhere)
    assert exec_with(client, token, box["id"]) == 401
    assert client.get(f"/v1/sandboxes/{box['id']}/access-token").json()["data"] == {
        "enabled": False, "token_hint": None, "created_at": None, "rotated_at": None}  # fmt: skip


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_concurrent_creates_make_one_token(client: TestClient) -> None:
    box = sandbox(client)
    services = client.app.state.services  # type: ignore[attr-defined]

    async def race() -> list[IssuedAccessToken | BaseException]:
        async with services.db.sessions() as session:
            record = await session.get(SandboxRecord, box["id"])
        return await asyncio.gather(
            *(services.access_tokens.create(record) for _ in range(6)), return_exceptions=True
        )

    assert client.portal is not None
    outcomes = client.portal.call(race)
    made = [o for o in outcomes if isinstance(o, IssuedAccessToken)]
    assert len(made) == 1, outcomes
    assert all(isinstance(o, Conflict) for o in outcomes if o is not made[0]), outcomes
    assert exec_with(client, made[0].token, box["id"]) == 200
    hint = client.get(f"/v1/sandboxes/{box['id']}/access-token").json()["data"]["token_hint"]
    assert hint == f"{made[0].token[:9]}...{made[0].token[-4:]}"
