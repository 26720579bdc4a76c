"""``POST /v1/sandboxes/{id}/snapshot`` on the fake driver, in-process, on SQLite and
PostgreSQL: the template it records, its versions, the caps and the refusals. (What a
snapshot holds is checked on runc: tests/e2e/test_snapshots_runc.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
                        proxy_port=0, database_url=database_url,
                        template_max_per_user=3)  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield client
    asyncio.run(FakeDriver(settings.home / "fake-sandboxes").cleanup(set()))


def key_for(client: TestClient, user: str) -> dict[str, str]:
    services = client.app.state.services  # type: ignore[attr-defined]
    assert client.portal is not None
    return {"X-Api-Key": client.portal.call(services.identity.issue_key, user).key}


def create(client: TestClient, key: dict[str, str]) -> dict[str, Any]:
    made = client.post("/v1/sandboxes", headers=key, json={"shape": "s-1vcpu-256mb"})
    assert made.status_code == 201, made.text
    data: dict[str, Any] = made.json()["data"]
    return data


def test_a_snapshot_is_a_ready_template_of_its_owner(client: TestClient) -> None:
    rita = key_for(client, "rita")
    box = create(client, rita)
    client.put(f"/v1/sandboxes/{box['id']}/files", params={"path": "/root/a.txt"},
               headers=rita, content=b"kept")  # fmt: skip
    made = client.post(f"/v1/sandboxes/{box['id']}/snapshot", headers=rita, json={"name": "snap"})
    assert made.status_code == 201, made.text
    template = made.json()["data"]
    assert (template["status"], template["name"], template["version"]) == ("ready", "snap", 1)
    assert template["base"] == f"snapshot of sandbox {box['id']}"
    assert template["ext4_size_bytes"] >= len(b"kept")
    by_name = client.post(f"/v1/sandboxes/{box['name']}/snapshot", headers=rita,
                          json={"name": "snap"})  # fmt: skip
    assert by_name.status_code == 201 and by_name.json()["data"]["version"] == 2
    listed = client.get("/v1/templates", headers=rita).json()["data"]
    assert listed["pagination"]["total"] == 2
    assert client.get("/v1/sandboxes/" + box["id"], headers=rita).json()["data"]["status"] == (
        "running"
    )
    # A sandbox from it starts (the fake driver does not lay images under its sandboxes).
    from_snap = client.post("/v1/sandboxes", headers=rita,
                            json={"shape": "s-1vcpu-256mb", "rootfs": "snap"})  # fmt: skip
    assert from_snap.status_code == 201, from_snap.text


def test_snapshot_refusals(client: TestClient) -> None:
    rita, sam = key_for(client, "rita"), key_for(client, "sam")
    box = create(client, rita)
    url = f"/v1/sandboxes/{box['id']}/snapshot"
    assert client.post(url, headers=rita, json={"name": "Bad Name"}).json()["data"].keys() == {
        "name"
    }
    extra = client.post(url, headers=rita, json={"name": "ok", "colour": "red"})
    assert extra.status_code == 400 and "colour" in extra.json()["data"]
    assert client.post(url, headers=sam, json={"name": "mine"}).status_code == 404
    assert client.get("/v1/templates", headers=sam).json()["data"]["pagination"]["total"] == 0
    for name in ("one", "two", "three"):
        assert client.post(url, headers=rita, json={"name": name}).status_code == 201
    over = client.post(url, headers=rita, json={"name": "four"})
    assert over.status_code == 403 and "HUTCH_TEMPLATE_MAX_PER_USER" in over.text
    token = client.post(f"/v1/sandboxes/{box['id']}/access-token", headers=rita).json()["data"]
    by_token = client.post(url, headers={"X-Api-Key": token["token"]}, json={"name": "t"})
    assert by_token.status_code == 403
    client.delete(f"/v1/sandboxes/{box['id']}", headers=rita)
    gone = client.post(url, headers=rita, json={"name": "late"})
    assert gone.status_code in (404, 409) and gone.json()["status"] == "fail"
