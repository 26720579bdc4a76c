"""Wake on traffic through the real proxy (nginx) and a real ``hutch serve``, on runc (a
frozen sandbox) and on gvisor (a hibernated one): with ``auto_resume``, a request to a
paused sandbox's preview or ingress URL is held while the sandbox resumes, then answered by
its app; without it, the paused sandbox's URLs answer the proxy's 404 as before."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_sandboxes_runc import create, new_pool, runc_server, sh
from tests.support.server import HutchProcess, remove_instance

# Answers GET with the page and POST with what it was sent (so a held request's body is
# seen to arrive whole).
APP = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        self.answer(open('/workspace/page').read().encode())
    def do_POST(self):
        self.answer(b'got ' + self.rfile.read(int(self.headers['Content-Length'])))
    def answer(self, body):
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(('0.0.0.0', 8080), H).serve_forever()
"""


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    process = runc_server(
        tmp_path_factory.mktemp("wake") / "home",
        images,
        env={"HUTCH_PROXY_ENABLED": "true", "HUTCH_PROXY_PORT": "0"},
    )
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture
def clients(proxied: HutchProcess) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """The CreateOS API and the Nullspace one (for preview URLs), as one new user."""
    token = proxied.new_key(f"w{time.monotonic_ns()}")
    nullspace = httpx.Client(base_url=f"{proxied.url}/nullspace", timeout=60,
                             headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    with proxied.client(token) as api, nullspace:
        yield api, nullspace


def serve_app(api: httpx.Client, box: dict[str, Any], page: str) -> None:
    put = api.put(f"/v1/sandboxes/{box['id']}/files", params={"path": "/workspace/app.py"},
                  content=APP.encode())  # fmt: skip
    assert put.status_code < 300, put.text
    sh(api, box, f"printf '{page}' > /workspace/page")
    sh(api, box, "setsid python3 /workspace/app.py >/dev/null 2>&1 </dev/null &")
    sh(api, box, "for i in $(seq 100); do ss -ltn | grep -q :8080 && break; sleep 0.1; done")


def get(url: str, *, method: str = "GET", body: bytes | None = None) -> httpx.Response:
    """A request to the proxy on loopback with the URL's host name (as a browser would)."""
    authority, _, path = url.split("//", 1)[1].partition("/")
    host, port = authority.rsplit(":", 1)
    return httpx.request(method, f"http://127.0.0.1:{port}/{path}", headers={"Host": host},
                         content=body, timeout=120)  # fmt: skip


def status_of(api: httpx.Client, box: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = api.get(f"/v1/sandboxes/{box['id']}").json()["data"]
    return data


def pause(api: httpx.Client, box: dict[str, Any]) -> dict[str, Any]:
    paused = api.post(f"/v1/sandboxes/{box['id']}/pause")
    assert paused.status_code == 202, paused.text
    for _ in range(600):
        view = status_of(api, box)
        if view["status"] == "paused":
            return view
        time.sleep(0.1)
    raise AssertionError(f"not paused: {view}")


@pytest.mark.parametrize("runtime", ["runc", "gvisor"])
def test_a_request_to_a_paused_sandboxs_preview_wakes_it_and_is_answered(
    clients: tuple[httpx.Client, httpx.Client], runtime: str
) -> None:
    api, nullspace = clients
    box = create(api, runtime=runtime, auto_resume=True, ingress_enabled=True)
    serve_app(api, box, f"hello from {runtime}")
    preview = nullspace.post(f"/v1/sandboxes/{box['id']}/host", json={"port": 8080}).json()
    ingress = box["ingress_url_template"].replace("<port>", "8080")

    paused = pause(api, box)
    # gvisor writes the sandbox to its snapshot and stops it; runc freezes it. (No
    # connection yet: one closed in the last minute would keep gvisor's in memory, below.)
    assert paused["hibernated"] is (runtime == "gvisor"), paused
    woken = get(preview["url"])
    assert woken.status_code == 200 and woken.text == f"hello from {runtime}", woken.text
    assert status_of(api, box)["status"] == "running"

    # Ingress names wake it too; a held POST reaches the app with its body.
    pause(api, box)
    posted = get(ingress, method="POST", body=b"a body held while it woke")
    assert posted.status_code == 200 and posted.text == "got a body held while it woke"
    assert status_of(api, box)["status"] == "running"

    # Many requests at once while it is paused: one resume, every request answered.
    pause(api, box)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: get(preview["url"]), range(8)))
    assert [a.text for a in answers] == [f"hello from {runtime}"] * 8
    assert status_of(api, box)["status"] == "running"

    # auto_resume turned off while it is paused: a request says why, then the URLs go
    # (as they would have at a pause without auto_resume) and it stays paused.
    pause(api, box)
    assert api.patch(f"/v1/sandboxes/{box['id']}", json={"auto_resume": False}).status_code == 200
    refused = get(preview["url"])
    assert refused.status_code == 503 and "auto_resume is off" in refused.text
    assert get(preview["url"]).status_code == 404
    assert status_of(api, box)["status"] == "paused"
    api.delete(f"/v1/sandboxes/{box['id']}")


@pytest.mark.parametrize("runtime", ["runc", "gvisor"])
def test_without_auto_resume_a_paused_sandboxs_urls_answer_404_and_do_not_wake_it(
    clients: tuple[httpx.Client, httpx.Client], runtime: str
) -> None:
    api, nullspace = clients
    box = create(api, runtime=runtime, ingress_enabled=True)
    assert box["auto_resume"] is False
    serve_app(api, box, "awake")
    preview = nullspace.post(f"/v1/sandboxes/{box['id']}/host", json={"port": 8080}).json()
    ingress = box["ingress_url_template"].replace("<port>", "8080")
    assert get(preview["url"]).text == "awake" and get(ingress).text == "awake"

    pause(api, box)
    for url in (preview["url"], ingress):
        answer = get(url)
        assert answer.status_code == 404 and "paused" in answer.text, answer.text
    assert status_of(api, box)["status"] == "paused"

    # Resumed by hand: the ingress names work again, the preview URL stays revoked.
    assert api.post(f"/v1/sandboxes/{box['id']}/resume").status_code in (200, 202)
    for _ in range(600):
        if status_of(api, box)["status"] == "running":
            break
        time.sleep(0.1)
    assert get(ingress).text == "awake"
    assert get(preview["url"]).status_code == 404
    api.delete(f"/v1/sandboxes/{box['id']}")


def test_after_a_restart_a_paused_sandboxs_ingress_still_wakes_it(
    tmp_path: Path, images: Path
) -> None:
    home, pool = tmp_path / "home", new_pool()
    env = {"HUTCH_PROXY_ENABLED": "true", "HUTCH_PROXY_PORT": "0"}
    first = runc_server(home, images, pool=pool, env=env)
    key = first.new_key("restarted")
    second = None
    try:
        with first.client(key) as api:
            box = create(api, runtime="gvisor", auto_resume=True, ingress_enabled=True)
            serve_app(api, box, "still here")
            pause(api, box)
        first.stop()
        second = runc_server(home, images, pool=pool, env=env)
        with second.client(key) as api:
            # The proxy of the new server listens on a port of its own.
            template = status_of(api, box)["ingress_url_template"]
            woken = get(template.replace("<port>", "8080"))
            assert woken.status_code == 200 and woken.text == "still here", woken.text
            assert status_of(api, box)["status"] == "running"
    finally:
        for server in (first, second):
            if server is not None:
                server.stop()
        remove_instance(home)


def test_a_gvisor_sandbox_paused_after_traffic_hibernates_a_minute_later_and_wakes(
    clients: tuple[httpx.Client, httpx.Client],
) -> None:
    """A TCP connection the sandbox closed in the last minute is in TIME_WAIT, which Debian's
    runsc cannot save (its checkpoint used to fail, which stopped the sandbox: error, its
    processes lost) and which the sandbox's /proc/net/tcp does not list; the host's
    conntrack does. An HTTP/1.0 server closes every connection itself: its sandbox is
    paused in memory at once, says why, and hibernates once those have aged out."""
    api, nullspace = clients
    box = create(api, runtime="gvisor", auto_resume=True)
    sh(api, box, "printf 'one dot zero' > /workspace/index.html")
    sh(api, box, "cd /workspace && setsid python3 -m http.server 8080 >/dev/null 2>&1 "
                 "</dev/null &")  # fmt: skip
    sh(api, box, "for i in $(seq 100); do ss -ltn | grep -q :8080 && break; sleep 0.1; done")
    preview = nullspace.post(f"/v1/sandboxes/{box['id']}/host", json={"port": 8080}).json()
    assert get(preview["url"] + "index.html").text == "one dot zero"

    paused = pause(api, box)
    assert paused["hibernated"] is False and "TIME_WAIT" in paused["reason"], paused
    deadline = time.monotonic() + 180
    while not status_of(api, box)["hibernated"] and time.monotonic() < deadline:
        time.sleep(2)
    later = status_of(api, box)
    assert later["status"] == "paused" and later["hibernated"] is True, later
    woken = get(preview["url"] + "index.html")
    assert woken.status_code == 200 and woken.text == "one dot zero", woken.text
    assert status_of(api, box)["status"] == "running"
    api.delete(f"/v1/sandboxes/{box['id']}")
