"""/nullspace/v1 in-process on the fake driver: seed 004's sandbox, exec and error shapes.
The seed's curl script and fetch examples against real sandboxes are in tests/e2e."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from fastapi.testclient import TestClient

from tests.integration.test_sandboxes_api import _key, app_settings, client

__all__ = ["app_settings", "client"]  # fixtures


def bearer(client: TestClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.headers['X-Api-Key']}"}


def test_create_get_list_delete(client: TestClient) -> None:
    auth = bearer(client)
    client.headers.pop("X-Api-Key")
    made = client.post("/nullspace/v1/sandboxes", json={"template": "base", "timeout_ms": 300000},
                       headers=auth)  # fmt: skip
    assert made.status_code == 201, made.text
    box = made.json()
    assert {"id", "template", "status", "created_at", "expires_at"} <= set(box)
    assert box["template"] == "base" and box["status"] == "running"
    lifetime = datetime.fromisoformat(box["expires_at"]) - datetime.fromisoformat(box["created_at"])
    assert timedelta(seconds=299) < lifetime < timedelta(seconds=301)
    assert client.get(f"/nullspace/v1/sandboxes/{box['id']}", headers=auth).json() == box
    listed = client.get("/nullspace/v1/sandboxes", headers=auth).json()
    assert listed == {"sandboxes": [box], "total": 1}
    gone = client.delete(f"/nullspace/v1/sandboxes/{box['id']}", headers=auth)
    assert gone.json() == {"id": box["id"], "status": "destroyed"}


def test_exec_shell_argv_and_background(client: TestClient) -> None:
    auth = bearer(client)
    box = client.post("/nullspace/v1/sandboxes", json={}, headers=auth).json()
    url = f"/nullspace/v1/sandboxes/{box['id']}/exec"
    shell = client.post(url, headers=auth, json={"command": "echo hello from nullspace",
                                                 "shell": True, "timeout_secs": 30})  # fmt: skip
    assert shell.status_code == 200, shell.text
    assert shell.json()["stdout"] == "hello from nullspace\n" and shell.json()["exit_code"] == 0
    argv = client.post(url, headers=auth, json={"command": "printf '%s|' 'a b' \"$HOME\""})
    assert argv.json()["stdout"] == "a b|$HOME|", "split like a shell, run without one"
    unbalanced = client.post(url, headers=auth, json={"command": "echo 'oops"})
    assert unbalanced.status_code == 400
    assert unbalanced.json()["error"]["code"] == "invalid_request"

    started = time.monotonic()
    background = client.post(url, headers=auth, json={"command": "sleep 30", "shell": True,
                                                      "background": True})  # fmt: skip
    assert background.status_code == 200 and time.monotonic() - started < 5
    handle = background.json()
    assert handle["background"] is True and handle["pid"] > 0
    alive = client.post(url, headers=auth, json={"command": f"kill -0 {handle['pid']}",
                                                 "shell": True})  # fmt: skip
    assert alive.json()["exit_code"] == 0, "still running after the request"
    client.post(url, headers=auth, json={"command": f"kill {handle['pid']}", "shell": True})


def test_timeouts_destroy_and_can_be_extended(client: TestClient) -> None:
    auth = bearer(client)
    short = client.post("/nullspace/v1/sandboxes", json={"timeout_ms": 1500}, headers=auth).json()
    kept = client.post("/nullspace/v1/sandboxes", json={"timeout_ms": 1500}, headers=auth).json()
    extended = client.post(f"/nullspace/v1/sandboxes/{kept['id']}/timeout",
                           json={"timeout_ms": 60000}, headers=auth)  # fmt: skip
    assert extended.status_code == 200 and extended.json()["expires_at"] > kept["expires_at"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status = client.get(f"/nullspace/v1/sandboxes/{short['id']}", headers=auth).json()
        if status["status"] == "destroyed":
            break
        time.sleep(0.2)
    assert status["status"] == "destroyed"
    still = client.get(f"/nullspace/v1/sandboxes/{kept['id']}", headers=auth).json()
    assert still["status"] == "running"
    for bad in ({"timeout_ms": 0}, {"timeout_ms": 10**12}, {"template": "gpu"}):
        answer = client.post("/nullspace/v1/sandboxes", json=bad, headers=auth)
        assert answer.status_code == 400, bad
        error = answer.json()["error"]
        assert set(error) == {"code", "message", "request_id"} and error["request_id"]
    unknown = client.post("/nullspace/v1/sandboxes", json={"template": "gpu"}, headers=auth)
    assert (
        "base" in unknown.json()["error"]["message"]
        and "node" in unknown.json()["error"]["message"]
    )


def test_errors_use_the_plain_envelope(client: TestClient) -> None:
    auth = bearer(client)
    client.headers.pop("X-Api-Key")
    missing = client.get("/nullspace/v1/sandboxes")
    assert missing.status_code == 401 and set(missing.json()) == {"error"}
    box = client.post("/nullspace/v1/sandboxes", json={}, headers=auth).json()
    other = {"Authorization": f"Bearer {_key(client, 'mallory')}"}
    theirs = client.get(f"/nullspace/v1/sandboxes/{box['id']}", headers=other)
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "not_found"
    assert client.delete(f"/nullspace/v1/sandboxes/{box['id']}", headers=other).status_code == 404
