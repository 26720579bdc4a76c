"""``POST /v1/sandboxes/{id}/ssh-pubkeys`` and the tunnel's refusals, in-process on the fake
driver, on SQLite and PostgreSQL: keys kept normalised and deduplicated (also when added
at once by concurrent requests), bad keys named by index, tenancy, and a fake sandbox
that never touches the host's own root. The keys inside real sandboxes, ssh and the
tunnels are in tests/e2e/test_ssh_runc.py."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hutch.api.app import create_app
from hutch.host.drivers.fake import FakeDriver
from hutch.settings import Settings
from tests.support.images import fake_image

UPGRADE = {"Connection": "Upgrade", "Upgrade": "tcp-tunnel"}


@pytest.fixture(scope="module")
def public_keys(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    directory = tmp_path_factory.mktemp("keys")
    made = []
    for number in range(6):
        path = directory / f"k{number}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"k{number}",
                        "-f", str(path)], check=True)  # fmt: skip
        made.append(Path(f"{path}.pub").read_text().strip())
    return made


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    fake_image(tmp_path / "images", "devbox:1")
    settings = Settings(home=tmp_path / "home", images_dir=tmp_path / "images", driver="fake",
                        proxy_enabled=False, database_url=database_url)  # fmt: skip
    with TestClient(create_app(settings)) as client:
        client.headers["X-Api-Key"] = key_for(client, "alice")
        yield client
    asyncio.run(FakeDriver(settings.home / "fake-sandboxes").cleanup(set()))


def key_for(client: TestClient, user: str) -> str:
    services = client.app.state.services  # type: ignore[attr-defined]
    return str(client.portal.call(services.identity.issue_key, user).key)  # type: ignore[union-attr]


def sandbox(client: TestClient) -> str:
    made = client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
    assert made.status_code == 201, made.text
    return str(made.json()["data"]["id"])


def test_keys_are_kept_normalised_and_counted_once(
    client: TestClient, public_keys: list[str]
) -> None:
    box = sandbox(client)
    url = f"/v1/sandboxes/{box}/ssh-pubkeys"
    kind, blob, _ = public_keys[0].split()
    answer = client.post(url, json={"keys": [f"  {kind}   {blob}  laptop ", public_keys[1]]})
    assert answer.json() == {"status": "success", "data": {"count": 2}}
    again = client.post(url, json={"keys": [public_keys[0], public_keys[2]]})
    assert again.json()["data"]["count"] == 3
    view = client.get(f"/v1/sandboxes/{box}").json()["data"]
    assert view["ssh_pubkeys"] == [f"{kind} {blob} laptop", public_keys[1], public_keys[2]]
    # The fake driver's commands would run on the host: nothing was written there.
    written = Path("/root/.ssh/authorized_keys")
    assert not written.exists() or blob not in written.read_text()


def test_keys_added_at_once_are_all_kept(client: TestClient, public_keys: list[str]) -> None:
    box = sandbox(client)
    url = f"/v1/sandboxes/{box}/ssh-pubkeys"
    with ThreadPoolExecutor(len(public_keys)) as pool:
        answers = list(pool.map(lambda key: client.post(url, json={"keys": [key]}), public_keys))
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    assert sorted(a.json()["data"]["count"] for a in answers) == list(range(1, 7))
    assert len(client.get(f"/v1/sandboxes/{box}").json()["data"]["ssh_pubkeys"]) == 6


def test_bad_requests_say_what_is_wrong(client: TestClient, public_keys: list[str]) -> None:
    box = sandbox(client)
    url = f"/v1/sandboxes/{box}/ssh-pubkeys"
    cases = [
        ({"keys": [public_keys[0], "ssh-ed25519 AAAA"]}, "keys.1"),
        ({"keys": [public_keys[0], 7]}, "keys.1"),
        ({"keys": []}, "keys"),
        ({"keys": [public_keys[0]], "key": "x"}, "key"),
        ({}, "keys"),
    ]
    for body, field in cases:
        answer = client.post(url, json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["status"] == "fail" and field in answer.json()["data"], answer.text
    assert client.get(f"/v1/sandboxes/{box}").json()["data"]["ssh_pubkeys"] == []


def test_another_users_sandbox_is_not_found_and_a_destroyed_one_takes_no_keys(
    client: TestClient, public_keys: list[str]
) -> None:
    box = sandbox(client)
    stranger = {"X-Api-Key": key_for(client, "mallory")}
    body = {"keys": [public_keys[0]]}
    theirs = client.post(f"/v1/sandboxes/{box}/ssh-pubkeys", json=body, headers=stranger)
    missing = client.post("/v1/sandboxes/sb_nosuch/ssh-pubkeys", json=body)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["data"].keys() == missing.json()["data"].keys()
    assert client.post(f"/v1/sandboxes/{box}/ssh-pubkeys", json=body,
                       headers={"X-Api-Key": "hk_wrong"}).status_code == 401  # fmt: skip
    client.delete(f"/v1/sandboxes/{box}")
    gone = client.post(f"/v1/sandboxes/{box}/ssh-pubkeys", json=body)
    assert gone.status_code == 409 and "status" in gone.json()["data"]


def test_a_tunnel_needs_an_upgrade_this_server_can_make(client: TestClient) -> None:
    box = sandbox(client)
    plain = client.post(f"/v1/sandboxes/{box}/tunnel/22")
    assert plain.status_code == 400 and "Upgrade: tcp-tunnel" in plain.json()["data"]["Upgrade"]
    # The test client is not hutch's HTTP server: it cannot hand the socket over.
    asked = client.post(f"/v1/sandboxes/{box}/tunnel/22", headers=UPGRADE)
    assert asked.status_code == 400 and "cannot switch" in asked.json()["data"]["Upgrade"]
