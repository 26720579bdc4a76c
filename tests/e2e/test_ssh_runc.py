"""SSH and tunnels into real sandboxes (runc) through a real ``hutch serve``, with Debian's
OpenSSH client: keys through ``ssh-pubkeys``, ``hutch ssh``, ``scp`` both ways, ``ssh -L``,
a wrong key refused, the raw ``tcp-tunnel`` upgrade spliced byte for byte with half-closes,
``hutch tunnel`` as a local listener, and every refusal in JSend before any upgrade."""

from __future__ import annotations

import hashlib
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_sandboxes_runc import create, runc_server, sh
from tests.support.server import HutchProcess, remove_instance

HUTCH = [sys.executable, "-m", "hutch"]

# A TCP echo server: every byte back as it comes; it closes only after the client's EOF.
ECHO_SERVER = """
import socket, threading
server = socket.create_server(("127.0.0.1", 7007))
def serve(conn):
    while data := conn.recv(65536):
        conn.sendall(data)
    conn.close()
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    pool = f"10.94.{(os.getpid() % 60) * 4}.0/22"
    process = runc_server(tmp_path_factory.mktemp("ssh") / "home", images, pool=pool)
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture(scope="module")
def key(server: HutchProcess) -> str:
    return server.new_key("sasha")


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


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two key pairs made by Debian's ssh-keygen: ``good`` is given to the sandbox,
    ``stranger`` never is."""
    directory = tmp_path_factory.mktemp("keys")
    made = {}
    for name in ("good", "stranger"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test",
                        "-f", str(directory / name)], check=True)  # fmt: skip
        made[name] = directory / name
    return made


@pytest.fixture(scope="module")
def with_key(api: httpx.Client, box: dict[str, Any], keys: dict[str, Path]) -> dict[str, Any]:
    """The box, with the good key in its authorized_keys."""
    public = keys["good"].with_suffix(".pub").read_text().strip()
    answer = api.post(f"/v1/sandboxes/{box['id']}/ssh-pubkeys", json={"keys": [public]})
    assert answer.status_code == 200, answer.text
    return box


def client_env(server: HutchProcess, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUTCH_")}
    return env | {"HUTCH_API_URL": server.url, "HUTCH_API_KEY": key}


def ssh_options(box: dict[str, Any], identity: Path) -> list[str]:
    """What ssh and scp need to reach ``box`` through ``hutch tunnel`` with ``identity``."""
    proxy = shlex.join([*HUTCH, "tunnel", box["id"], "22"])
    return [
        "-i", str(identity), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={identity.parent / 'known_hosts'}",
        "-o", "StrictHostKeyChecking=accept-new", "-o", f"HostKeyAlias={box['id']}",
        "-o", f"ProxyCommand={proxy}",
    ]  # fmt: skip


def run(argv: list[str], env: dict[str, str], **extra: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, **extra)  # fmt: skip


def upgrade(
    server: HutchProcess, path: str, headers: dict[str, str], protocol: str = "tcp-tunnel"
) -> socket.socket:
    """A raw socket that has sent ``POST path`` asking for ``Upgrade: <protocol>``."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Connection: Upgrade",
             f"Upgrade: {protocol}", "Content-Length: 0"]  # fmt: skip
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The answer's status line and headers, and whatever came after them."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {buffer!r}"
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head, rest


def start_in(api: httpx.Client, box: dict[str, Any], cmd: str, *args: str) -> None:
    """A long-lived process in the sandbox (a server for the tests to reach)."""
    answer = api.post(f"/v1/sandboxes/{box['id']}/processes", json={"cmd": cmd, "args": list(args)})
    assert answer.status_code == 201, answer.text


def wait_listening(api: httpx.Client, box: dict[str, Any], port: int) -> None:
    for _ in range(100):
        found = sh(api, box, f"grep -q ':{port:04X} 00000000:0000 0A' /proc/net/tcp && echo up")
        if found["stdout"].strip() == "up":
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing came to listen on port {port}")


# -- keys ---------------------------------------------------------------------------------


def test_keys_are_checked_normalised_deduplicated_and_written_for_root(
    api: httpx.Client, box: dict[str, Any], keys: dict[str, Path]
) -> None:
    good = keys["good"].with_suffix(".pub").read_text().strip()
    url = f"/v1/sandboxes/{box['id']}/ssh-pubkeys"

    bad = api.post(url, json={"keys": [good, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 x"]})
    assert bad.status_code == 400
    assert bad.json()["status"] == "fail" and "keys.1" in bad.json()["data"]
    private = api.post(url, json={"keys": ["-----BEGIN OPENSSH PRIVATE KEY----- b3Blbn"]})
    assert private.status_code == 400
    assert "not an OpenSSH public key" in private.json()["data"]["keys.0"]
    assert api.post(url, json={"keys": [good], "extra": 1}).status_code == 400

    # A line the user put there by hand stays; the same key with another comment or
    # spacing counts once.
    by_hand = "ssh-ed25519 AAAAhandmade mine"
    sh(api, box, f"mkdir -p /root/.ssh && echo '{by_hand}' >> /root/.ssh/authorized_keys")
    spaced = good.replace(" ", "   ", 1) + " again"
    answer = api.post(url, json={"keys": [good, spaced]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "success", "data": {"count": 1}}
    assert api.post(url, json={"keys": [good]}).json()["data"]["count"] == 1

    seen = sh(
        api, box, "stat -c %a /root/.ssh /root/.ssh/authorized_keys; cat /root/.ssh/authorized_keys"
    )
    modes, lines = seen["stdout"].splitlines()[:2], seen["stdout"].splitlines()[2:]
    assert modes == ["700", "600"]
    assert by_hand in lines
    assert [line for line in lines if good.split()[1] in line] == [good]


def test_keys_come_back_when_the_sandbox_resumes(
    server: HutchProcess, key: str, api: httpx.Client, keys: dict[str, Path]
) -> None:
    other = create(api)
    try:
        public = keys["good"].with_suffix(".pub").read_text().strip()
        url = f"/v1/sandboxes/{other['id']}"
        assert api.post(f"{url}/pause").status_code in (200, 202)
        paused = run([*HUTCH, "ssh", other["id"], "-i", str(keys["good"]), "--", "true"],
                     client_env(server, key))  # fmt: skip
        assert paused.returncode == 1
        assert "is paused" in paused.stderr and "hutch sandbox resume" in paused.stderr
        # Added while paused: kept, and written when it runs again.
        assert api.post(f"{url}/ssh-pubkeys", json={"keys": [public]}).json()["data"]["count"] == 1
        assert api.post(f"{url}/resume").status_code in (200, 202)
        seen = sh(api, other, "cat /root/.ssh/authorized_keys")
        assert seen["stdout"].strip() == public
    finally:
        api.delete(f"/v1/sandboxes/{other['id']}")


def test_keys_given_at_create_let_ssh_in_at_once(
    server: HutchProcess, key: str, api: httpx.Client, keys: dict[str, Path]
) -> None:
    public = keys["good"].with_suffix(".pub").read_text().strip()
    made = create(api, ssh_pubkeys=[public, public])
    try:
        assert api.get(f"/v1/sandboxes/{made['id']}").json()["data"]["ssh_pubkeys"] == [public]
        env = client_env(server, key)
        login = run(["ssh", *ssh_options(made, keys["good"]), "root@box", "cat /root/.ssh/*"], env)
        assert login.returncode == 0, login.stderr
        assert login.stdout.strip() == public
    finally:
        api.delete(f"/v1/sandboxes/{made['id']}")


# -- ssh ----------------------------------------------------------------------------------


def test_hutch_ssh_with_the_right_key_runs_a_command(
    server: HutchProcess, key: str, with_key: dict[str, Any], keys: dict[str, Path]
) -> None:
    known = keys["good"].parent / "known_hosts"
    done = run([*HUTCH, "ssh", with_key["name"], "-i", str(keys["good"]), "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={known}", "--", "echo $(id -un)@$(hostname)"],
               client_env(server, key))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"root@{with_key['name']}"


def test_a_wrong_key_or_a_password_is_refused(
    server: HutchProcess, key: str, with_key: dict[str, Any], keys: dict[str, Path]
) -> None:
    env = client_env(server, key)
    refused = run(["ssh", *ssh_options(with_key, keys["stranger"]), "root@sandbox", "true"], env)
    assert refused.returncode == 255
    # Only keys are offered: no password or keyboard-interactive login to try.
    assert "Permission denied (publickey)" in refused.stderr


def test_each_sandbox_has_host_keys_of_its_own(
    api: httpx.Client, server: HutchProcess, key: str, with_key: dict[str, Any],
    keys: dict[str, Path],
) -> None:  # fmt: skip
    other = create(api)
    try:
        assert sh(api, other, "ls /etc/ssh/ssh_host_* 2>/dev/null | wc -l")["stdout"].strip() == "0"
        public = keys["good"].with_suffix(".pub").read_text().strip()
        api.post(f"/v1/sandboxes/{other['id']}/ssh-pubkeys", json={"keys": [public]})
        env = client_env(server, key)
        for sandbox in (with_key, other):
            assert (
                run(["ssh", *ssh_options(sandbox, keys["good"]), "root@x", "true"], env).returncode
                == 0
            )
        prints = {
            sh(api, sandbox, "cat /etc/ssh/ssh_host_ed25519_key.pub")["stdout"]
            for sandbox in (with_key, other)
        }
        assert len(prints) == 2
    finally:
        api.delete(f"/v1/sandboxes/{other['id']}")


def test_scp_copies_a_file_both_ways_byte_for_byte(
    server: HutchProcess, key: str, api: httpx.Client, with_key: dict[str, Any],
    keys: dict[str, Path], tmp_path: Path,
) -> None:  # fmt: skip
    payload = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "up.bin").write_bytes(payload)
    env = client_env(server, key)
    options = ssh_options(with_key, keys["good"])
    sent = run(["scp", *options, str(tmp_path / "up.bin"), "root@box:/tmp/up.bin"], env)
    assert sent.returncode == 0, sent.stderr
    inside = sh(api, with_key, "sha256sum /tmp/up.bin")["stdout"].split()[0]
    assert inside == hashlib.sha256(payload).hexdigest()
    back = run(["scp", *options, "root@box:/tmp/up.bin", str(tmp_path / "down.bin")], env)
    assert back.returncode == 0, back.stderr
    assert (tmp_path / "down.bin").read_bytes() == payload


def test_ssh_port_forward_reaches_a_server_inside(
    server: HutchProcess, key: str, api: httpx.Client, with_key: dict[str, Any],
    keys: dict[str, Path], tmp_path: Path,
) -> None:  # fmt: skip
    sh(api, with_key, "mkdir -p /srv/site && echo 'served from inside' > /srv/site/index.html")
    start_in(api, with_key, "python3", "-m", "http.server", "8123", "--bind", "127.0.0.1",
             "--directory", "/srv/site")  # fmt: skip
    wait_listening(api, with_key, 8123)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local = probe.getsockname()[1]
    forward = subprocess.Popen(
        ["ssh", *ssh_options(with_key, keys["good"]), "-N", "-o", "ExitOnForwardFailure=yes",
         "-L", f"127.0.0.1:{local}:127.0.0.1:8123", "root@box"],
        env=client_env(server, key), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        body = ""
        for _ in range(200):
            try:
                body = httpx.get(f"http://127.0.0.1:{local}/", timeout=10).text
                break
            except httpx.TransportError:
                assert forward.poll() is None, forward.stderr.read() if forward.stderr else ""
                time.sleep(0.1)
        assert body == "served from inside\n"
    finally:
        forward.terminate()
        forward.wait(timeout=30)


# -- the raw tunnel -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def echo(api: httpx.Client, box: dict[str, Any]) -> dict[str, Any]:
    start_in(api, box, "python3", "-c", ECHO_SERVER)
    wait_listening(api, box, 7007)
    return box


def test_the_tunnel_splices_tcp_byte_for_byte_both_ways_with_half_close(
    server: HutchProcess, key: str, echo: dict[str, Any]
) -> None:
    sock = upgrade(server, f"/v1/sandboxes/{echo['id']}/tunnel/7007", {"X-Api-Key": key})
    head, early = read_head(sock)
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 101 Switching Protocols"
    assert b"upgrade: tcp-tunnel" in head.lower()

    payload = os.urandom(16 * 1024 * 1024 + 3)
    received = bytearray(early)

    def reader() -> None:
        while data := sock.recv(1 << 20):
            received.extend(data)

    thread = threading.Thread(target=reader)
    thread.start()
    sock.sendall(payload)
    # Our half-close reaches the echo server, which then closes; its close reaches us.
    sock.shutdown(socket.SHUT_WR)
    thread.join(timeout=120)
    assert not thread.is_alive()
    sock.close()
    assert len(received) == len(payload)
    assert bytes(received) == payload


def test_hutch_tunnel_listens_locally_and_forwards_each_connection(
    server: HutchProcess, key: str, echo: dict[str, Any]
) -> None:
    listener = subprocess.Popen(
        [*HUTCH, "tunnel", echo["name"], "--local", "0", "--remote", "7007"],
        env=client_env(server, key), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert listener.stderr is not None
        said = listener.stderr.readline()
        assert said.startswith("forwarding 127.0.0.1:"), said
        local = int(said.split()[1].split(":")[1])
        for round_trip in range(3):
            with socket.create_connection(("127.0.0.1", local), timeout=60) as conn:
                message = f"hello {round_trip}".encode() * 1000
                conn.sendall(message)
                conn.shutdown(socket.SHUT_WR)
                got = b""
                while data := conn.recv(65536):
                    got += data
                assert got == message
    finally:
        listener.terminate()
        listener.wait(timeout=30)


def test_refusals_are_jsend_before_any_upgrade(
    server: HutchProcess, key: str, echo: dict[str, Any]
) -> None:
    mallory = server.new_key("mallory")
    path = f"/v1/sandboxes/{echo['id']}/tunnel/7007"
    cases = [
        ({"X-Api-Key": mallory}, b"404"),  # another user's sandbox: as if missing
        ({}, b"401"),
        ({"X-Api-Key": key}, b"400"),  # an upgrade to something else
    ]
    for number, (headers, status) in enumerate(cases):
        sock = upgrade(server, path, headers, "tcp-tunnel" if number < 2 else "chat")
        head, body = read_head(sock)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += sock.recv(65536)
        sock.close()
        assert head.split(b"\r\n")[0].split()[1] == status, head
        assert b'"status":"fail"' in body
    with httpx.Client(base_url=server.url, headers={"X-Api-Key": key}) as plain:
        closed = plain.post(
            f"/v1/sandboxes/{echo['id']}/tunnel/7999",
            headers={"Connection": "Upgrade", "Upgrade": "tcp-tunnel"},
        )
        assert closed.status_code == 409
        assert "nothing listens on port 7999" in closed.json()["data"]["port"]
        missing = plain.post(
            "/v1/sandboxes/sb_nosuch/tunnel/22",
            headers={"Connection": "Upgrade", "Upgrade": "tcp-tunnel"},
        )
        assert missing.status_code == 404 and missing.json()["status"] == "fail"

    # Bearer works as X-Api-Key does.
    sock = upgrade(server, path, {"Authorization": f"Bearer {key}"})
    head, _ = read_head(sock)
    sock.close()
    assert head.startswith(b"HTTP/1.1 101")


def test_a_tunnel_closes_when_its_sandbox_pauses(
    server: HutchProcess, key: str, api: httpx.Client
) -> None:
    other = create(api)
    try:
        start_in(api, other, "python3", "-c", ECHO_SERVER)
        wait_listening(api, other, 7007)
        sock = upgrade(server, f"/v1/sandboxes/{other['id']}/tunnel/7007", {"X-Api-Key": key})
        head, _ = read_head(sock)
        assert head.startswith(b"HTTP/1.1 101")
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        assert api.post(f"/v1/sandboxes/{other['id']}/pause").status_code in (200, 202)
        assert sock.recv(65536) == b""  # closed by the server, not left hanging
        sock.close()
    finally:
        api.delete(f"/v1/sandboxes/{other['id']}")


def test_the_tunnel_also_reaches_a_server_bound_to_the_sandbox_address_only(
    server: HutchProcess, key: str, api: httpx.Client, box: dict[str, Any]
) -> None:
    script = ECHO_SERVER.replace('("127.0.0.1", 7007)', f'("{box["ip"]}", 7070)')
    start_in(api, box, "python3", "-c", script)
    wait_listening(api, box, 7070)
    sock = upgrade(server, f"/v1/sandboxes/{box['id']}/tunnel/7070", {"X-Api-Key": key})
    head, early = read_head(sock)
    assert head.startswith(b"HTTP/1.1 101")
    sock.sendall(b"on the link")
    sock.shutdown(socket.SHUT_WR)
    assert read_all_from(sock, early) == b"on the link"
    sock.close()


def read_all_from(sock: socket.socket, already: bytes) -> bytes:
    seen = already
    while data := sock.recv(65536):
        seen += data
    return seen


def test_many_tunnels_at_once_each_carry_their_own_bytes(
    server: HutchProcess, key: str, echo: dict[str, Any]
) -> None:
    def one(number: int) -> bool:
        payload = os.urandom(512 * 1024) + str(number).encode()
        sock = upgrade(server, f"/v1/sandboxes/{echo['id']}/tunnel/7007", {"X-Api-Key": key})
        head, early = read_head(sock)
        assert head.startswith(b"HTTP/1.1 101"), head
        sender = threading.Thread(target=lambda: (sock.sendall(payload),
                                                  sock.shutdown(socket.SHUT_WR)))  # fmt: skip
        sender.start()
        got = read_all_from(sock, early)
        sender.join()
        sock.close()
        return got == payload

    with ThreadPoolExecutor(24) as pool:
        assert all(pool.map(one, range(24)))


def test_a_sandbox_access_token_tunnels_into_its_own_sandbox_only(
    server: HutchProcess, key: str, api: httpx.Client, echo: dict[str, Any], keys: dict[str, Path]
) -> None:
    made = api.post(f"/v1/sandboxes/{echo['id']}/access-token")
    assert made.status_code in (200, 201), made.text
    token = made.json()["data"]["token"]
    other = create(api)
    try:
        own = upgrade(server, f"/v1/sandboxes/{echo['id']}/tunnel/7007", {"X-Api-Key": token})
        head, early = read_head(own)
        assert head.startswith(b"HTTP/1.1 101")
        own.sendall(b"delegated")
        own.shutdown(socket.SHUT_WR)
        assert read_all_from(own, early) == b"delegated"
        own.close()
        for path, status in ((f"/v1/sandboxes/{other['id']}/tunnel/22", b"404"),
                             (f"/v1/sandboxes/{other['id']}/shell", b"404")):  # fmt: skip
            sock = upgrade(server, path, {"X-Api-Key": token})
            head, _ = read_head(sock)
            sock.close()
            assert head.split()[1] == status, head
        # Keys would outlive the token: only the owner adds them.
        public = keys["good"].with_suffix(".pub").read_text().strip()
        added = httpx.post(f"{server.url}/v1/sandboxes/{echo['id']}/ssh-pubkeys",
                           json={"keys": [public]}, headers={"X-Api-Key": token})  # fmt: skip
        assert added.status_code == 403
    finally:
        api.delete(f"/v1/sandboxes/{echo['id']}/access-token")
        api.delete(f"/v1/sandboxes/{other['id']}")
