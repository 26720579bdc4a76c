"""Interactive shells in real sandboxes (runc) through a real ``hutch serve``: the raw
``POST …/shell`` upgrade with CreateOS's frames, and ``GET …/shell-ws``; a resize reaches
the terminal (``stty size``), the exit closes the connection, a closed connection hangs
the shell up, and another user's sandbox is a JSend 404 before anything is upgraded."""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.test_sandboxes_runc import create, runc_server
from tests.e2e.test_ssh_runc import read_head, upgrade
from tests.support.server import HutchProcess, remove_instance


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    pool = f"10.98.{(os.getpid() % 60) * 4}.0/22"
    process = runc_server(tmp_path_factory.mktemp("shells") / "home", images, pool=pool)
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture(scope="module")
def key(server: HutchProcess) -> str:
    return server.new_key("robin")


@pytest.fixture(scope="module")
def api(server: HutchProcess, key: str) -> Iterator[httpx.Client]:
    with server.client(key) as client:
        client.timeout = httpx.Timeout(120)
        yield client


@pytest.fixture(scope="module")
def box(api: httpx.Client) -> Iterator[dict[str, Any]]:
    made = create(api)
    yield made
    api.delete(f"/v1/sandboxes/{made['id']}")


def frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BI", kind, len(payload)) + payload


def resize(rows: int, cols: int) -> bytes:
    return frame(1, struct.pack(">HH", rows, cols))


def read_all(sock: socket.socket, already: bytes) -> bytes:
    seen = already
    while data := sock.recv(65536):
        seen += data
    return seen


def shells_of(api: httpx.Client, box: dict[str, Any]) -> list[dict[str, Any]]:
    listed = api.get(f"/v1/sandboxes/{box['id']}/processes").json()["data"]["processes"]
    return [p for p in listed if p["kind"] == "pty" and not p["tree_exited"]]


def test_the_shell_upgrade_takes_frames_and_shows_the_resized_terminal(
    server: HutchProcess, key: str, box: dict[str, Any]
) -> None:
    sock = upgrade(server, f"/v1/sandboxes/{box['id']}/shell", {"X-Api-Key": key})
    head, early = read_head(sock)
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols")
    sock.sendall(resize(33, 121) + frame(0, b"stty size; echo tty=$(tty); exit\n"))
    output = read_all(sock, early)  # the shell's exit closes the connection
    sock.close()
    assert b"33 121" in output
    assert b"tty=/dev/pts/" in output


def test_a_closed_shell_connection_hangs_the_shell_up(
    server: HutchProcess, key: str, api: httpx.Client, box: dict[str, Any]
) -> None:
    before = {p["process_id"] for p in shells_of(api, box)}
    sock = upgrade(server, f"/v1/sandboxes/{box['id']}/shell", {"X-Api-Key": key})
    head, early = read_head(sock)
    assert head.startswith(b"HTTP/1.1 101")
    sock.sendall(frame(0, b"echo rea''dy\n"))
    seen = early
    while b"ready" not in seen:
        seen += sock.recv(65536)
    opened = {p["process_id"] for p in shells_of(api, box)} - before
    assert len(opened) == 1
    sock.close()
    for _ in range(100):
        if not opened & {p["process_id"] for p in shells_of(api, box)}:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the shell still runs after its connection closed")


def test_shell_ws_resizes_runs_and_reports_the_exit(
    server: HutchProcess, key: str, box: dict[str, Any]
) -> None:
    url = server.url.replace("http://", "ws://") + f"/v1/sandboxes/{box['id']}/shell-ws"
    output = b""
    with connect(f"{url}?rows=20&cols=70", additional_headers={"X-Api-Key": key}) as ws:
        ws.send(json.dumps({"type": "resize", "rows": 41, "cols": 99}))
        ws.send(b"stty size; exit 7\n")
        while True:
            message = ws.recv(timeout=60)
            if isinstance(message, bytes):
                output += message
                continue
            event = json.loads(message)
            assert event == {"type": "exit", "exit_code": 7, "signal": None}
            break
    assert b"41 99" in output


def test_another_users_sandbox_is_a_jsend_404_before_any_upgrade(
    server: HutchProcess, box: dict[str, Any]
) -> None:
    stranger = server.new_key("kim")
    sock = upgrade(server, f"/v1/sandboxes/{box['id']}/shell", {"X-Api-Key": stranger})
    head, body = read_head(sock)
    while b"}" not in body:
        body += sock.recv(65536)
    sock.close()
    assert head.startswith(b"HTTP/1.1 404")
    assert json.loads(body)["status"] == "fail"

    url = server.url.replace("http://", "ws://") + f"/v1/sandboxes/{box['id']}/shell-ws"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers={"X-Api-Key": stranger})
    assert refused.value.response.status_code == 404
    assert json.loads(refused.value.response.body)["status"] == "fail"
    with pytest.raises(InvalidStatus) as anonymous:
        connect(url)
    assert anonymous.value.response.status_code == 401


def test_a_client_gone_before_the_switch_leaves_no_shell_behind(
    server: HutchProcess, key: str, api: httpx.Client, box: dict[str, Any]
) -> None:
    before = {p["process_id"] for p in shells_of(api, box)}
    for _ in range(3):
        sock = upgrade(server, f"/v1/sandboxes/{box['id']}/shell", {"X-Api-Key": key})
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset, right behind the request
    # The shells are made, then ended once the server sees the client gone: the list must
    # come back to what it was and stay so (a leaked shell would stay in it for good).
    clean = 0
    for _ in range(300):
        clean = 0 if {p["process_id"] for p in shells_of(api, box)} - before else clean + 1
        if clean == 30:
            return
        time.sleep(0.1)
    raise AssertionError("a shell was left running for a client that went away")
