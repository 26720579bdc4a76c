"""Managed processes against a real ``hutch serve`` with runc sandboxes, written from the
CreateOS reference (§7): the ManagedProcess fields, the connect frames, replay from
``after``, PTYs, input, resize, signals, wait with both scopes, delete with a grace, and
the status codes (JSend). Plus hutch's own WebSocket."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.e2e.test_sandboxes_runc import create, runc_server
from tests.support.server import HutchProcess, remove_instance

FIELDS = {"process_id", "kind", "pid", "state", "leader_exited", "tree_exited", "created_at",
          "finished_at", "exit_code", "signal", "cmd", "args", "cwd", "output",
          "foreground"}  # fmt: skip


@pytest.fixture(scope="module", params=["runc", "gvisor"])
def server(
    tmp_path_factory: pytest.TempPathFactory, images: Path, request: pytest.FixtureRequest
) -> Iterator[HutchProcess]:
    # Every test here runs on both runtimes (HUTCH_DEFAULT_RUNTIME: runc, then gvisor).
    process = runc_server(tmp_path_factory.mktemp("processes") / "home", images,
                          env={"HUTCH_DEFAULT_RUNTIME": request.param})  # fmt: skip
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture(scope="module")
def key(server: HutchProcess) -> str:
    return server.new_key("pat")


@pytest.fixture
def api(server: HutchProcess, key: str) -> Iterator[httpx.Client]:
    with server.client(key) as client:
        client.timeout = httpx.Timeout(120)
        yield client


@pytest.fixture(scope="module")
def box(server: HutchProcess, key: str) -> Iterator[dict[str, Any]]:
    with server.client(key) as client:
        made = create(client)
        yield made
        client.delete(f"/v1/sandboxes/{made['id']}")


def base(box: dict[str, Any]) -> str:
    return f"/v1/sandboxes/{box['id']}/processes"


def start(api: httpx.Client, box: dict[str, Any], **body: Any) -> dict[str, Any]:
    answer = api.post(base(box), json=body)
    assert answer.status_code == 201, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def frames(
    api: httpx.Client, box: dict[str, Any], pid: str, *, after: int = 0, until: bytes = b""
) -> list[dict[str, Any]]:
    """Connect and read frames until the stream ends (or ``until`` appears in the data)."""
    got: list[dict[str, Any]] = []
    seen = b""
    params = {"after": after} if after else {}
    with api.stream("GET", f"{base(box)}/{pid}/connect", params=params) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        for line in response.iter_lines():
            frame = json.loads(line)
            got.append(frame)
            if frame["type"] == "data":
                seen += base64.b64decode(frame["data_base64"])
                if until and until in seen:
                    break
    return got


def data_of(got: list[dict[str, Any]]) -> bytes:
    return b"".join(base64.b64decode(f["data_base64"]) for f in got if f["type"] == "data")


def send(api: httpx.Client, box: dict[str, Any], pid: str, data: bytes) -> int:
    answer = api.post(
        f"{base(box)}/{pid}/input", json={"data_base64": base64.b64encode(data).decode()}
    )
    assert answer.status_code == 200, answer.text
    seq: int = answer.json()["data"]["input_seq"]
    return seq


def fail_data(answer: httpx.Response, status: int) -> Any:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["status"] == "fail"
    return body["data"]


def test_a_process_has_the_reference_fields_and_the_list_its_shape(
    api: httpx.Client, box: dict[str, Any]
) -> None:
    made = start(api, box, cmd="echo out; echo err >&2; exit 3", cwd="/tmp", env={"X": "1"})
    assert set(made) == FIELDS
    assert made["kind"] == "process" and made["process_id"] and made["pid"] > 1
    assert made["cmd"] == "echo out; echo err >&2; exit 3" and made["args"] == []
    assert made["cwd"] == "/tmp" and made["foreground"] is None
    datetime.fromisoformat(made["created_at"])
    done = api.get(f"{base(box)}/{made['process_id']}/wait", params={"scope": "tree"})
    final = done.json()["data"]
    assert final["state"] == "exited" and final["exit_code"] == 3 and final["signal"] is None
    assert final["leader_exited"] and final["tree_exited"]
    assert datetime.fromisoformat(final["finished_at"]) >= datetime.fromisoformat(
        final["created_at"]
    )
    assert final["output"] == {"oldest_seq": 1, "newest_seq": 2, "bytes": 8}
    listed = api.get(base(box)).json()["data"]
    assert set(listed) == {"processes"}
    assert made["process_id"] in [p["process_id"] for p in listed["processes"]]
    one = api.get(f"{base(box)}/{made['process_id']}").json()["data"]
    assert one["exit_code"] == 3 and set(one) == FIELDS


def test_connect_replays_from_after_and_ends_with_the_exit(
    api: httpx.Client, box: dict[str, Any]
) -> None:
    proc = start(api, box, cmd="printf one; sleep 0.3; printf two >&2; sleep 0.3; printf three")
    got = frames(api, box, proc["process_id"])
    assert got[-1] == {"type": "exit", "exit_code": 0}
    data = [f for f in got if f["type"] == "data"]
    assert [f["seq"] for f in data] == [1, 2, 3]
    assert [(f["stream"], base64.b64decode(f["data_base64"])) for f in data] == [
        ("stdout", b"one"),
        ("stderr", b"two"),
        ("stdout", b"three"),
    ]
    assert {f["type"] for f in got} <= {"data", "exit", "heartbeat"}
    again = frames(api, box, proc["process_id"], after=1)
    assert [f["seq"] for f in again if f["type"] == "data"] == [2, 3]
    assert again[-1]["type"] == "exit"


def test_after_before_the_kept_window_is_an_error_frame(
    api: httpx.Client, box: dict[str, Any]
) -> None:
    proc = start(api, box, cmd="head -c 3000000 /dev/urandom | base64 -w 1000")
    pid = proc["process_id"]
    final = api.get(f"{base(box)}/{pid}/wait", params={"scope": "tree"}).json()["data"]
    window = final["output"]
    assert window["oldest_seq"] > 2 and window["bytes"] <= 1 << 20
    got = frames(api, box, pid, after=1)
    assert got == [
        {
            "type": "error",
            "error": got[0]["error"],
            "oldest_available_seq": window["oldest_seq"],
        }
    ]
    # From the window's start, everything kept comes, then the exit.
    kept = frames(api, box, pid, after=window["oldest_seq"] - 1)
    assert kept[0]["seq"] == window["oldest_seq"] and kept[-1]["type"] == "exit"
    assert len(data_of(kept)) == window["bytes"]


def test_a_terminal_session(api: httpx.Client, box: dict[str, Any]) -> None:
    shell = start(api, box, cmd="bash", args=["--norc", "-i"], pty={"rows": 30, "cols": 100})
    pid = shell["process_id"]
    assert shell["kind"] == "pty"
    assert send(api, box, pid, b"tty; stty size; echo $TERM\n") == 1
    got = frames(api, box, pid, until=b"xterm-256color")
    assert api.get(f"{base(box)}/{pid}").json()["data"]["foreground"] == {
        "pid": shell["pid"],
        "cmd": "bash",
        "args": ["--norc", "-i"],
    }
    assert {f["stream"] for f in got if f["type"] == "data"} == {"pty"}
    assert b"/dev/pts/" in data_of(got) and b"30 100" in data_of(got)
    seq = got[-1]["seq"]
    resized = api.post(f"{base(box)}/{pid}/resize", json={"rows": 50, "cols": 132})
    assert resized.json() == {"status": "success", "data": {"ok": True}}
    assert send(api, box, pid, b"stty size\n") == 2
    got = frames(api, box, pid, after=seq, until=b"50 132")
    # Ctrl-C through input reaches the foreground job, and the shell lives on.
    send(api, box, pid, b"sleep 300; echo after-sleep\n")
    for _ in range(100):
        view = api.get(f"{base(box)}/{pid}").json()["data"]
        if view["foreground"]["cmd"] == "sleep":
            break
        time.sleep(0.05)
    assert view["foreground"]["args"] == ["300"] and view["foreground"]["pid"] != shell["pid"]
    send(api, box, pid, b"\x03")
    send(api, box, pid, b"echo still-$((6*7))\n")
    got = frames(api, box, pid, after=got[-1]["seq"], until=b"still-42")
    assert b"after-sleep" not in data_of(got).replace(b"echo after-sleep", b"")
    send(api, box, pid, b"exit 7\n")
    final = api.get(f"{base(box)}/{pid}/wait", params={"scope": "leader"}).json()["data"]
    assert final["exit_code"] == 7 and final["state"] == "exited"
    assert frames(api, box, pid, after=final["output"]["newest_seq"]) == [
        {"type": "exit", "exit_code": 7}
    ]


def test_a_terminal_without_cmd_is_the_login_shell(api: httpx.Client, box: dict[str, Any]) -> None:
    shell = start(api, box, pty={})
    pid = shell["process_id"]
    assert shell["kind"] == "pty" and shell["cmd"].endswith("sh") and shell["args"] == ["-l"]
    send(api, box, pid, b"stty size\n")
    assert b"24 80" in data_of(frames(api, box, pid, until=b"24 80"))
    closed = api.post(f"{base(box)}/{pid}/stdin/close")  # ^D on a terminal: the shell ends
    assert closed.json()["data"] == {"ok": True}
    final = api.get(f"{base(box)}/{pid}/wait", params={"scope": "tree"}).json()["data"]
    assert final["leader_exited"] and final["tree_exited"]


def test_wait_scopes_and_timeout(api: httpx.Client, box: dict[str, Any]) -> None:
    proc = start(api, box, cmd="sleep 300 & echo started")
    pid = proc["process_id"]
    leader = api.get(f"{base(box)}/{pid}/wait", params={"scope": "leader"}).json()["data"]
    assert leader["leader_exited"] and not leader["tree_exited"] and leader["exit_code"] == 0
    timed_out = api.get(
        f"{base(box)}/{pid}/wait", params={"scope": "tree", "timeout_ms": 300}
    ).json()["data"]
    assert timed_out["leader_exited"] and not timed_out["tree_exited"]
    ended = api.delete(f"{base(box)}/{pid}", params={"grace_ms": 0}).json()["data"]
    assert ended["tree_exited"]
    running = start(api, box, cmd="sleep", args=["300"])
    quick = api.get(
        f"{base(box)}/{running['process_id']}/wait", params={"scope": "leader", "timeout_ms": 0}
    ).json()["data"]
    assert quick["state"] == "running" and not quick["leader_exited"]
    api.delete(f"{base(box)}/{running['process_id']}", params={"grace_ms": 0})
    bad = api.get(f"{base(box)}/{running['process_id']}/wait", params={"scope": "all"})
    assert fail_data(bad, 400)


def test_delete_waits_the_grace_for_a_term_trapping_process(
    api: httpx.Client, box: dict[str, Any]
) -> None:
    polite = start(api, box, cmd="trap 'echo got-term; exit 3' TERM; echo ready; "
                                 "while true; do sleep 0.1; done")  # fmt: skip
    frames(api, box, polite["process_id"], until=b"ready")
    final = api.delete(f"{base(box)}/{polite['process_id']}", params={"grace_ms": 10000})
    assert final.status_code == 200
    view = final.json()["data"]
    assert view["exit_code"] == 3 and view["tree_exited"] and view["state"] == "exited"
    assert fail_data(api.get(f"{base(box)}/{polite['process_id']}"), 404)
    stubborn = start(api, box, cmd="trap '' TERM; echo ready; while true; do sleep 0.1; done")
    frames(api, box, stubborn["process_id"], until=b"ready")
    view = api.delete(f"{base(box)}/{stubborn['process_id']}", params={"grace_ms": 300}).json()[
        "data"
    ]
    assert view["signal"] == "SIGKILL" and view["exit_code"] == 137 and view["tree_exited"]


def test_signals_go_to_the_group_by_name(api: httpx.Client, box: dict[str, Any]) -> None:
    proc = start(api, box, cmd="trap 'echo got-term; exit 3' TERM; echo ready; "
                               "while true; do sleep 0.1; done")  # fmt: skip
    pid = proc["process_id"]
    frames(api, box, pid, until=b"ready")
    unknown = api.post(f"{base(box)}/{pid}/signal", json={"signal": "SIGNOPE"})
    assert "signal" in fail_data(unknown, 400)
    sent = api.post(f"{base(box)}/{pid}/signal", json={"signal": "SIGTERM"})
    assert sent.json() == {"status": "success", "data": {"ok": True}}
    final = api.get(f"{base(box)}/{pid}/wait", params={"scope": "tree"}).json()["data"]
    assert final["exit_code"] == 3
    assert b"got-term" in data_of(frames(api, box, pid))
    assert fail_data(api.post(f"{base(box)}/{pid}/signal", json={"signal": "SIGTERM"}), 409)
    killed = start(api, box, cmd="sleep", args=["300"])
    api.post(f"{base(box)}/{killed['process_id']}/signal", json={"signal": "SIGKILL"})
    view = api.get(f"{base(box)}/{killed['process_id']}/wait").json()["data"]
    assert view["signal"] == "SIGKILL" and view["exit_code"] == 137


def test_input_on_pipes(api: httpx.Client, box: dict[str, Any]) -> None:
    cat = start(api, box, cmd="cat", args=[])
    pid = cat["process_id"]
    assert [send(api, box, pid, b"a\n"), send(api, box, pid, b"b\n")] == [1, 2]
    assert api.post(f"{base(box)}/{pid}/stdin/close").json()["data"] == {"ok": True}
    got = frames(api, box, pid)
    assert data_of(got) == b"a\nb\n" and got[-1] == {"type": "exit", "exit_code": 0}
    late = api.post(f"{base(box)}/{pid}/input", json={"data_base64": "eA=="})
    assert fail_data(late, 409)
    not_a_terminal = api.post(f"{base(box)}/{pid}/resize", json={"rows": 10, "cols": 10})
    assert fail_data(not_a_terminal, 400)


def test_bad_requests_are_clear(api: httpx.Client, box: dict[str, Any]) -> None:
    for method, path in (("GET", ""), ("GET", "/connect"), ("GET", "/wait"), ("DELETE", ""),
                         ("POST", "/stdin/close")):  # fmt: skip
        missing = api.request(method, f"{base(box)}/proc_999{path}")
        assert fail_data(missing, 404), (method, path)
    assert fail_data(api.post(f"{base(box)}/proc_999/input", json={"data_base64": ""}), 404)
    assert "cmd" in fail_data(api.post(base(box), json={}), 400)
    assert "cmd" in fail_data(api.post(base(box), json={"cmd": "no-such-program", "args": []}), 400)
    assert "bogus" in str(fail_data(api.post(base(box), json={"cmd": "true", "bogus": 1}), 400))
    assert "pty" in str(fail_data(api.post(base(box), json={"pty": {"rows": 0}}), 400))
    proc = start(api, box, cmd="sleep", args=["300"])
    pid = proc["process_id"]
    bad64 = api.post(f"{base(box)}/{pid}/input", json={"data_base64": "!!"})
    assert "data_base64" in fail_data(bad64, 400)
    assert fail_data(api.post(f"{base(box)}/{pid}/resize", json={"rows": 0, "cols": 5}), 400)
    assert fail_data(api.delete(f"{base(box)}/{pid}", params={"grace_ms": -1}), 400)
    api.delete(f"{base(box)}/{pid}", params={"grace_ms": 0})
    assert fail_data(api.get("/v1/sandboxes/sb_missing/processes"), 404)


def test_a_websocket_session_is_interactive(
    api: httpx.Client, box: dict[str, Any], server: HutchProcess, key: str
) -> None:
    shell = start(api, box, cmd="bash", args=["--norc", "-i"], pty={})
    url = server.url.replace("http://", "ws://") + f"{base(box)}/{shell['process_id']}/ws"
    seen = b""
    with ws_connect(url, additional_headers={"X-Api-Key": key}) as ws:
        # JSON that is no object is passed over; the session goes on.
        ws.send("[1]")
        ws.send("7")
        ws.send(json.dumps({"type": "resize", "rows": 40, "cols": 90}))
        ws.send(b"stty size; echo ws-$((6*7))\n")
        while b"ws-42" not in seen:
            message = ws.recv(timeout=30)
            if isinstance(message, bytes):
                seen += message
        assert b"40 90" in seen
        ws.send(b"exit 5\n")
        end: dict[str, Any] = {}
        while not end:
            message = ws.recv(timeout=30)
            if isinstance(message, str):
                end = json.loads(message)
        assert end == {"type": "exit", "exit_code": 5}
    # A wrong key is refused before anything starts.
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url, additional_headers={"X-Api-Key": "hk_wrong"})
    assert refused.value.response.status_code == 403
