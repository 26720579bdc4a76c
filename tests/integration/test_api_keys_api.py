"""``/v1/api-keys`` (fake driver, SQLite and PostgreSQL): a user makes, lists and revokes
their own keys; only an admin reaches other users'; a revoked key is refused next."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hutch.api.app import create_app
from hutch.host.drivers.fake import FakeDriver
from hutch.settings import Settings
from tests.support.images import fake_image


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    fake_image(tmp_path / "images", "devbox:1")
    settings = Settings(home=tmp_path / "home", images_dir=tmp_path / "images", driver="fake",
                        proxy_enabled=False, database_url=database_url)  # fmt: skip
    with TestClient(create_app(settings)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        assert client.portal is not None
        issue = services.identity.issue_key
        client.headers["X-Api-Key"] = client.portal.call(lambda: issue("ann")).key
        client.bob = client.portal.call(lambda: issue("bob")).key  # type: ignore[attr-defined]
        client.admin = client.portal.call(lambda: issue("root", admin=True)).key  # type: ignore[attr-defined]
        yield client
    asyncio.run(FakeDriver(settings.home / "fake-sandboxes").cleanup(set()))


def test_a_user_makes_lists_and_revokes_their_own_keys(client: TestClient) -> None:
    made = client.post("/v1/api-keys")
    assert made.status_code == 201, made.text
    new = made.json()["data"]
    assert new["key"].startswith("hk_") and new["user"] == "ann"
    assert client.get("/v1/whoami", headers={"X-Api-Key": new["key"]}).status_code == 200
    listed = client.get("/v1/api-keys").json()["data"]
    assert {k["user"] for k in listed} == {"ann"} and len(listed) == 2
    assert new["id"] in {k["id"] for k in listed}
    assert new["key"] not in client.get("/v1/api-keys").text, "a key is shown only once"
    revoked = client.delete(f"/v1/api-keys/{new['id']}")
    assert revoked.status_code == 200 and revoked.json()["data"]["revoked_at"]
    assert client.get("/v1/whoami", headers={"X-Api-Key": new["key"]}).status_code == 401
    again = client.delete(f"/v1/api-keys/{new['id']}")
    assert again.status_code == 200, "revoking twice is fine"


def test_other_users_keys_are_an_admins_only(client: TestClient) -> None:
    bob = {"X-Api-Key": client.bob}  # type: ignore[attr-defined]
    admin = {"X-Api-Key": client.admin}  # type: ignore[attr-defined]
    bobs = client.get("/v1/api-keys", headers=bob).json()["data"][0]["id"]
    assert client.delete(f"/v1/api-keys/{bobs}").status_code == 404
    assert client.get("/v1/whoami", headers=bob).status_code == 200, "bob's key still works"
    for_bob = client.post("/v1/api-keys", json={"user": "bob"})
    assert for_bob.status_code == 403 and "admin" in for_bob.json()["data"]["user"]
    assert client.get("/v1/api-keys", params={"all": "true"}).status_code == 403
    everyone = client.get("/v1/api-keys", params={"all": "true"}, headers=admin).json()["data"]
    assert {"ann", "bob", "root"} <= {k["user"] for k in everyone}
    carol = client.post("/v1/api-keys", json={"user": "carol"}, headers=admin)
    assert carol.status_code == 201 and carol.json()["data"]["user"] == "carol"
    assert client.get("/v1/whoami", headers={"X-Api-Key": carol.json()["data"]["key"]}).json()[
        "data"]["user_id"] == carol.json()["data"]["user_id"]  # fmt: skip
    assert client.delete(f"/v1/api-keys/{bobs}", headers=admin).status_code == 200
    assert client.get("/v1/whoami", headers=bob).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"), [({"user": "no spaces"}, "user"), ({"colour": "red"}, "colour")]
)
def test_bad_bodies_are_400s(client: TestClient, body: dict[str, str], field: str) -> None:
    admin = {"X-Api-Key": client.admin}  # type: ignore[attr-defined]
    answer = client.post("/v1/api-keys", json=body, headers=admin)
    assert answer.status_code == 400 and field in answer.json()["data"], answer.text
