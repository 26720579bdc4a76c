"""Processes on real sandboxes: long-lived commands on a terminal of their own or on pipes,
their output read again from any point, input, resize, signals and waiting, over HTTP and
over a WebSocket."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.test_sandboxes_runc import create, runc_server
from tests.support.server import HutchProcess, remove_instance, run_cli


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    process = runc_server(tmp_path_factory.mktemp("processes") / "home", images)
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture(scope="module")
def key(server: HutchProcess) -> str:
    return run_cli(server.home, "keys", "create", "--user", "pat").stdout.strip()


@pytest.fixture
def api(server: HutchProcess, key: str) -> Iterator[httpx.Client]:
    with server.client(key) as client:
        yield client


@pytest.fixture
def box(api: httpx.Client) -> Iterator[dict[str, Any]]:
    made = create(api)
    yield made
    api.delete(f"/v1/sandboxes/{made['id']}")


def start(api: httpx.Client, box: dict[str, Any], **body: Any) -> dict[str, Any]:
    answer = api.post(f"/v1/sandboxes/{box['id']}/processes", json=body)
    assert answer.status_code == 201, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def read_until(
    api: httpx.Client, box: dict[str, Any], proc: dict[str, Any], needle: bytes, after: int = 0
) -> tuple[bytes, int]:
    """All output after ``after`` until ``needle`` shows up; and the last sequence number."""
    seen = b""
    for _ in range(50):
        got = api.get(
            f"/v1/sandboxes/{box['id']}/processes/{proc['id']}/output",
            params={"after": after, "wait": 2},
        ).json()["data"]
        for chunk in got["chunks"]:
            seen += base64.b64decode(chunk["data"])
        after = got["next"] - 1
        if needle in seen or not got["running"]:
            return seen, after
    raise AssertionError(f"{needle!r} never came: {seen!r}")


def test_a_shell_on_a_terminal_reads_input_resizes_and_takes_ctrl_c(
    api: httpx.Client, box: dict[str, Any]
) -> None:
    shell = start(api, box, cmd="bash", args=["--norc", "-i"], pty=True, rows=30, cols=100)
    assert shell["pty"] and shell["running"]
    url = f"/v1/sandboxes/{box['id']}/processes/{shell['id']}"
    api.post(f"{url}/input", json={"text": "tty; stty size; echo $TERM\n"})
    out, seq = read_until(api, box, shell, b"xterm-256color")
    assert b"/dev/pts/" in out and b"30 100" in out
    api.post(f"{url}/resize", json={"rows": 50, "cols": 132})
    api.post(f"{url}/input", json={"text": "stty size\n"})
    out, seq = read_until(api, box, shell, b"50 132", after=seq)
    # Ctrl-C reaches the foreground job through the terminal, and the shell lives on.
    api.post(f"{url}/input", json={"text": "sleep 300; echo after-sleep\n"})
    time.sleep(0.5)
    api.post(f"{url}/input", json={"data": base64.b64encode(b"\x03").decode()})
    api.post(f"{url}/input", json={"text": "echo still-here\n"})
    out, seq = read_until(api, box, shell, b"still-here", after=seq)
    assert b"after-sleep" not in out.replace(b"echo after-sleep", b"")
    # The whole output can be read again from the start.
    again, _ = read_until(api, box, shell, b"still-here")
    assert again.index(b"/dev/pts/") < again.index(b"50 132") < again.index(b"still-here")
    api.post(f"{url}/input", json={"text": "exit 7\n"})
    waited = api.post(f"{url}/wait", json={"timeout": 10}).json()["data"]
    assert waited == {"running": False, "exit_code": 7}
    listed = api.get(f"/v1/sandboxes/{box['id']}/processes").json()["data"]
    assert [(p["id"], p["running"], p["exit_code"]) for p in listed] == [(shell["id"], False, 7)]


def test_a_process_on_pipes_keeps_running_after_the_request_and_takes_signals(
    api: httpx.Client, box: dict[str, Any]
) -> None:
    proc = start(
        api,
        box,
        cmd="trap 'echo got-term; exit 3' TERM; echo ready >&2; while true; do sleep 0.1; done",
    )
    url = f"/v1/sandboxes/{box['id']}/processes/{proc['id']}"
    got = api.get(f"{url}/output", params={"wait": 5}).json()["data"]
    assert [(c["stream"], base64.b64decode(c["data"])) for c in got["chunks"]] == [
        ("stderr", b"ready\n")
    ]
    assert api.post(f"{url}/wait", json={"timeout": 1}).json()["data"]["running"] is True
    assert api.post(f"{url}/signal", json={"signal": "TERM"}).status_code == 200
    assert api.post(f"{url}/wait", json={"timeout": 10}).json()["data"] == {
        "running": False,
        "exit_code": 3,
    }
    out, _ = read_until(api, box, proc, b"got-term")
    assert b"got-term" in out


def test_bad_requests_are_clear(api: httpx.Client, box: dict[str, Any]) -> None:
    base = f"/v1/sandboxes/{box['id']}/processes"
    assert api.get(f"{base}/p999").status_code == 404
    assert api.get(f"{base}/p999/output").status_code == 404
    missing = api.post(base, json={"cmd": "no-such-program", "args": []})
    assert missing.status_code == 400 and "not found" in missing.json()["data"]["cmd"]
    proc = start(api, box, cmd="sleep", args=["30"])
    bad = api.post(f"{base}/{proc['id']}/signal", json={"signal": "NOPE"})
    assert bad.status_code == 400 and bad.json()["data"]["signal"]
    assert api.post(f"{base}/{proc['id']}/signal", json={"signal": 9}).status_code == 200
    assert api.post(f"{base}/{proc['id']}/resize", json={"rows": 0, "cols": 5}).status_code == 400
    assert api.get("/v1/sandboxes/sb_missing/processes").status_code == 404


def test_a_websocket_session_is_interactive(
    api: httpx.Client, box: dict[str, Any], server: HutchProcess, key: str
) -> None:
    shell = start(api, box, cmd="bash", args=["--norc", "-i"], pty=True)
    url = server.url.replace("http://", "ws://") + (
        f"/v1/sandboxes/{box['id']}/processes/{shell['id']}/ws"
    )
    seen = b""
    with connect(url, additional_headers={"X-Api-Key": key}) as ws:
        ws.send(json.dumps({"type": "resize", "rows": 40, "cols": 90}))
        ws.send(b"stty size; echo ws-$((6*7))\n")
        deadline = time.monotonic() + 20
        while b"ws-42" not in seen and time.monotonic() < deadline:
            message = ws.recv(timeout=10)
            if isinstance(message, bytes):
                seen += message
        assert b"40 90" in seen
        ws.send(b"exit 5\n")
        end: dict[str, Any] = {}
        while not end:
            message = ws.recv(timeout=10)
            if isinstance(message, str):
                end = json.loads(message)
        assert end == {"type": "exit", "exit_code": 5}
    # A wrong key is refused before anything starts.
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers={"X-Api-Key": "hk_wrong"})
    assert refused.value.response.status_code == 403
