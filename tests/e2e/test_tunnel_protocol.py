"""The raw ``tcp-tunnel`` upgrade as a real ``hutch serve`` speaks it (HTTP/1.1 edge cases),
on the fake driver, whose sandboxes share the host's network: a TCP echo server on the
host's loopback stands for a server inside. The same routes on real runc sandboxes, with
ssh, are in tests/e2e/test_ssh_runc.py."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hutch.host.drivers.fake import FakeDriver
from tests.e2e.test_ssh_runc import read_all_from, read_head
from tests.support.images import fake_image
from tests.support.server import HutchProcess


def fake_server(root: Path) -> HutchProcess:
    fake_image(root / "images", "devbox:1")
    return HutchProcess(root / "home", env={"HUTCH_IMAGES_DIR": str(root / "images")}).wait_ready()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HutchProcess]:
    process = fake_server(tmp_path_factory.mktemp("tunnels"))
    yield process
    process.stop()
    asyncio.run(FakeDriver(process.home / "fake-sandboxes").cleanup(set()))


@pytest.fixture(scope="module")
def key(server: HutchProcess) -> str:
    return server.new_key("lee")


@pytest.fixture(scope="module")
def box(server: HutchProcess, key: str) -> dict[str, Any]:
    with server.client(key) as api:
        made = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
        assert made.status_code == 201, made.text
        data: dict[str, Any] = made.json()["data"]
        return data


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    """An echo server on the host's loopback: it closes after the client's end of stream."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def request(path: str, key: str, *, upgrade: bool = True) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: hutch", f"X-Api-Key: {key}", "Content-Length: 0"]
    if upgrade:
        lines += ["Connection: Upgrade", "Upgrade: tcp-tunnel"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(server: HutchProcess) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=60)


def test_bytes_sent_right_behind_the_request_are_not_lost(
    server: HutchProcess, key: str, box: dict[str, Any], echo_port: int
) -> None:
    sock = connect(server)
    # The request and the first tunnel bytes in one write, before any answer.
    sock.sendall(request(f"/v1/sandboxes/{box['id']}/tunnel/{echo_port}", key) + b"eager bytes")
    head, early = read_head(sock)
    assert head.startswith(b"HTTP/1.1 101")
    sock.shutdown(socket.SHUT_WR)
    assert read_all_from(sock, early) == b"eager bytes"
    sock.close()


def test_a_refusal_leaves_the_connection_http_for_the_next_request(
    server: HutchProcess, key: str, box: dict[str, Any], echo_port: int
) -> None:
    sock = connect(server)
    sock.sendall(request(f"/v1/sandboxes/{box['id']}/tunnel/1", key))
    head, body = read_head(sock)
    assert head.startswith(b"HTTP/1.1 409")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    assert b"nothing listens on port 1" in body
    # The same connection: an ordinary request, then a tunnel.
    sock.sendall(request(f"/v1/sandboxes/{box['id']}/ssh-pubkeys", key, upgrade=False))
    head, _ = read_head(sock)
    assert head.split()[1] == b"400"  # no body: the key list is required
    sock.close()
    sock = connect(server)
    sock.sendall(request(f"/v1/sandboxes/{box['id']}/tunnel/{echo_port}", key))
    head, early = read_head(sock)
    assert head.startswith(b"HTTP/1.1 101")
    sock.sendall(b"x" * 100_000)
    sock.shutdown(socket.SHUT_WR)
    assert read_all_from(sock, early) == b"x" * 100_000
    sock.close()


def test_hutch_tunnel_joins_stdin_and_stdout_to_the_port(
    server: HutchProcess, key: str, box: dict[str, Any], echo_port: int
) -> None:
    payload = os.urandom(2 * 1024 * 1024)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUTCH_")}
    done = subprocess.run(
        [sys.executable, "-m", "hutch", "tunnel", box["name"], str(echo_port)],
        input=payload, capture_output=True, timeout=120,
        env=env | {"HUTCH_API_URL": server.url, "HUTCH_API_KEY": key},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == payload  # stdin's end reached the server, and its close came back

    refused = subprocess.run(
        [sys.executable, "-m", "hutch", "tunnel", "nosuch", "22"], capture_output=True,
        text=True, timeout=120, stdin=subprocess.DEVNULL,
        env=env | {"HUTCH_API_URL": server.url, "HUTCH_API_KEY": key},
    )  # fmt: skip
    assert refused.returncode == 3
    assert "no sandbox 'nosuch'" in refused.stderr


def test_stopping_the_server_closes_its_tunnels(
    tmp_path_factory: pytest.TempPathFactory, echo_port: int
) -> None:
    server = fake_server(tmp_path_factory.mktemp("stopping"))
    try:
        key = server.new_key("sam")
        with server.client(key) as api:
            made = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"}).json()["data"]
        sock = connect(server)
        sock.sendall(request(f"/v1/sandboxes/{made['id']}/tunnel/{echo_port}", key))
        head, _ = read_head(sock)
        assert head.startswith(b"HTTP/1.1 101")
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        server.stop()
        assert sock.recv(65536) == b""
        sock.close()
    finally:
        server.stop()
        asyncio.run(FakeDriver(server.home / "fake-sandboxes").cleanup(set()))
