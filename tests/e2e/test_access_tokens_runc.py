"""Per-sandbox access tokens (CREATEOS-API.md §12) against a real ``hutch serve`` on runc.

The owner makes a ``skp_sb_…`` token for one sandbox and hands it to a worker; with it the
worker runs commands, moves files, uses processes, pauses, resumes and destroys that
sandbox, and nothing else: another sandbox is a 404 like a made-up id, account routes are
a 403, and a disabled or rotated token is refused on the very next request.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_sandboxes_runc import create, runc_server
from tests.support.server import HutchProcess, remove_instance

NOT_FOUND = "sandbox access token not found"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    process = runc_server(tmp_path_factory.mktemp("tokens") / "home", images)
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture
def owner(server: HutchProcess) -> Iterator[httpx.Client]:
    key = server.new_key(f"o{time.monotonic_ns()}")
    with server.client(key) as client:
        yield client


def as_token(server: HutchProcess, token: str, *, bearer: bool = False) -> httpx.Client:
    header = {"Authorization": f"Bearer {token}"} if bearer else {"X-Api-Key": token}
    return httpx.Client(base_url=server.url, headers=header, timeout=30)


def issue(owner: httpx.Client, sandbox_id: str) -> str:
    made = owner.post(f"/v1/sandboxes/{sandbox_id}/access-token")
    assert made.status_code == 200, made.text
    token: str = made.json()["data"]["token"]
    return token


def exec_echo(client: httpx.Client, sandbox: str, word: str = "hi") -> httpx.Response:
    return client.post(f"/v1/sandboxes/{sandbox}/exec", json={"cmd": "echo", "args": [word]})


def fail_data(answer: httpx.Response, status: int) -> Any:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["status"] == "fail", body
    return body["data"]


def test_the_owner_creates_shows_rotates_and_disables_a_token(
    server: HutchProcess, owner: httpx.Client
) -> None:
    box = create(owner)
    base = f"/v1/sandboxes/{box['id']}/access-token"
    assert owner.get(base).json() == {"status": "success", "data": {
        "enabled": False, "token_hint": None, "created_at": None, "rotated_at": None}}  # fmt: skip
    assert fail_data(owner.post(f"{base}/rotate"), 404) == NOT_FOUND

    made = owner.post(base)
    assert made.status_code == 200, made.text
    first = made.json()["data"]
    assert first["token"].startswith("skp_sb_") and len(first["token"]) > 40
    assert (first["enabled"], first["rotated_at"]) == (True, None)
    assert "access_token" in fail_data(owner.post(base), 409)

    shown = owner.get(base).json()["data"]
    token = first["token"]
    assert shown == {"enabled": True, "token_hint": f"{token[:9]}...{token[-4:]}",
                     "created_at": first["created_at"], "rotated_at": None}  # fmt: skip
    # Stored as its SHA-256 only: the plaintext is nowhere in the store.
    with sqlite3.connect(server.home / "hutch.db") as db:
        stored = db.execute(
            "SELECT token_hash FROM sandbox_access_tokens WHERE sandbox_id = ?", (box["id"],)
        ).fetchone()
    assert stored == (hashlib.sha256(token.encode()).hexdigest(),)
    assert token.encode() not in (server.home / "hutch.db").read_bytes()

    rotated = owner.post(f"{base}/rotate")
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["data"]
    assert second["token"] != token and second["enabled"] is True
    assert second["created_at"] == first["created_at"] and second["rotated_at"]
    assert owner.get(base).json()["data"]["rotated_at"] == second["rotated_at"]

    for _ in range(2):  # disabling is idempotent
        gone = owner.delete(base)
        assert gone.status_code == 200 and gone.json()["data"] == {"enabled": False}
    assert owner.get(base).json()["data"]["enabled"] is False
    assert fail_data(owner.post(f"{base}/rotate"), 404) == NOT_FOUND
    again = owner.post(base)
    assert again.status_code == 200 and again.json()["data"]["token"] not in (token, second)
    owner.delete(f"/v1/sandboxes/{box['id']}")


def test_another_users_sandbox_has_no_token_routes(
    server: HutchProcess, owner: httpx.Client
) -> None:
    box = create(owner)
    key = server.new_key("stranger")
    with server.client(key) as stranger:
        for method, suffix in (("POST", ""), ("GET", ""), ("POST", "/rotate"), ("DELETE", "")):
            theirs = stranger.request(method, f"/v1/sandboxes/{box['id']}/access-token{suffix}")
            missing = stranger.request(method, f"/v1/sandboxes/sb_NOPE/access-token{suffix}")
            assert theirs.status_code == missing.status_code == 404
            assert theirs.json()["data"].keys() == missing.json()["data"].keys() == {"sandbox"}
    assert owner.get(f"/v1/sandboxes/{box['id']}/access-token").json()["data"]["enabled"] is False
    owner.delete(f"/v1/sandboxes/{box['id']}")


def test_a_token_drives_its_own_sandbox_and_nothing_else(
    server: HutchProcess, owner: httpx.Client
) -> None:
    box, other = create(owner, name="worker-box"), create(owner)
    token = issue(owner, box["id"])
    with as_token(server, token) as worker, as_token(server, token, bearer=True) as bearer:
        # Its own sandbox: exec, files, processes, get, pause/resume (by id or name).
        ran = exec_echo(worker, box["id"], "from-the-worker")
        assert ran.status_code == 200 and ran.json()["data"]["result"]["stdout"] == (
            "from-the-worker\n"
        )
        assert exec_echo(bearer, "worker-box").json()["data"]["result"]["stdout"] == "hi\n"
        put = worker.put(f"/v1/sandboxes/{box['id']}/files", params={"path": "/tmp/w/x.txt"},
                         content=b"written by the worker")  # fmt: skip
        assert put.status_code == 200, put.text
        read = worker.get(f"/v1/sandboxes/{box['id']}/files", params={"path": "/tmp/w/x.txt"})
        assert read.content == b"written by the worker"
        started = worker.post(f"/v1/sandboxes/{box['id']}/processes",
                              json={"cmd": "sleep", "args": ["30"]})  # fmt: skip
        assert started.status_code == 201, started.text
        assert worker.get(f"/v1/sandboxes/{box['id']}/processes").status_code == 200
        assert worker.get(f"/v1/sandboxes/{box['id']}").json()["data"]["name"] == "worker-box"
        paused = worker.post(f"/v1/sandboxes/{box['id']}/pause")
        assert paused.status_code in (200, 202), paused.text
        assert owner.get(f"/v1/sandboxes/{box['id']}").json()["data"]["status"] == "paused"
        assert exec_echo(worker, box["id"]).status_code == 409
        resumed = worker.post(f"/v1/sandboxes/{box['id']}/resume")
        assert resumed.status_code in (200, 202), resumed.text
        assert exec_echo(worker, box["id"]).status_code == 200

        # The owner's other sandbox is a 404 exactly like an id that names nothing.
        theirs = exec_echo(worker, other["id"])
        made_up = exec_echo(worker, other["id"][:-6] + "ZZZZZZ")
        assert theirs.status_code == made_up.status_code == 404
        assert theirs.text.replace(other["id"], "X") == made_up.text.replace(
            other["id"][:-6] + "ZZZZZZ", "X"
        )
        assert worker.get(f"/v1/sandboxes/{other['id']}").status_code == 404
        assert worker.delete(f"/v1/sandboxes/{other['id']}").status_code == 404

        # Account routes and the sandbox's owner-only routes are a 403, in each envelope.
        refused = [
            worker.get("/v1/sandboxes"),
            worker.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"}),
            worker.get("/v1/whoami"),
            worker.get("/v1/networks"),
            worker.post("/v1/networks", json={"name": "worker-net"}),
            worker.get("/v1/disks"),
            worker.get(f"/v1/sandboxes/by-ip/{box['ip']}"),
            worker.get(f"/v1/sandboxes/{box['id']}/access-token"),
            worker.post(f"/v1/sandboxes/{box['id']}/access-token/rotate"),
            worker.delete(f"/v1/sandboxes/{box['id']}/access-token"),
            worker.patch(f"/v1/sandboxes/{box['id']}", json={"ingress_enabled": True}),
            bearer.get("/v1/sandboxes"),
        ]
        for answer in refused:
            assert "token" in fail_data(answer, 403), answer.request.url
        nullspace = bearer.get("/nullspace/v1/sandboxes")
        assert nullspace.status_code == 403 and nullspace.json()["error"]["code"] == "forbidden"
        ran = bearer.post(f"/nullspace/v1/sandboxes/{box['id']}/exec", json={"command": "echo ns"})
        assert ran.status_code == 200 and ran.json()["stdout"] == "ns\n"
        elsewhere = bearer.post(f"/nullspace/v1/sandboxes/{other['id']}/exec",
                                json={"command": "echo ns"})  # fmt: skip
        assert elsewhere.status_code == 404
        # Nothing the worker was refused happened.
        assert owner.get(f"/v1/sandboxes/{box['id']}").json()["data"]["ingress_enabled"] is False
        assert owner.get("/v1/networks").json()["data"]["pagination"]["total"] == 0
        assert owner.get(f"/v1/sandboxes/{box['id']}/access-token").json()["data"]["enabled"]

        # Destroying its sandbox is allowed, and the token dies with it.
        destroyed = worker.delete(f"/v1/sandboxes/{box['id']}")
        assert destroyed.status_code == 200, destroyed.text
        assert owner.get(f"/v1/sandboxes/{box['id']}").json()["data"]["status"] == "destroyed"
        assert exec_echo(worker, box["id"]).status_code == 401
        assert worker.get(f"/v1/sandboxes/{box['id']}").status_code == 401
    assert exec_echo(owner, other["id"]).status_code == 200
    owner.delete(f"/v1/sandboxes/{other['id']}")


def test_revocation_takes_effect_on_the_next_request(
    server: HutchProcess, owner: httpx.Client
) -> None:
    box = create(owner)
    base = f"/v1/sandboxes/{box['id']}/access-token"
    token = issue(owner, box["id"])
    with as_token(server, token) as worker:
        assert exec_echo(worker, box["id"]).status_code == 200
        rotated = owner.post(f"{base}/rotate").json()["data"]["token"]
        assert fail_data(exec_echo(worker, box["id"]), 401)
    with as_token(server, rotated) as worker:
        assert exec_echo(worker, box["id"]).status_code == 200
        assert owner.delete(base).status_code == 200
        assert fail_data(exec_echo(worker, box["id"]), 401)
        assert fail_data(worker.get(f"/v1/sandboxes/{box['id']}"), 401)
    # A token that was never issued, or only looks like one, is a 401 too.
    for bogus in ("skp_sb_" + "A" * 43, "skp_sb_", "skp_owner-key"):
        with as_token(server, bogus) as worker:
            assert exec_echo(worker, box["id"]).status_code == 401
    assert exec_echo(owner, box["id"]).status_code == 200
    owner.delete(f"/v1/sandboxes/{box['id']}")
