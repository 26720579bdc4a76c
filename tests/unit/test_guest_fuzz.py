"""A fuzz of the guest agent's protocol: whatever bytes arrive on its socket, it answers
or hangs up, goes on serving, and touches nothing outside its root.

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


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Any]]:
    base = tmp_path_factory.mktemp("fuzz")
    root, sock = base / "root", base / "agent.sock"
    root.mkdir()
    proc = start_agent(sock, root, stderr=subprocess.DEVNULL)
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
ops = st.sampled_from(["ping", "exec", "spawn", "put", "get", "nope", "", None, 7])
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
