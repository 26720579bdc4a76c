"""A fuzz of the guest agent's protocol: whatever bytes arrive on its socket, it answers
or hangs up, goes on serving, and touches nothing outside its root. The same for its
self-signal endpoint (HTTP on loopback): any request gets an HTTP answer, a 202 only for
``POST /self/pause`` or ``/self/delete``, and the signal reaches the host's watch.

The agent runs as a plain process with ``--root`` (the fake driver's mode). Exec and spawn
requests are generated only with programs that do not exist, since in this mode they
would run on the host. The same agent inside a sandbox is out of the sandbox's reach: the
socket lives on the host and only PID 1 holds it (tests/e2e/test_faults_runc.py tries).
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.guest import start_agent

FRAME = struct.Struct(">cI")
KINDS = [b"J", b"D", b"Z", b"O", b"E", b"X", b"\x00"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


SELF_PORT = free_port()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Any]]:
    base = tmp_path_factory.mktemp("fuzz")
    root, sock = base / "root", base / "agent.sock"
    root.mkdir()
    fifo = tmp_path_factory.mktemp("fuzz-fifo") / "self"
    proc = start_agent(sock, root, self_http=f"127.0.0.1:{SELF_PORT}", self_fifo=fifo,
                       stderr=subprocess.DEVNULL)  # fmt: skip
    yield base, sock, proc
    proc.kill()
    proc.wait()


def frame(kind: bytes, payload: bytes) -> bytes:
    return FRAME.pack(kind, len(payload)) + payload


def exchange(sock_path: Path, data: bytes) -> bytes:
    """Send ``data``, half-close, and read whatever comes back until the agent hangs up."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(sock_path))
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
        return b"".join(chunks)


def pings(sock_path: Path) -> bool:
    reply = exchange(sock_path, frame(b"J", json.dumps({"op": "ping"}).encode()))
    return b'"ok": true' in reply


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ops = st.sampled_from(["ping", "exec", "spawn", "put", "get", "nope", "", None, 7,
                       "proc_get", "proc_list", "proc_read", "proc_kill", "proc_nope",
                       "self_watch"])  # fmt: skip
requests = st.fixed_dictionaries(
    {"op": ops},
    optional={
        "argv": st.one_of(
            json_values,
            st.lists(st.text(max_size=10), max_size=3).map(
                lambda rest: ["/nonexistent/fuzz", *rest]
            ),
        ),
        "path": st.one_of(
            json_values,
            st.text(max_size=30),
            st.sampled_from(["/../../etc/passwd", "/a/../../b", "/x\x00y", "rel"]),
        ),
        "cwd": json_values,
        "env": json_values,
        "timeout": json_values,
        "stdin": json_values,
        "mode": json_values,
        "log": json_values,
        "id": json_values,
        "after": json_values,
        "wait": json_values,
        "grace": json_values,
    },
)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    request=requests,
    tail=st.lists(st.tuples(st.sampled_from(KINDS), st.binary(max_size=64)), max_size=4),
    garbage=st.one_of(st.just(b""), st.binary(max_size=64)),
)
def test_any_request_is_answered_or_dropped_and_the_agent_serves_on(
    agent: tuple[Path, Path, Any],
    request: dict[str, Any],
    tail: list[tuple[bytes, bytes]],
    garbage: bytes,
) -> None:
    base, sock, proc = agent
    message = (
        frame(b"J", json.dumps(request).encode())
        + b"".join(frame(kind, payload) for kind, payload in tail)
        + garbage
    )
    exchange(sock, message)
    exchange(sock, garbage or b"\xff\xff\xff\xff\xff")  # not even a frame
    assert proc.poll() is None
    assert pings(sock)
    assert sorted(p.name for p in base.iterdir()) == ["agent.sock", "root"]


def test_frames_that_lie_about_their_length_are_refused(agent: tuple[Path, Path, Any]) -> None:
    _, sock, proc = agent
    huge = FRAME.pack(b"J", 1 << 31)
    assert b"invalid" in exchange(sock, huge + b"{}")
    deep = frame(b"J", b"[" * 100_000 + b"]" * 100_000)
    exchange(sock, deep)
    assert proc.poll() is None and pings(sock)


def http_exchange(data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", SELF_PORT), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
        return b"".join(chunks)


def take_signals(sock_path: Path) -> list[dict[str, Any]]:
    """Every signal the agent holds for the host, in order (a watch answers at once when
    one is waiting; with none, it waits, and the half-close ends it)."""
    taken = []
    while True:
        reply = exchange(sock_path, frame(b"J", json.dumps({"op": "self_watch"}).encode()))
        if not reply:
            return taken
        taken.append(json.loads(reply[FRAME.size :]))


targets = st.one_of(
    st.sampled_from(["/self/pause", "/self/delete", "/self/pause/", "/", "/self", "/self/x"]),
    st.text(max_size=30).map(lambda t: "/" + t),
)
queries = st.one_of(
    st.just(""),
    st.text(max_size=300).map(lambda t: "?reason=" + t),
    st.text(max_size=40).map(lambda t: "?" + t),
)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    method=st.one_of(st.sampled_from(["POST", "GET", "PUT", "DELETE"]), st.text(max_size=8)),
    target=targets,
    query=queries,
    headers=st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=4),
    body=st.binary(max_size=64),
    garbage=st.one_of(st.just(b""), st.binary(max_size=200)),
)
def test_any_self_signal_request_gets_an_answer_and_only_real_ones_a_202(
    agent: tuple[Path, Path, Any],
    method: str,
    target: str,
    query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    garbage: bytes,
) -> None:
    _, sock, proc = agent
    lines = [f"{method} {target}{query} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body
    take_signals(sock)
    reply = http_exchange(request)
    assert reply.startswith(b"HTTP/1.1 ")
    status = int(reply.split(b" ", 2)[1])
    real = method == "POST" and " " not in target + query and "\r" not in target + query
    real = real and (target.rstrip("/") in ("/self/pause", "/self/delete"))
    taken = take_signals(sock)
    if status == 202:
        assert real
        assert len(taken) == 1 and taken[0]["action"] in ("pause", "delete")
        reason = taken[0]["reason"]
        assert reason is None or (0 < len(reason) <= 128 and reason.isprintable())
    else:
        assert status in (400, 404, 405) and taken == []
    garbage_reply = http_exchange(garbage or b"\xff")
    assert garbage_reply.startswith(b"HTTP/1.1 4")
    assert proc.poll() is None and pings(sock)
