"""Self-signal on runc (CreateOS §16): a sandbox asks, from inside, to be paused or
deleted, by ``POST 127.0.0.1:1029/self/pause|delete`` or through the FIFO ``/run/self``;
the control plane acts as on its owner's request, with the reason on the sandbox."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_sandboxes_runc import create, runc_server, sh
from tests.support.server import HutchProcess, remove_instance


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    process = runc_server(tmp_path_factory.mktemp("self-signal") / "home", images)
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture
def api(server: HutchProcess) -> Iterator[httpx.Client]:
    key = server.new_key("selfie")
    with server.client(key) as client:
        yield client


def inside(api: httpx.Client, box: dict[str, Any], script: str) -> str:
    """Start ``script`` as a managed process (it may be frozen midway); its id."""
    made = api.post(f"/v1/sandboxes/{box['id']}/processes", json={"cmd": script})
    assert made.status_code == 201, made.text
    process_id: str = made.json()["data"]["process_id"]
    return process_id


def until_status(api: httpx.Client, box: dict[str, Any], status: str) -> dict[str, Any]:
    """Poll the sandbox until it reaches ``status`` (the signal is handled asynchronously)."""
    for _ in range(600):
        view: dict[str, Any] = api.get(f"/v1/sandboxes/{box['id']}").json()["data"]
        if view["status"] == status:
            return view
        time.sleep(0.1)
    raise AssertionError(f"sandbox {box['id']} never became {status}: {view}")


def resume(api: httpx.Client, box: dict[str, Any]) -> dict[str, Any]:
    answer = api.post(f"/v1/sandboxes/{box['id']}/resume")
    assert answer.status_code in (200, 202), answer.text
    return until_status(api, box, "running")


def test_pause_from_inside_with_a_reason_then_resume(api: httpx.Client) -> None:
    box = create(api)
    url = "http://127.0.0.1:1029/self/pause?reason=nightly%20job%20done"
    pid = inside(api, box, f"curl -s -o /tmp/body -w '%{{http_code}}' -X POST '{url}' > /tmp/code")
    paused = until_status(api, box, "paused")
    assert paused["reason"] == "nightly job done"
    running = resume(api, box)
    assert running["reason"] is None
    done = api.get(f"/v1/sandboxes/{box['id']}/processes/{pid}/wait").json()["data"]
    assert done["exit_code"] == 0
    assert sh(api, box, "cat /tmp/code")["stdout"] == "202"
    assert '"action": "pause"' in sh(api, box, "cat /tmp/body")["stdout"]
    # It can be paused from inside again, after the resume.
    inside(api, box, "echo park > /run/self")
    assert until_status(api, box, "paused")["reason"] == (
        "paused from inside the sandbox (self-signal)"
    )
    resume(api, box)
    assert sh(api, box, "echo alive")["stdout"] == "alive\n"
    api.delete(f"/v1/sandboxes/{box['id']}")


def test_delete_from_inside_keeps_128_characters_of_reason(api: httpx.Client) -> None:
    box = create(api)
    reason = "r" * 200
    inside(api, box, f"curl -s -X POST 'http://127.0.0.1:1029/self/delete?reason={reason}'")
    gone = until_status(api, box, "destroyed")
    assert gone["reason"] == "r" * 128


def test_retire_through_the_fifo(api: httpx.Client) -> None:
    box = create(api)
    listing = sh(api, box, "stat -c '%F %a' /run/self")["stdout"]
    assert listing == "fifo 622\n"
    inside(api, box, "echo retire > /run/self")
    assert until_status(api, box, "destroyed")["reason"] == (
        "deleted from inside the sandbox (self-signal)"
    )


def test_a_sandbox_can_signal_only_itself(api: httpx.Client) -> None:
    one, two = create(api), create(api)
    tried = sh(
        api,
        one,
        f"curl -s -m 5 -o /dev/null -w '%{{http_code}}' -X POST http://{two['ip']}:1029/self/delete"
        '; echo " $?"',
    )
    assert tried["stdout"].split()[-1] != "0"  # nothing answers there
    wrong = sh(api, one, "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:1029/self/pause")
    assert wrong["stdout"] == "405"
    assert api.get(f"/v1/sandboxes/{two['id']}").json()["data"]["status"] == "running"
    assert api.get(f"/v1/sandboxes/{one['id']}").json()["data"]["status"] == "running"
    for box in (one, two):
        api.delete(f"/v1/sandboxes/{box['id']}")
