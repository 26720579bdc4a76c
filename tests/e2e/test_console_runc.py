"""The web console in a real browser (Debian's Chromium driven by Playwright) against a real
``hutch serve`` with runc sandboxes: log in, create, a terminal over the processes
WebSocket, files up and down, a template's build log followed live, metrics drawn, pause,
fork, delete; a wrong key and another user's sandbox. Every page is checked for browser
console errors; screenshots go to ``tests/artifacts/console/`` (gitignored)."""

from __future__ import annotations

import http.server
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.test_sandboxes_runc import runc_server
from tests.support.server import HutchProcess, remove_instance

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (make debs-test)"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    home = tmp_path_factory.mktemp("console") / "home"
    env = {"HUTCH_METRICS_INTERVAL_S": "0.5", "HUTCH_WEBHOOK_ALLOW_PRIVATE": "127.0.0.1/32"}
    process = runc_server(home, images, env=env)
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture(scope="module")
def browser(server: HutchProcess) -> Iterator[Browser]:
    # After the server (so torn down before it): sync Playwright keeps an event loop
    # running in this thread, and the server's clean-up runs one of its own.
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


def new_key(server: HutchProcess, user: str) -> str:
    return server.new_key(user)


class Console:
    """A browser tab on the console that records every console error and page error."""

    def __init__(self, page: Page, server: HutchProcess, name: str) -> None:
        self.page, self.server, self.name = page, server, name
        self.errors: list[str] = []
        self.failed: list[str] = []  # which requests the "Failed to load resource" were
        self.shots = 0
        page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.status} {r.url}"))
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "assert"):
            self.errors.append(f"console.{message.type}: {message.text}")

    def open(self, fragment: str = "") -> None:
        self.page.goto(f"{self.server.url}/console{fragment}")

    def login(self, key: str) -> None:
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Log in").click()

    def shot(self, what: str) -> None:
        self.shots += 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=ARTIFACTS / f"{self.name}-{self.shots:02d}-{what}.png")

    def errors_besides(self, *expected: str) -> list[str]:
        """The errors left once those matching an ``expected`` pattern are taken out."""
        return [e for e in self.errors if not any(re.search(p, e) for p in expected)]


@pytest.fixture
def console(
    browser: Browser, server: HutchProcess, request: pytest.FixtureRequest
) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    tab = Console(page, server, request.node.name)
    for old in ARTIFACTS.glob(f"{request.node.name}-*.png"):
        old.unlink()
    try:
        yield tab
    finally:
        tab.shot("end")
        context.close()


def test_the_page_loads_without_a_key_with_cache_headers(server: HutchProcess) -> None:
    with server.client() as anonymous:
        page = anonymous.get("/console")
        assert page.status_code == 200, page.text
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-cache"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assets = re.findall(r'"/console/assets/([^"]+)"', page.text)
        assert {a.rsplit(".", 1)[1] for a in assets} == {"js", "css"}
        for asset in assets:
            plain = anonymous.get(
                f"/console/assets/{asset}", headers={"Accept-Encoding": "identity"}
            )
            assert plain.status_code == 200 and "content-encoding" not in plain.headers
            got = anonymous.get(f"/console/assets/{asset}", headers={"Accept-Encoding": "gzip"})
            assert got.status_code == 200 and got.headers["content-encoding"] == "gzip"
            assert got.content == plain.content  # httpx unpacked it
            assert int(got.headers["content-length"]) < len(plain.content) / 2
            assert got.headers["vary"] == "Accept-Encoding"
            assert got.headers["cache-control"] == "public, max-age=31536000, immutable"
            kind = "text/javascript" if asset.endswith(".js") else "text/css"
            assert got.headers["content-type"] == f"{kind}; charset=utf-8"
        for wrong in ("nope.js", "..%2F..%2Fsettings.py", "index.html"):
            missing = anonymous.get(f"/console/assets/{wrong}")
            assert missing.status_code == 404 and missing.json()["status"] == "fail"
        assert anonymous.get("/v1/sandboxes").status_code == 401  # the API still wants a key


def test_a_wrong_key_shows_an_error(console: Console) -> None:
    console.open()
    console.login("hk_not-a-real-key")
    alert = console.page.get_by_role("alert")
    expect(alert).to_have_text("That key was refused: invalid or revoked API key (401)")
    expect(console.page.get_by_label("API key")).to_be_visible()
    console.shot("refused")
    assert console.errors_besides(r"status of 401") == []


def run_in_terminal(console: Console, command: str) -> None:
    terminal = console.page.get_by_role("region", name="Terminal")
    expect(console.page.get_by_test_id("terminal-state")).to_have_text("connected")
    terminal.click()
    console.page.keyboard.type(command)
    console.page.keyboard.press("Enter")


def sandbox_status(api: httpx.Client, sandbox_id: str) -> str:
    answer = api.get(f"/v1/sandboxes/{sandbox_id}")
    if answer.status_code == 404:
        return "gone"
    status: str = answer.json()["data"]["status"]
    return status


def test_a_tour_create_terminal_files_metrics_pause_fork_delete(
    console: Console, server: HutchProcess, tmp_path: Path
) -> None:
    key = new_key(server, "tourist")
    page = console.page
    console.open()
    console.login(key)
    with server.client(key) as api:
        expect(page.get_by_test_id("user")).to_have_text(
            api.get("/v1/whoami").json()["data"]["user_id"]
        )
    expect(page.get_by_role("heading", name="Sandboxes")).to_be_visible()

    page.get_by_role("button", name="New sandbox").click()
    page.get_by_label("Name", exact=True).fill("tour-box")
    page.get_by_label("Shape").select_option("s-1vcpu-256mb")
    page.get_by_label("Egress rules").fill("*")
    console.shot("create-form")
    page.get_by_role("button", name="Create sandbox").click()
    expect(page.get_by_role("heading", name="tour-box")).to_be_visible()
    sandbox_id = page.url.rsplit("/", 1)[1]
    with server.client(key) as api:
        made = api.get(f"/v1/sandboxes/{sandbox_id}").json()["data"]
        assert made["name"] == "tour-box" and made["shape"] == "s-1vcpu-256mb"
        assert made["egress"] == ["*"]

        # The terminal: a login shell on a pty, over the processes WebSocket.
        run_in_terminal(console, "echo hi")
        expect(page.locator(".xterm-rows > div").filter(has_text=re.compile(r"^\s*hi\s*$"))
               ).to_have_count(1)  # fmt: skip
        run_in_terminal(console, "echo $((6 * 7)) > /tmp/from-terminal")
        console.shot("terminal")
        deadline = time.monotonic() + 20
        while "42" not in (got := api.get(f"/v1/sandboxes/{sandbox_id}/files",
                                          params={"path": "/tmp/from-terminal"})).text:  # fmt: skip
            assert time.monotonic() < deadline, got.text
            time.sleep(0.2)

        # Files: upload into /tmp, see it listed, download it back.
        upload = tmp_path / "hello.txt"
        upload.write_bytes(b"hello from the console\n" * 100)
        page.get_by_role("tab", name="Files").click()
        page.get_by_label("Upload to this folder").set_input_files(upload)
        expect(page.locator('tr[data-file="hello.txt"]')).to_contain_text("2.2 KiB")
        stored = api.get(f"/v1/sandboxes/{sandbox_id}/files", params={"path": "/tmp/hello.txt"})
        assert stored.content == upload.read_bytes()
        with page.expect_download() as download:
            page.get_by_role("button", name="Download from-terminal").click()
        assert Path(download.value.path()).read_text() == "42\n"
        console.shot("files")

        # Commands: one run through exec, kept in this tab's history.
        page.get_by_role("tab", name="Commands").click()
        page.get_by_label("Command", exact=True).fill("cat /tmp/hello.txt | wc -l")
        page.get_by_role("button", name="Run").click()
        expect(page.locator(".history li").first).to_contain_text("100")
        expect(page.locator(".history li").first).to_contain_text("exit 0")

        # Metrics: the timeseries drawn as lines (sampled every 0.5 s here).
        page.get_by_role("tab", name="Metrics").click()
        cpu = page.locator(".chart polyline").first
        expect(cpu).to_have_attribute("data-points", re.compile(r"^([3-9]|\d\d+)$"))
        assert len(cpu.get_attribute("points").split()) >= 3  # type: ignore[union-attr]
        console.shot("metrics")

        # Egress and bandwidth: the rules as created; saved live.
        page.get_by_role("tab", name="Egress and bandwidth").click()
        expect(page.get_by_label("Rules, one a line")).to_have_value("*")
        page.get_by_label("Rules, one a line").fill("example.com\n198.51.100.0/24:443")
        page.get_by_role("button", name="Save rules").click()
        expect(page.get_by_text("Saved 2 rule(s).")).to_be_visible()
        assert api.get(f"/v1/sandboxes/{sandbox_id}/egress").json()["data"]["egress"] == [
            "example.com", "198.51.100.0/24:443",
        ]  # fmt: skip
        expect(page.get_by_text("Quota")).to_be_visible()

        # Pause, fork (a paused sandbox), then delete both.
        page.get_by_role("button", name="Pause tour-box").click()
        expect(page.locator(".title-row .status")).to_have_text("paused")
        page.get_by_role("button", name="Fork tour-box").click()
        page.wait_for_url(re.compile(r"#/sandboxes/(?!" + re.escape(sandbox_id) + ")"))
        child_id = page.url.rsplit("/", 1)[1]
        assert api.get(f"/v1/sandboxes/{child_id}").json()["data"]["forked_from"] == sandbox_id
        expect(page.get_by_test_id("terminal-state")).to_have_text("connected")
        console.shot("fork")
        page.get_by_role("button", name="Delete").click()
        page.get_by_role("button", name=re.compile(r"^Delete ")).click()
        expect(page.get_by_role("heading", name="Sandboxes")).to_be_visible()
        row = page.locator(f'tr[data-sandbox="{sandbox_id}"]')
        expect(row.get_by_text("paused")).to_be_visible()
        row.get_by_role("button", name="Delete").click()
        row.get_by_role("button", name="Delete tour-box").click()
        expect(row).to_have_count(0)
        assert sandbox_status(api, sandbox_id) in ("destroyed", "gone")
        assert sandbox_status(api, child_id) in ("destroyed", "gone")
    totals = page.locator("details .chart polyline").first  # your usage, charted
    expect(totals).to_have_attribute("data-points", re.compile(r"^([2-9]|\d\d+)$"))
    console.shot("deleted")
    assert console.errors == [], console.failed


def test_a_template_build_log_is_followed_live(console: Console, server: HutchProcess) -> None:
    console.open("#/templates")
    key = new_key(server, "builder")
    console.login(key)
    page = console.page
    page.get_by_label("Name").fill("console-tpl")
    page.get_by_label("Dockerfile").fill(
        "FROM devbox:1\nRUN for i in 1 2 3; do echo step-$i; sleep 3; done\n"
    )
    page.get_by_role("button", name="Build").click()
    expect(page.get_by_role("heading", name="console-tpl v1")).to_be_visible()
    template_id = page.url.rsplit("/", 1)[1]
    log = page.get_by_test_id("build-log")
    expect(log).to_contain_text("step-1")
    with server.client(key) as api:  # the first line shown while the build still runs
        assert api.get(f"/v1/templates/{template_id}").json()["data"]["status"] == "building"
    expect(log).to_contain_text("step-3", timeout=60_000)
    assert "step-1\nstep-2\nstep-3\n" in log.inner_text()  # one line each
    console.shot("building")
    expect(page.get_by_test_id("build-final")).to_have_text("(finished: ready)", timeout=180_000)
    expect(page.locator(".title-row .status")).to_have_text("ready")
    page.get_by_role("link", name="← Templates").click()
    expect(page.get_by_role("link", name="console-tpl")).to_be_visible()
    assert console.errors == [], console.failed


def test_another_users_sandbox_shows_not_found(console: Console, server: HutchProcess) -> None:
    with server.client(new_key(server, "owner")) as owner:
        theirs = owner.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"}).json()["data"]
        try:
            console.open(f"#/sandboxes/{theirs['id']}")
            console.login(new_key(server, "snoop"))
            expect(console.page.get_by_role("heading", name="Sandbox not found")).to_be_visible()
            expect(console.page.get_by_role("alert")).to_contain_text(theirs["id"])
            console.shot("not-found")
        finally:
            owner.delete(f"/v1/sandboxes/{theirs['id']}")
    assert console.errors_besides(r"status of 404") == []


UNLABELLED = """() => [...document.querySelectorAll("input, select, textarea, button")]
  .filter((e) => e.type !== "hidden" && !(e.labels?.length || e.getAttribute("aria-label")
    || (e.tagName === "BUTTON" && e.textContent.trim())))
  .map((e) => e.outerHTML.slice(0, 120))"""


def test_every_page_renders_without_errors(console: Console, server: HutchProcess) -> None:
    key = new_key(server, "visitor")
    with server.client(key) as api:
        assert api.post("/v1/networks", json={"name": "console-net"}).status_code == 200
    console.open()
    console.login(key)
    page = console.page
    headings = {
        "Templates": "Templates", "Networks": "Networks", "Disks": "Disks",
        "Deploys": "Deploys", "Events": "Events", "Webhooks": "Webhooks",
        "API keys": "API keys", "Hosts": "Hosts",
    }  # fmt: skip
    for link, heading in headings.items():
        page.get_by_role("navigation").get_by_role("link", name=link).click()
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        expect(page.get_by_text("Loading")).to_have_count(0)
        assert page.evaluate(UNLABELLED) == [], f"controls without a name on {link}"
        console.shot(link.lower().replace(" ", "-"))
    page.get_by_role("link", name="Networks").click()
    expect(page.get_by_role("cell", name="console-net")).to_be_visible()
    page.get_by_role("link", name="Hosts").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    # A phone-sized window: still usable (the navigation wraps, nothing needs a mouse).
    page.set_viewport_size({"width": 390, "height": 800})
    page.get_by_role("link", name="Sandboxes").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Sandboxes")).to_be_visible()
    page.get_by_role("button", name="New sandbox").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Shape")).to_be_visible()
    assert page.evaluate(UNLABELLED) == [], "controls without a name in the create form"
    console.shot("narrow")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("() => sessionStorage.getItem('hutch.key')") is None
    assert page.evaluate("() => localStorage.length + document.cookie.length") == 0
    assert console.errors == [], console.failed


def test_a_websocket_takes_the_key_as_a_subprotocol(server: HutchProcess) -> None:
    key = new_key(server, "socket")
    with server.client(key) as api:
        box = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"}).json()["data"]
        proc = api.post(f"/v1/sandboxes/{box['id']}/processes",
                        json={"cmd": "cat", "pty": {}}).json()["data"]  # fmt: skip
        url = server.url.replace("http", "ws") + (
            f"/v1/sandboxes/{box['id']}/processes/{proc['process_id']}/ws"
        )

        def talk(protocols: list[str]) -> bytes:
            with connect(url, subprotocols=protocols, open_timeout=20) as ws:  # type: ignore[arg-type]
                assert ws.subprotocol == "hutch"
                ws.send(b"ping\r")
                seen = b""
                while b"ping" not in seen:
                    frame = ws.recv(timeout=20)
                    seen += frame if isinstance(frame, bytes) else frame.encode()
                return seen

        assert b"ping" in talk(["hutch", f"hutch.key.{key}"])
        with pytest.raises(InvalidStatus) as refused:
            talk(["hutch", "hutch.key.hk_wrong"])
        assert refused.value.response.status_code == 403
        api.delete(f"/v1/sandboxes/{box['id']}")


class _Receiver(http.server.BaseHTTPRequestHandler):
    got: ClassVar[list[tuple[str, str]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.got.append((self.headers["X-Hutch-Event"], self.headers["X-Hutch-Signature"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_webhook_added_in_the_console_is_delivered(
    console: Console, server: HutchProcess
) -> None:
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    key = new_key(server, "hooked")
    try:
        console.open("#/webhooks")
        console.login(key)
        page = console.page
        page.get_by_label("URL").fill(f"http://127.0.0.1:{receiver.server_address[1]}/hook")
        page.get_by_label("sandbox.created").check()
        page.get_by_role("button", name="Add webhook").click()
        expect(page.get_by_test_id("webhook-secret")).to_have_text(re.compile(r"\S{16,}"))
        with server.client(key) as api:
            box = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"}).json()["data"]
            page.get_by_role("button", name="Deliveries").click()
            row = page.locator("tbody tr").first
            expect(row).to_contain_text("sandbox.created")
            expect(row).to_contain_text("delivered", timeout=60_000)
            expect(row).to_contain_text("204")
            console.shot("delivered")
            api.delete(f"/v1/sandboxes/{box['id']}")
        assert [event for event, _ in _Receiver.got] == ["sandbox.created"]
        assert _Receiver.got[0][1].startswith("t=")
    finally:
        receiver.shutdown()
    assert console.errors == [], console.failed


def test_keys_are_made_and_revoked_in_the_console(console: Console, server: HutchProcess) -> None:
    key = new_key(server, "keyholder")
    console.open()
    console.login(key)
    page = console.page
    page.get_by_role("navigation").get_by_role("link", name="API keys").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    page.get_by_role("button", name="Make a new key").click()
    made = page.get_by_test_id("new-key")
    expect(made).to_be_visible()
    new = made.inner_text().strip()
    assert new.startswith("hk_") and new != key
    expect(page.locator("tbody tr")).to_have_count(2)
    with server.client(new) as api:
        assert api.get("/v1/whoami").status_code == 200
    prefix = new[:11]  # what the table shows of a key: "hk_" and 8 more
    row = page.locator("tbody tr", has_text=prefix)
    row.get_by_role("button", name="Revoke").click()
    row.get_by_role("button", name=f"Revoke {prefix}").click()
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    with server.client(new) as api:
        assert api.get("/v1/whoami").status_code == 401
    with server.client(key) as api:
        assert api.get("/v1/whoami").status_code == 200, "the tab's own key still works"
    console.shot("keys")
    assert console.errors == [], console.failed
