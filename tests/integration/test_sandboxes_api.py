"""/v1/sandboxes in-process on the fake driver: the contract, validation and tenancy.

The same routes on real runc sandboxes are in tests/e2e/test_sandboxes_runc.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
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
def app_settings(tmp_path: Path) -> Settings:
    fake_image(tmp_path / "images", "devbox:1")
    return Settings(
        home=tmp_path / "home",
        images_dir=tmp_path / "images",
        driver="fake",
        max_running_per_user=3,
        exec_output_cap_bytes=2048,
        monitor_interval_s=0.2,
        proxy_enabled=False,
        auto_pause_min_s=1,
    )


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings)) as client:
        client.headers["X-Api-Key"] = _key(client, "alice")
        yield client
    # The app leaves sandboxes running when it stops (a restart adopts them); tests don't.
    asyncio.run(FakeDriver(app_settings.home / "fake-sandboxes").cleanup(set()))


def _key(client: TestClient, user: str) -> str:
    services = client.app.state.services  # type: ignore[attr-defined]
    issued = client.portal.call(services.identity.issue_key, user)  # type: ignore[union-attr]
    return str(issued.key)


def create(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb", **body})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def run(client: TestClient, sandbox: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/sandboxes/{sandbox}/exec", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def test_create_returns_the_whole_contract(client: TestClient) -> None:
    data = create(client, envs={"SECRET": "s3cr3t"}, auto_pause_after_seconds=600)
    assert set(data) >= {
        "id", "name", "status", "ip", "shape", "rootfs", "vcpu", "mem_mib", "disk_mib",
        "created_at", "running_at", "paused_at", "last_resumed_at", "destroyed_at", "spawn_ms",
        "envs", "egress", "ingress_enabled", "ingress_url_template",
        "auto_pause_after_seconds", "created_by",
    }  # fmt: skip
    assert data["id"].startswith("sb_") and data["status"] == "running"
    assert data["shape"] == "s-1vcpu-256mb" and (data["vcpu"], data["mem_mib"]) == (1, 256)
    assert data["rootfs"] == "devbox:1" and data["disk_mib"] == 10240
    assert isinstance(data["spawn_ms"], int) and data["spawn_ms"] >= 0
    assert data["envs"] == ["SECRET"] and "s3cr3t" not in str(data)
    assert "-" in data["name"] and data["ip"].startswith("10.89.")
    assert run(client, data["id"], cmd="echo $SECRET")["result"]["stdout"] == "s3cr3t\n"


def test_get_by_id_name_and_ip_list_and_filter(client: TestClient) -> None:
    first = create(client, name="first-box")
    second = create(client)
    for ident in (first["id"], "first-box"):
        assert client.get(f"/v1/sandboxes/{ident}").json()["data"]["id"] == first["id"]
    by_ip = client.get(f"/v1/sandboxes/by-ip/{second['ip']}").json()["data"]
    assert by_ip["id"] == second["id"]
    listed = client.get("/v1/sandboxes", params={"limit": 1}).json()["data"]
    assert listed["pagination"] == {"total": 2, "limit": 1, "offset": 0, "count": 1}
    assert listed["data"][0]["id"] == second["id"], "newest first"
    client.post(f"/v1/sandboxes/{first['id']}/pause")
    paused = client.get("/v1/sandboxes", params={"status": "paused"}).json()["data"]["data"]
    assert [s["id"] for s in paused] == [first["id"]]
    bad = client.get("/v1/sandboxes", params={"status": "sleeping"})
    assert bad.status_code == 400 and "status" in bad.json()["data"]


def test_names_are_unique_per_user_and_reusable_after_destroy(client: TestClient) -> None:
    box = create(client, name="web")
    clash = client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb", "name": "web"})
    assert clash.status_code == 409 and clash.json()["data"] == {
        "name": "you already have a sandbox named 'web'"
    }
    assert client.delete(f"/v1/sandboxes/{box['id']}").json()["data"] == {
        "id": box["id"],
        "status": "destroyed",
    }
    assert create(client, name="web")["name"] == "web"
    history = client.get(f"/v1/sandboxes/{box['id']}").json()["data"]
    assert history["status"] == "destroyed" and history["destroyed_at"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "shape"),
        ({"shape": "s-64vcpu"}, "shape"),
        ({"shape": "s-1vcpu-256mb", "rootfs": "node"}, "rootfs"),
        ({"shape": "s-1vcpu-256mb", "name": "Bad_Name"}, "name"),
        ({"shape": "s-1vcpu-256mb", "name": "-x"}, "name"),
        ({"shape": "s-1vcpu-256mb", "disk_mib": 1}, "disk_mib"),
        ({"shape": "s-1vcpu-256mb", "envs": {"1BAD": "x"}}, "envs"),
        ({"shape": "s-1vcpu-256mb", "envs": {"A": 5}}, "envs.A"),
        ({"shape": "s-1vcpu-256mb", "auto_pause_after_seconds": -1}, "auto_pause_after_seconds"),
        ({"shape": "s-1vcpu-256mb", "networks": [{"id": "backend"}]}, "networks"),
        ({"shape": "s-1vcpu-256mb", "host_id": "10.1.2.3"}, "host_id"),
        ({"shape": "s-1vcpu-256mb", "colour": "red"}, "colour"),
        ({"shape": ["s-1vcpu-256mb"]}, "shape"),
    ],
)
def test_bad_creates_name_the_field_and_leave_nothing(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/sandboxes", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["status"] == "fail"
    assert field in response.json()["data"], response.json()
    assert client.get("/v1/sandboxes").json()["data"]["pagination"]["total"] == 0


def test_an_unknown_rootfs_is_a_404_like_a_missing_template(client: TestClient) -> None:
    # A rootfs names a catalog image or one of the user's templates (CreateOS §3.1: an
    # unknown template is a 404); "node" above is a known image not built here (400).
    response = client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb", "rootfs": "windows"})
    assert response.status_code == 404 and response.json()["status"] == "fail"
    assert "windows" in response.json()["data"]["rootfs"]
    assert client.get("/v1/sandboxes").json()["data"]["pagination"]["total"] == 0


def test_the_running_cap_answers_429_and_counts_only_running(client: TestClient) -> None:
    boxes = [create(client) for _ in range(3)]
    over = client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
    assert over.status_code == 429 and over.json()["status"] == "fail"
    assert over.headers["Retry-After"]
    client.post(f"/v1/sandboxes/{boxes[0]['id']}/pause")
    fourth = create(client)
    resume = client.post(f"/v1/sandboxes/{boxes[0]['id']}/resume")
    assert resume.status_code == 429
    client.delete(f"/v1/sandboxes/{fourth['id']}")
    assert client.post(f"/v1/sandboxes/{boxes[0]['id']}/resume").status_code == 202


def test_pause_and_resume_are_idempotent_and_block_exec(client: TestClient) -> None:
    box = create(client)
    for _ in range(3):  # the server now knows the sandbox runs; a pause must still count
        assert run(client, box["id"], cmd="true")["result"]["exit_code"] == 0
    for expected in (202, 200):  # a transition, then an idempotent no-op
        paused = client.post(f"/v1/sandboxes/{box['id']}/pause")
        assert paused.status_code == expected and paused.headers["X-Poll-After"] == "1"
        assert paused.json()["data"]["status"] == "paused"
    blocked = client.post(f"/v1/sandboxes/{box['id']}/exec", json={"cmd": "true"})
    assert blocked.status_code == 409
    assert "resume it first" in blocked.json()["data"]["status"]
    files = client.get(f"/v1/sandboxes/{box['id']}/files", params={"path": "/x"})
    assert files.status_code == 409
    for expected in (202, 200):
        resumed = client.post(f"/v1/sandboxes/{box['id']}/resume")
        assert resumed.status_code == expected and resumed.json()["data"]["status"] == "running"
    data = client.get(f"/v1/sandboxes/{box['id']}").json()["data"]
    assert data["paused_at"] and data["last_resumed_at"]
    assert run(client, box["id"], cmd="echo ok")["result"]["stdout"] == "ok\n"
    client.delete(f"/v1/sandboxes/{box['id']}")
    gone = client.post(f"/v1/sandboxes/{box['id']}/exec", json={"cmd": "true"})
    assert gone.status_code == 409 and "destroyed" in gone.json()["data"]["status"]


def test_exec_argv_stdin_env_cwd_and_errors(client: TestClient) -> None:
    box = create(client)
    result = run(client, box["id"], cmd="printf", args=["%s|", "a b", "$HOME"])["result"]
    assert result["stdout"] == "a b|$HOME|", "with args there is no shell"
    assert run(client, box["id"], cmd="cat", args=[], stdin="piped")["result"]["stdout"] == "piped"
    result = run(client, box["id"], cmd="echo $X; exit 7", env={"X": "from-env"})["result"]
    assert (result["stdout"], result["exit_code"], result["error"]) == ("from-env\n", 7, None)
    missing = run(client, box["id"], cmd="no-such-program", args=[])["result"]
    assert missing["exit_code"] is None and "not found" in missing["error"]
    timed = run(client, box["id"], cmd="sleep 30", timeout_secs=0.3)
    assert timed["result"]["error"] == "timeout: killed after 0.3 s"
    bad_bodies = [
        {"cmd": ""},
        {"cmd": "x", "cwd": "rel"},
        {"cmd": "x", "timeout_secs": -1},
        {"cmd": "x", "timeout_secs": 99999},
        {"cmd": "x", "env": {"a-b": "1"}},
    ]
    for body in bad_bodies:
        response = client.post(f"/v1/sandboxes/{box['id']}/exec", json=body)
        assert response.status_code == 400, body
    # A NUL byte no program can be given: a 400 naming the field (it was the sandbox's
    # refusal, a 503), before anything reaches the sandbox.
    for field, body in (("cmd", {"cmd": "echo a\0b"}), ("args", {"cmd": "echo", "args": ["a\0b"]})):
        response = client.post(f"/v1/sandboxes/{box['id']}/exec", json=body)
        assert response.status_code == 400, response.text
        assert "NUL" in response.json()["data"][field], response.text


def test_binary_and_oversized_output(client: TestClient) -> None:
    box = create(client)
    result = run(client, box["id"], cmd="printf '\\377\\376ok'")["result"]
    assert result["stdout"] == "\ufffd\ufffdok"
    big = run(client, box["id"], cmd="head -c 5000 /dev/zero | tr '\\0' x")["result"]["stdout"]
    assert big.startswith("x" * 2048)
    assert "[hutch: stdout truncated: 2952 more bytes over the 2048-byte cap" in big


def test_streaming_exec_delivers_everything_in_order(client: TestClient) -> None:
    box = create(client)
    with client.stream(
        "POST",
        f"/v1/sandboxes/{box['id']}/exec",
        params={"stream": "true"},
        json={"cmd": "head -c 5000 /dev/zero | tr '\\0' y; echo; echo err >&2; exit 3"},
    ) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        events = [__import__("json").loads(line) for line in response.iter_lines() if line]
    stdout = "".join(e["stdout"] for e in events if "stdout" in e)
    assert stdout == "y" * 5000 + "\n"
    assert [e for e in events if "stderr" in e] == [{"stderr": "err\n"}]
    assert events[-1] == {"exit_code": 3}


def test_files_round_trip_and_refuse_bad_paths(client: TestClient) -> None:
    box = create(client)
    data = os.urandom(1024 * 1024 + 3)
    put = client.put(f"/v1/sandboxes/{box['id']}/files", params={"path": "/a/b.bin"}, content=data)
    assert put.status_code == 200 and put.json()["data"] == {"path": "/a/b.bin", "bytes": len(data)}
    got = client.get(f"/v1/sandboxes/{box['id']}/files", params={"path": "/a/b.bin"})
    assert got.status_code == 200 and got.content == data
    cases = [("rel/x", 400), ("/a/../etc/passwd", 400), ("/missing", 404), ("/a", 400)]
    for path, status in cases:
        response = client.get(f"/v1/sandboxes/{box['id']}/files", params={"path": path})
        assert response.status_code == status, path
        assert response.json()["data"]["path"]
    onto_dir = client.put(f"/v1/sandboxes/{box['id']}/files", params={"path": "/a"}, content=b"x")
    assert onto_dir.status_code == 400
    no_path = client.get(f"/v1/sandboxes/{box['id']}/files")
    assert no_path.status_code == 400 and "path" in no_path.json()["data"]


def test_patch(client: TestClient) -> None:
    box = create(client)
    patched = client.patch(
        f"/v1/sandboxes/{box['id']}", json={"name": "renamed", "auto_pause_after_seconds": 30}
    ).json()["data"]
    assert (patched["name"], patched["auto_pause_after_seconds"]) == ("renamed", 30)
    assert client.get("/v1/sandboxes/renamed").json()["data"]["id"] == box["id"]
    assert client.patch(f"/v1/sandboxes/{box['id']}", json={"name": "NO"}).status_code == 400
    assert client.patch(f"/v1/sandboxes/{box['id']}", json={"shape": "x"}).status_code == 400


def test_auto_pause_after_idle(client: TestClient) -> None:
    box = create(client, auto_pause_after_seconds=1)
    deadline = time.monotonic() + 15
    status = "running"
    while time.monotonic() < deadline and status != "paused":
        time.sleep(0.2)
        status = client.get(f"/v1/sandboxes/{box['id']}").json()["data"]["status"]
    assert status == "paused"


def test_a_sandbox_whose_init_dies_goes_to_error_and_deletes_cleanly(client: TestClient) -> None:
    box = create(client)
    driver = client.app.state.services.host_agent.driver  # type: ignore[attr-defined]
    os.killpg(driver._pid(box["id"]), 9)
    deadline = time.monotonic() + 15
    data = box
    while time.monotonic() < deadline and data["status"] != "error":
        time.sleep(0.2)
        data = client.get(f"/v1/sandboxes/{box['id']}").json()["data"]
    assert data["status"] == "error" and "init process exited" in data["reason"]
    assert client.post(f"/v1/sandboxes/{box['id']}/exec", json={"cmd": "true"}).status_code == 409
    assert client.delete(f"/v1/sandboxes/{box['id']}").json()["data"]["status"] == "destroyed"


def test_a_sandbox_in_error_resumes_from_its_disk(client: TestClient) -> None:
    box = create(client)
    url = f"/v1/sandboxes/{box['id']}"
    assert (
        client.put(f"{url}/files", params={"path": "/kept.txt"}, content=b"kept").status_code == 200
    )
    driver = client.app.state.services.host_agent.driver  # type: ignore[attr-defined]
    os.killpg(driver._pid(box["id"]), 9)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and client.get(url).json()["data"]["status"] != "error":
        time.sleep(0.2)
    assert client.get(url).json()["data"]["status"] == "error"
    resumed = client.post(f"{url}/resume")
    assert resumed.status_code == 202 and resumed.headers["X-Poll-After"]
    assert resumed.json()["data"]["status"] == "running"
    assert resumed.json()["data"]["reason"] is None
    assert client.get(f"{url}/files", params={"path": "/kept.txt"}).content == b"kept"
    assert run(client, box["id"], cmd="echo back")["result"]["stdout"] == "back\n"
    assert client.post(f"{url}/resume").status_code == 200, "running: a no-op"


def test_a_sandbox_in_error_with_nothing_left_cannot_resume(client: TestClient) -> None:
    box = create(client)
    url = f"/v1/sandboxes/{box['id']}"
    driver = client.app.state.services.host_agent.driver  # type: ignore[attr-defined]
    os.killpg(driver._pid(box["id"]), 9)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and client.get(url).json()["data"]["status"] != "error":
        time.sleep(0.2)
    shutil.rmtree(driver._dir(box["id"]) / "root")  # its disk is gone
    refused = client.post(f"{url}/resume")
    assert refused.status_code == 409 and "delete it" in refused.json()["data"]["status"]
    assert client.get(url).json()["data"]["status"] == "error"
    assert client.delete(url).json()["data"]["status"] == "destroyed"


def test_a_failed_create_is_recorded_with_its_reason(client: TestClient) -> None:
    driver = client.app.state.services.host_agent.driver  # type: ignore[attr-defined]
    driver.fail_next_create = "the disk is on fire"
    response = client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb", "name": "doomed"})
    assert response.status_code == 503
    assert "the disk is on fire" in response.json()["message"]
    failed = client.get("/v1/sandboxes", params={"status": "failed"}).json()["data"]["data"]
    assert [(s["name"], s["reason"]) for s in failed] == [("doomed", "the disk is on fire")]
    assert driver.state_dir.exists() is False or list(driver.state_dir.iterdir()) == []
    assert create(client, name="doomed")["status"] == "running"


def test_another_users_sandbox_is_a_404_like_a_missing_one(client: TestClient) -> None:
    box = create(client, name="private")
    bob = {"X-Api-Key": _key(client, "bob")}
    missing = client.get("/v1/sandboxes/sb_NOPE", headers=bob)
    for ident in (box["id"], "private"):
        theirs = client.get(f"/v1/sandboxes/{ident}", headers=bob)
        assert theirs.status_code == 404
        assert theirs.json()["data"].keys() == missing.json()["data"].keys()
    for method, suffix, body in (
        ("POST", "/exec", {"cmd": "true"}), ("POST", "/pause", None), ("POST", "/resume", None),
        ("DELETE", "", None), ("PATCH", "", {"name": "stolen"}), ("GET", "/files?path=/x", None),
    ):  # fmt: skip
        response = client.request(method, f"/v1/sandboxes/{box['id']}{suffix}", json=body,
                                   headers=bob)  # fmt: skip
        assert response.status_code == 404, (method, suffix)
    assert client.get(f"/v1/sandboxes/by-ip/{box['ip']}", headers=bob).status_code == 404
    assert client.get("/v1/sandboxes", headers=bob).json()["data"]["data"] == []
    assert client.get(f"/v1/sandboxes/{box['id']}").json()["data"]["status"] == "running"


def test_whoami_counts_follow_sandboxes(client: TestClient) -> None:
    a, b = create(client), create(client)
    client.post(f"/v1/sandboxes/{a['id']}/pause")
    client.delete(f"/v1/sandboxes/{b['id']}")
    create(client)
    stats = client.get("/v1/whoami").json()["data"]["stats"]
    assert stats == {"running": 1, "paused": 1, "other": 0, "total": 3}


def test_streaming_sends_heartbeats_while_a_command_is_silent(client: TestClient) -> None:
    box = create(client)
    with client.stream(
        "POST",
        f"/v1/sandboxes/{box['id']}/exec",
        params={"stream": "true"},
        json={"cmd": "sleep 6; echo done"},
    ) as response:
        events = [__import__("json").loads(line) for line in response.iter_lines() if line]
    assert {"hb": True} in events
    assert events[-2:] == [{"stdout": "done\n"}, {"exit_code": 0}]
