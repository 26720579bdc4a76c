"""Tenancy: to a second user, another user's objects do not exist.

For every route of the OpenAPI document that names an object (both dialects), a request
with user B's key for user A's sandbox, network or disk gets exactly the answer (status
and body, ids aside) that a made-up id of the same shape gets; references to A's objects
inside bodies are refused the same way; B's lists, counts and errors never carry A's ids
or names; and nothing B asked for changed A's objects. The deploy API is not here: its
seed answers another wallet's project with 403 (tests/integration/test_deploy_api.py).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hutch.api.app import create_app
from hutch.host.drivers.fake import FakeDriver
from hutch.settings import Settings
from tests.support.images import fake_image
from tests.support.seaweed import SeaweedS3

BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/v1/sandboxes/{sandbox_id}"): {"name": "renamed-box"},
    ("POST", "/v1/sandboxes/{sandbox_id}/exec"): {"cmd": "echo", "args": ["hi"]},
    ("POST", "/v1/sandboxes/{sandbox_id}/networks"): {"id": "{network_id}"},
    ("POST", "/v1/sandboxes/{sandbox_id}/disks"): {"disk_id": "{disk}", "mount_path": "/d2"},
    ("POST", "/nullspace/v1/sandboxes/{sandbox_id}/timeout"): {"timeout_ms": 60_000},
    ("POST", "/nullspace/v1/sandboxes/{sandbox_id}/exec"): {"command": "echo hi"},
    ("POST", "/nullspace/v1/sandboxes/{sandbox_id}/host"): {"port": 8080},
    ("POST", "/v1/sandboxes/{sandbox_id}/processes"): {"cmd": "true"},
    ("POST", "/v1/sandboxes/{sandbox_id}/processes/{process_id}/input"): {"text": "x"},
    ("POST", "/v1/sandboxes/{sandbox_id}/processes/{process_id}/resize"): {"rows": 9, "cols": 9},
    ("POST", "/v1/sandboxes/{sandbox_id}/processes/{process_id}/signal"): {"signal": "TERM"},
    ("POST", "/v1/sandboxes/{sandbox_id}/processes/{process_id}/wait"): {"timeout": 0},
}
QUERIES: dict[tuple[str, str], dict[str, str]] = {
    ("PUT", "/v1/sandboxes/{sandbox_id}/files"): {"path": "/tmp/x"},
    ("GET", "/v1/sandboxes/{sandbox_id}/files"): {"path": "/etc/hostname"},
    ("DELETE", "/v1/sandboxes/{sandbox_id}/disks/{disk_id}"): {"mount_path": "/data"},
}
# Destroying routes go last, so every other route meets A's objects as they were.
DESTRUCTIVE = ("DELETE",)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    fake_image(tmp_path / "images", "devbox:1")
    settings = Settings(
        home=tmp_path / "home", images_dir=tmp_path / "images", driver="fake", proxy_port=0
    )
    with TestClient(create_app(settings)) as client:
        yield client
    asyncio.run(FakeDriver(settings.home / "fake-sandboxes").cleanup(set()))


def key_for(client: TestClient, user: str) -> dict[str, str]:
    services = client.app.state.services  # type: ignore[attr-defined]
    assert client.portal is not None
    issued = client.portal.call(services.identity.issue_key, user)
    return {"X-Api-Key": issued.key}


def made_up(ident: str) -> str:
    """An id of the same shape that names nothing."""
    return ident[:-6] + ("zzzzzz" if ident[-6:].islower() else "ZZZZZZ")


def normalised(text: str, *idents: str) -> str:
    for ident in idents:
        text = text.replace(ident, "<ID>")
    return re.sub(r"req_[0-9A-Z]+", "<REQ>", text)


def test_another_users_objects_answer_as_missing_ones(client: TestClient, s3: SeaweedS3) -> None:
    alice, bob = key_for(client, "alice"), key_for(client, "bob")
    box = client.post(
        "/v1/sandboxes", headers=alice, json={"shape": "s-1vcpu-256mb", "name": "alpha-box"}
    ).json()["data"]
    net = client.post("/v1/networks", headers=alice, json={"name": "alpha-net"}).json()["data"]
    bucket = s3.make_bucket("tenancy-bucket")
    disk = client.post(
        "/v1/disks",
        headers=alice,
        json={
            "name": "alpha-disk",
            "kind": "s3",
            "config": {"bucket": bucket, "endpoint": s3.endpoint, "use_path_style": True},
            "credentials": {"access_key": s3.access_key, "secret_key": s3.secret_key},
        },
    ).json()["data"]
    assert (
        client.post(
            f"/v1/sandboxes/{box['id']}/networks", headers=alice, json={"id": net["id"]}
        ).status_code
        == 200
    )
    assert (
        client.post(
            f"/v1/sandboxes/{box['id']}/disks",
            headers=alice,
            json={"disk_id": disk["id"], "mount_path": "/data"},
        ).status_code
        == 200
    )
    started = client.post(
        f"/v1/sandboxes/{box['id']}/processes", headers=alice, json={"cmd": "sleep", "args": ["60"]}
    )
    assert started.status_code == 201, started.text
    real = {
        "sandbox_id": box["id"],
        "network_id": net["id"],
        "disk": disk["id"],
        "disk_id": disk["id"],
        "ip": box["ip"],
        "process_id": started.json()["data"]["id"],
    }
    fake = {name: made_up(value) for name, value in real.items()}
    fake["ip"] = "10.89.255.253"
    secrets = [
        box["id"],
        net["id"],
        disk["id"],
        box["ip"],
        "alpha-box",
        "alpha-net",
        "alpha-disk",
        bucket,
    ]

    document = client.get("/openapi.json").json()
    routes = [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if "{" in path and not path.startswith("/agent")
    ]
    routes.sort(key=lambda route: route[0] in DESTRUCTIVE)
    assert len(routes) >= 23
    by_name = [
        ("GET", "/v1/sandboxes/{sandbox_id}", "alpha-box"),
        ("GET", "/v1/networks/{network_id}", "alpha-net"),
        ("GET", "/v1/disks/{disk}", "alpha-disk"),
    ]

    def ask(method: str, path: str, values: dict[str, str]) -> tuple[int, str]:
        url = path.format(**{k: v for k, v in values.items() if "{" + k + "}" in path})
        body = BODIES.get((method, path))
        if isinstance(body, dict):
            body = {
                k: (values[v[1:-1]] if isinstance(v, str) and v.startswith("{") else v)
                for k, v in body.items()
            }
        answer = client.request(
            method, url, headers=bob, json=body, params=QUERIES.get((method, path))
        )
        return answer.status_code, normalised(answer.text, *real.values(), *fake.values())

    for method, path in routes:
        theirs, missing = ask(method, path, real), ask(method, path, fake)
        assert theirs == missing, (method, path, theirs, missing)
        assert theirs[0] in (400, 404), (method, path, theirs)
        assert not any(secret in theirs[1] for secret in secrets), (method, path, theirs)
    for method, path, name in by_name:
        param = path.split("{")[1].rstrip("}")
        theirs, missing = ask(method, path, {param: name}), ask(method, path, {param: "omega-x"})
        assert theirs[0] == missing[0] == 404
        assert normalised(theirs[1], name) == normalised(missing[1], "omega-x")

    # References inside bodies: A's network or disk is as unknown to B as a made-up one.
    for field, value in (
        ("networks", [{"id": net["id"]}]),
        ("disks", [{"disk_id": disk["id"], "mount_path": "/d"}]),
    ):
        made = {"shape": "s-1vcpu-256mb", field: value}
        theirs = client.post("/v1/sandboxes", headers=bob, json=made)
        assert theirs.status_code == 400
        assert not any(
            secret in theirs.text.replace(value[0].get("id") or value[0]["disk_id"], "")
            for secret in secrets[3:]
        )

    # B's lists and counts hold nothing of A's.
    for url in (
        "/v1/sandboxes",
        "/v1/networks",
        "/v1/disks",
        "/v1/whoami",
        "/nullspace/v1/sandboxes",
    ):
        text = client.get(url, headers=bob).text
        assert not any(secret in text for secret in secrets), (url, text)
    assert client.get("/v1/sandboxes", headers=bob).json()["data"]["pagination"]["total"] == 0

    # And A's objects are as they were.
    mine = client.get(f"/v1/sandboxes/{box['id']}", headers=alice).json()["data"]
    assert (mine["status"], mine["name"]) == ("running", "alpha-box")
    members = client.get(f"/v1/networks/{net['id']}", headers=alice).json()["data"]["members"]
    assert [m["sandbox_id"] for m in members] == [box["id"]]
    attached = client.get(f"/v1/sandboxes/{box['id']}/disks", headers=alice).json()["data"]["data"]
    assert [a["mount_path"] for a in attached] == ["/data"]
