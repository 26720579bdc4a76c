"""The Nullspace dialect on real sandboxes, and preview URLs through the real proxy (Caddy).

The seed's curl script runs exactly as written, with ``NULLSPACE_API_URL`` pointing at this
hutch. Preview traffic goes to the proxy on loopback with the preview's Host header (a
browser resolves ``*.localhost`` to loopback by itself).
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_sandboxes_runc import new_pool, runc_server
from tests.support.server import HutchProcess, remove_instance

SEED_SCRIPT = r"""
set -euo pipefail
SANDBOX_JSON="$(
curl -fsS -X POST "${NULLSPACE_API_URL}/v1/sandboxes" \
-H "Authorization: Bearer ${NULLSPACE_API_KEY}" \
-H "Content-Type: application/json" \
--data '{"template":"base","timeout_ms":300000}'
)"
SANDBOX_ID="$(printf '%s' "${SANDBOX_JSON}" | jq -r '.id')"
echo "${SANDBOX_ID}"
curl -fsS -X POST "${NULLSPACE_API_URL}/v1/sandboxes/${SANDBOX_ID}/exec" \
-H "Authorization: Bearer ${NULLSPACE_API_KEY}" \
-H "Content-Type: application/json" \
--data '{"command":"echo hello from nullspace","shell":true,"timeout_secs":30}'
curl -fsS -X POST "${NULLSPACE_API_URL}/v1/sandboxes/${SANDBOX_ID}/exec" \
-H "Authorization: Bearer ${NULLSPACE_API_KEY}" \
-H "Content-Type: application/json" \
--data '{"command":"cd /workspace && python3 -m http.server 8080","shell":true,"background":true}'
curl -fsS -X POST "${NULLSPACE_API_URL}/v1/sandboxes/${SANDBOX_ID}/host" \
-H "Authorization: Bearer ${NULLSPACE_API_KEY}" \
-H "Content-Type: application/json" \
--data '{"port":8080}'
curl -fsS -X DELETE "${NULLSPACE_API_URL}/v1/sandboxes/${SANDBOX_ID}" \
-H "Authorization: Bearer ${NULLSPACE_API_KEY}"
"""

WS_ECHO = r"""
import base64, hashlib, socket, threading
def exact(c, n):
    data = b""
    while len(data) < n:
        part = c.recv(n - len(data))
        if not part:
            raise EOFError
        data += part
    return data
def serve(c):
    request = b""
    while b"\r\n\r\n" not in request:
        request += c.recv(4096)
    key = [l.split(b":", 1)[1].strip() for l in request.split(b"\r\n")
           if l.lower().startswith(b"sec-websocket-key")][0]
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    try:
        while True:
            head = exact(c, 2)
            size = head[1] & 127
            mask = exact(c, 4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(exact(c, size)))
            c.sendall(bytes([0x81, len(data) + 5]) + b"echo:" + data)
    except EOFError:
        c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000))
s.listen()
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    process = runc_server(
        tmp_path_factory.mktemp("nullspace") / "home",
        images,
        env={"HUTCH_PROXY_ENABLED": "true", "HUTCH_PROXY_PORT": "0", "HUTCH_PREVIEW_TTL_S": "6"},
    )
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture
def api(server: HutchProcess) -> Iterator[httpx.Client]:
    assert server.admin_key
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    with httpx.Client(base_url=f"{server.url}/nullspace", headers=headers, timeout=60) as client:
        yield client


def through_proxy(preview: dict[str, Any], path: str = "/") -> httpx.Response:
    port = preview["url"].rstrip("/").rsplit(":", 1)[1]
    return httpx.get(f"http://127.0.0.1:{port}{path}", headers={"Host": preview["host"]},
                     timeout=10)  # fmt: skip


def createos(api: httpx.Client) -> str:
    """The same server's CreateOS root (for the routes Nullspace has no word for)."""
    return str(api.base_url).rstrip("/").removesuffix("/nullspace")


def run(api: httpx.Client, box: dict[str, Any], command: str, **extra: Any) -> dict[str, Any]:
    answer = api.post(f"/v1/sandboxes/{box['id']}/exec",
                      json={"command": command, "shell": True, **extra})  # fmt: skip
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def serve_http(api: httpx.Client, box: dict[str, Any], page: str) -> None:
    run(api, box, f"printf '{page}' > /workspace/index.html")
    run(api, box, "cd /workspace && python3 -m http.server 8080", background=True)
    run(api, box, "for i in $(seq 50); do ss -ltn | grep -q :8080 && break; sleep 0.1; done")


def test_the_seed_curl_script_runs_as_written(server: HutchProcess) -> None:
    assert server.admin_key
    env = {**os.environ, "NULLSPACE_API_URL": f"{server.url}/nullspace",
           "NULLSPACE_API_KEY": server.admin_key}  # fmt: skip
    done = subprocess.run(["bash", "-c", SEED_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("sb_")
    assert '"stdout":"hello from nullspace\\n"' in done.stdout
    assert '"websocket_url":"ws://8080-' in done.stdout and '"status":"destroyed"' in done.stdout


def test_the_seed_fetch_examples_run_on_node_20(server: HutchProcess) -> None:
    assert server.admin_key
    version = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    assert int(version.stdout.strip().lstrip("v").split(".")[0]) >= 20, version.stdout
    env = {**os.environ, "NULLSPACE_API_URL": f"{server.url}/nullspace",
           "NULLSPACE_API_KEY": server.admin_key}  # fmt: skip
    script = Path(__file__).parent / "js" / "seed_004_examples.mjs"
    done = subprocess.run(["node", str(script)], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    sandbox_id, hello, _, url = done.stdout.splitlines()[:4]
    assert sandbox_id.startswith("sb_") and hello == "hello from nullspace"
    assert url.startswith("http://8080-") and ".localhost:" in url


def test_a_browser_opens_a_preview_url_as_is(api: httpx.Client) -> None:
    box = api.post("/v1/sandboxes", json={"template": "base"}).json()
    serve_http(api, box, "<h1>seen by chromium</h1>")
    preview = api.post(f"/v1/sandboxes/{box['id']}/host", json={"port": 8080}).json()
    done = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
         preview["url"] + "index.html"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "<h1>seen by chromium</h1>" in done.stdout, done.stderr[-2000:]
    api.delete(f"/v1/sandboxes/{box['id']}")


def test_a_preview_url_shows_the_page_and_stops_when_it_should(api: httpx.Client) -> None:
    box = api.post("/v1/sandboxes", json={"template": "base"}).json()
    serve_http(api, box, "hello through the proxy")
    preview = api.post(f"/v1/sandboxes/{box['id']}/host", json={"port": 8080}).json()
    assert set(preview) == {"host", "url", "websocket_url", "access_token_expires_at"}
    assert preview["url"] == f"http://{preview['host']}:{preview['url'].rsplit(':', 1)[1]}"
    assert box["id"].lower()[3:] not in preview["host"], "not derived from the sandbox id"
    page = through_proxy(preview, "/index.html")
    assert page.status_code == 200 and page.text == "hello through the proxy"
    second = api.post(f"/v1/sandboxes/{box['id']}/host", json={"port": 8080}).json()
    assert second["host"] != preview["host"]
    guessed = dict(preview, host=preview["host"].replace(preview["host"][6:12], "aaaaaa"))
    assert through_proxy(guessed).status_code == 404

    # Expiry: the TTL of this server is 6 s.
    deadline = time.monotonic() + 15
    while through_proxy(preview).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert through_proxy(preview).status_code == 404

    fresh = api.post(f"/v1/sandboxes/{box['id']}/host", json={"port": 8080}).json()
    assert through_proxy(fresh).status_code == 200
    headers = {"X-Api-Key": api.headers["Authorization"].split()[1]}
    base = createos(api)
    assert httpx.post(f"{base}/v1/sandboxes/{box['id']}/pause", headers=headers).status_code == 202
    assert through_proxy(fresh).status_code == 404, "a paused sandbox's URLs stop"
    httpx.post(f"{base}/v1/sandboxes/{box['id']}/resume", headers=headers)
    last = api.post(f"/v1/sandboxes/{box['id']}/host", json={"port": 8080}).json()
    assert through_proxy(last).status_code == 200
    api.delete(f"/v1/sandboxes/{box['id']}")
    assert through_proxy(last).status_code == 404, "a destroyed sandbox's URLs stop"


def test_websocket_echo_through_the_proxy(api: httpx.Client) -> None:
    box = api.post("/v1/sandboxes", json={"template": "base"}).json()
    files = createos(api) + f"/v1/sandboxes/{box['id']}/files"
    token = api.headers["Authorization"].split()[1]
    httpx.put(files, params={"path": "/workspace/ws.py"}, content=WS_ECHO.encode(),
              headers={"X-Api-Key": token}).raise_for_status()  # fmt: skip
    run(api, box, "python3 /workspace/ws.py", background=True)
    run(api, box, "for i in $(seq 50); do ss -ltn | grep -q :9000 && break; sleep 0.1; done")
    preview = api.post(f"/v1/sandboxes/{box['id']}/host", json={"port": 9000}).json()
    port = int(preview["websocket_url"].rstrip("/").rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        key = base64.b64encode(os.urandom(16)).decode()
        conn.sendall((f"GET / HTTP/1.1\r\nHost: {preview['host']}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())  # fmt: skip
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        assert head.startswith(b"HTTP/1.1 101"), head
        leftover = head.split(b"\r\n\r\n", 1)[1]

        def echo(payload: bytes, frame: bytes = b"") -> bytes:
            mask = os.urandom(4)
            conn.sendall(bytes([0x81, 0x80 | len(payload)]) + mask
                         + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))  # fmt: skip
            while len(frame) < 2 or len(frame) < 2 + frame[1]:
                frame += conn.recv(4096)
            return frame[2 : 2 + frame[1]]

        assert echo(b"hello", leftover) == b"echo:hello"
        # Routes change for others (a new preview): this connection carries on.
        api.post(f"/v1/sandboxes/{box['id']}/host", json={"port": 8080}).raise_for_status()
        assert echo(b"still here") == b"echo:still here"
    api.delete(f"/v1/sandboxes/{box['id']}")


def test_ingress_enabled_sandboxes_have_a_url_per_port(api: httpx.Client) -> None:
    base = createos(api)
    key = {"X-Api-Key": api.headers["Authorization"].split()[1]}
    plain = httpx.post(f"{base}/v1/sandboxes", headers=key, json={"shape": "s-1vcpu-256mb"})
    assert plain.json()["data"]["ingress_url_template"] is None
    made = httpx.post(f"{base}/v1/sandboxes", headers=key, timeout=60,
                      json={"shape": "s-1vcpu-256mb", "ingress_enabled": True})  # fmt: skip
    box = made.json()["data"]
    template = box["ingress_url_template"]
    assert template.startswith("http://<port>-") and template.endswith("/")
    serve_http(api, box, "ingress page")
    url = template.replace("<port>", "8080")
    preview = {"url": url, "host": url.split("//", 1)[1].split(":", 1)[0]}
    assert through_proxy(preview, "/index.html").text == "ingress page"
    nothing = dict(preview, host=preview["host"].replace("8080-", "8081-", 1))
    assert through_proxy(nothing).status_code == 502, "no one listens on 8081"
    httpx.post(f"{base}/v1/sandboxes/{box['id']}/pause", headers=key)
    assert through_proxy(preview).status_code == 404
    httpx.post(f"{base}/v1/sandboxes/{box['id']}/resume", headers=key)
    assert through_proxy(preview, "/index.html").text == "ingress page", "back after resume"
    off = httpx.patch(f"{base}/v1/sandboxes/{box['id']}", headers=key,
                      json={"ingress_enabled": False})  # fmt: skip
    assert off.json()["data"]["ingress_url_template"] is None
    assert through_proxy(preview).status_code == 404
    for sandbox in (box, plain.json()["data"]):
        httpx.delete(f"{base}/v1/sandboxes/{sandbox['id']}", headers=key)


def test_after_kill_9_the_proxy_comes_back_on_its_port(tmp_path: Path, images: Path) -> None:
    from hutch.proxy.nginx import free_port

    home, pool, port = tmp_path / "home", new_pool(), free_port()
    env = {"HUTCH_PROXY_ENABLED": "true", "HUTCH_PROXY_PORT": str(port)}
    first = runc_server(home, images, pool=pool, env=env)
    assert first.admin_key
    key = {"X-Api-Key": first.admin_key}
    made = httpx.post(f"{first.url}/v1/sandboxes", headers=key, timeout=60,
                      json={"shape": "s-1vcpu-256mb", "ingress_enabled": True})  # fmt: skip
    box = made.json()["data"]
    bearer = {"Authorization": f"Bearer {first.admin_key}"}
    with httpx.Client(base_url=f"{first.url}/nullspace", headers=bearer, timeout=60) as api:
        serve_http(api, box, "survives")
    first.stop(signal.SIGKILL)
    second = runc_server(home, images, pool=pool, env=env)
    try:
        url = box["ingress_url_template"].replace("<port>", "8080")
        ingress = {"url": url, "host": url.split("//", 1)[1].split(":", 1)[0]}
        assert through_proxy(ingress, "/index.html").text == "survives"
        with httpx.Client(base_url=f"{second.url}/nullspace", headers=bearer, timeout=60) as api:
            answer = api.post(f"/v1/sandboxes/{box['id']}/host", json={"port": 8080})
            preview = answer.json()
            assert answer.status_code == 200 and preview["url"].endswith(f":{port}/"), preview
            assert through_proxy(preview, "/index.html").text == "survives"
            api.delete(f"/v1/sandboxes/{box['id']}")
    finally:
        second.stop()
        remove_instance(home)
