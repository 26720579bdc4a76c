"""Computer use on a real ``desktop:1`` runc sandbox (CreateOS §15): screenshots the size
of the screen, a page served inside opened, clicked by coordinates and typed into, key
chords and the clipboard, windows moved and resized, a second screen, the desktop
restarted when its X server dies, the noVNC link drawn by Chromium on this machine (and
refused with a forged, replaced or expired token), and the 501/409/404/429 answers.

One server and one desktop sandbox serve the module (the desktop image is built once, by
the session's ``desktop_images`` fixture, in the background from the session's start)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.computer_help import (
    PAGE,
    canvas_click,
    canvas_pixel,
    chromium,
    link_port,
    novnc_canvas,
    png_pixel,
    png_size,
    poll,
    rfb_greeting,
)
from tests.e2e.test_sandboxes_runc import runc_server
from tests.support.server import HutchProcess, remove_instance, run_cli

CONNECT_TTL_S = 120


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, desktop_images: Path
) -> Iterator[HutchProcess]:
    home = tmp_path_factory.mktemp("computer") / "home"
    env = {
        "HUTCH_PROXY_ENABLED": "true",
        "HUTCH_PROXY_PORT": "0",  # a free port: another hutch on this machine may hold 8701
        "HUTCH_COMPUTER_CONNECT_TTL_S": str(CONNECT_TTL_S),
        "HUTCH_COMPUTER_SCREENSHOTS_PER_MINUTE": "30",
    }
    process = runc_server(home, desktop_images, env=env)
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture(scope="module")
def api(server: HutchProcess) -> Iterator[httpx.Client]:
    key = run_cli(server.home, "keys", "create", "--user", "desk").stdout.strip()
    with server.client(key) as client:
        client.timeout = httpx.Timeout(60)
        yield client


def create(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/v1/sandboxes", json={"shape": "s-2vcpu-2gb", **body})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


@pytest.fixture(scope="module")
def desk(api: httpx.Client) -> Iterator[dict[str, Any]]:
    """A desktop sandbox with ingress on, its desktop up, and the test page served inside."""
    box = create(api, rootfs="desktop:1", ingress_enabled=True)
    base = f"/v1/sandboxes/{box['id']}"
    put = api.put(f"{base}/files", params={"path": "/srv/page.html"}, content=PAGE.encode())
    assert put.status_code == 200, put.text
    started = api.post(
        f"{base}/processes",
        json={
            "cmd": "python3",
            "args": ["-m", "http.server", "8000", "-b", "127.0.0.1", "-d", "/srv"],
        },
    )
    assert started.status_code in (200, 201), started.text
    poll(lambda: api.get(f"{base}/computer/screen").status_code == 200, what="the desktop")
    box["base"] = f"{base}/computer"
    yield box
    api.delete(base)


def window_titled(api: httpx.Client, desk: dict[str, Any], title: str) -> dict[str, Any] | None:
    answer = api.get(f"{desk['base']}/windows", params={"application": "chromium"})
    assert answer.status_code == 200, answer.text
    return next((w for w in answer.json()["data"] if w["title"].startswith(title)), None)


@pytest.fixture(scope="module")
def page(api: httpx.Client, desk: dict[str, Any]) -> dict[str, Any]:
    """The test page open in Chromium, maximized: its window and geometry."""
    opened = api.post(f"{desk['base']}/open", json={"target": "http://127.0.0.1:8000/page.html"})
    assert opened.status_code == 200 and opened.json()["data"] == {"ok": True}, opened.text
    window = poll(lambda: window_titled(api, desk, "start"), what="the page's window")
    wid = window["id"]
    assert api.post(f"{desk['base']}/windows/{wid}/maximize").status_code == 200

    def maximized() -> dict[str, Any] | None:
        geometry = api.get(f"{desk['base']}/windows/{wid}/geometry").json()["data"]
        return geometry if geometry["width"] > 1200 and geometry["height"] > 700 else None

    return {"id": wid, "geometry": poll(maximized, what="a maximized window")}


def title_of(api: httpx.Client, desk: dict[str, Any], wid: str) -> str:
    answer = api.get(f"{desk['base']}/windows/{wid}")
    assert answer.status_code == 200, answer.text
    return str(answer.json()["data"]["title"])


# -- seeing ---------------------------------------------------------------------------------


def test_a_screenshot_is_the_size_of_the_screen(api: httpx.Client, desk: dict[str, Any]) -> None:
    screen = api.get(f"{desk['base']}/screen")
    assert screen.json() == {"status": "success", "data": {"width": 1280, "height": 800}}
    shot = api.get(f"{desk['base']}/screenshot")
    assert shot.status_code == 200 and shot.headers["content-type"] == "image/png"
    assert png_size(shot.content) == (1280, 800)
    region = api.get(f"{desk['base']}/screenshot",
                     params={"x": 100, "y": 50, "width": 300, "height": 200})  # fmt: skip
    assert png_size(region.content) == (300, 200)
    to_edge = api.get(f"{desk['base']}/screenshot", params={"x": 1000, "y": 700})
    assert png_size(to_edge.content) == (280, 100)
    outside = api.get(f"{desk['base']}/screenshot", params={"x": 1200, "width": 200})
    assert outside.status_code == 400 and "width" in outside.json()["data"]


def test_a_page_is_clicked_typed_into_and_copied_from(
    api: httpx.Client, desk: dict[str, Any], page: dict[str, Any]
) -> None:
    base, wid, geometry = desk["base"], page["id"], page["geometry"]
    shot = api.get(f"{base}/screenshot", params={"window_id": wid})
    assert png_size(shot.content) == (geometry["width"], geometry["height"])
    # The button fills the lower half of the page; the input the top 40% of it.
    x = geometry["x"] + geometry["width"] // 2
    button_y = geometry["y"] + geometry["height"] * 85 // 100
    assert png_pixel(api.get(f"{base}/screenshot").content, x, button_y) == (255, 136, 0)
    click = api.post(f"{base}/mouse/click", json={"x": x, "y": button_y})
    assert click.status_code == 200, click.text
    poll(lambda: title_of(api, desk, wid).startswith("clicked"), what="the title 'clicked'")
    assert api.get(f"{base}/cursor").json()["data"] == {"x": x, "y": button_y}
    assert api.get(f"{base}/windows/current").json()["data"]["id"] == wid

    field_y = geometry["y"] + geometry["height"] * 30 // 100
    api.post(f"{base}/mouse/click", json={"x": x, "y": field_y})
    typed = api.post(f"{base}/keyboard/type", json={"text": "hello desk"})
    assert typed.status_code == 200, typed.text
    poll(lambda: title_of(api, desk, wid).startswith("typed:hello desk"), what="typed text")
    for chord in (["ctrl", "a"], ["ctrl", "c"]):
        assert api.post(f"{base}/keyboard/press", json={"keys": chord}).status_code == 200
    copied = poll(lambda: api.get(f"{base}/clipboard").json()["data"]["text"], what="a copy")
    assert copied == "hello desk"

    put = api.put(f"{base}/clipboard", json={"text": "from the api"})
    assert put.json()["data"] == {"text": "from the api"}
    api.post(f"{base}/keyboard/press", json={"keys": ["ctrl", "a"]})
    api.post(f"{base}/keyboard/press", json={"keys": ["ctrl", "v"]})
    poll(lambda: title_of(api, desk, wid).startswith("typed:from the api"), what="a paste")


def test_windows_are_moved_resized_and_closed(
    api: httpx.Client, desk: dict[str, Any], page: dict[str, Any]
) -> None:
    base = desk["base"]
    assert api.post(f"{base}/launch", json={"application": "terminal"}).status_code == 200
    term = poll(lambda: api.get(f"{base}/windows", params={"application": "st-256color"})
                .json()["data"], what="a terminal (st)")[0]  # fmt: skip
    wid = term["id"]
    assert api.post(f"{base}/windows/{wid}/move", json={"x": 100, "y": 120}).status_code == 200
    geometry = api.get(f"{base}/windows/{wid}/geometry").json()["data"]
    assert (geometry["x"], geometry["y"], geometry["screen"]) == (100, 120, "screen-0")
    # The terminal sizes itself in whole characters: the chromium window takes any size.
    chromium = page["id"]
    assert api.post(f"{base}/windows/{chromium}/restore").status_code == 200
    resized = api.post(f"{base}/windows/{chromium}/resize", json={"width": 640, "height": 480})
    assert resized.status_code == 200, resized.text
    size = api.get(f"{base}/windows/{chromium}/geometry").json()["data"]
    assert (size["width"], size["height"]) == (640, 480)
    assert api.post(f"{base}/windows/{chromium}/maximize").status_code == 200

    assert api.post(f"{base}/windows/{wid}/focus").status_code == 200
    assert api.get(f"{base}/windows/current").json()["data"]["id"] == wid
    assert api.delete(f"{base}/windows/{wid}").status_code == 200
    poll(lambda: all(w["id"] != wid for w in api.get(f"{base}/windows").json()["data"]),
         what="the terminal to close")  # fmt: skip
    gone = api.get(f"{base}/windows/{wid}")
    assert gone.status_code == 404 and gone.json()["status"] == "fail"


def test_a_second_screen_has_its_own_size(api: httpx.Client, desk: dict[str, Any]) -> None:
    base = desk["base"]
    made = api.post(f"{base}/screens", json={"width": 800, "height": 600})
    assert made.status_code == 200, made.text
    screen = made.json()["data"]
    assert screen == {"screen_id": "screen-1", "display": ":1", "width": 800, "height": 600,
                      "vnc_port": 5901, "novnc_port": 6081}  # fmt: skip
    sid = {"screen_id": "screen-1"}
    assert api.get(f"{base}/screen", params=sid).json()["data"] == {"width": 800, "height": 600}
    assert png_size(api.get(f"{base}/screenshot", params=sid).content) == (800, 600)
    listed = [s["screen_id"] for s in api.get(f"{base}/screens").json()["data"]]
    assert listed == ["screen-0", "screen-1"]
    bigger = api.post(f"{base}/screens/screen-1/resize", json={"width": 1024, "height": 768})
    assert bigger.json()["data"]["width"] == 1024
    assert png_size(api.get(f"{base}/screenshot", params=sid).content) == (1024, 768)
    assert api.delete(f"{base}/screens/screen-1").status_code == 200
    assert api.get(f"{base}/screens/screen-1").status_code == 404
    assert api.get(f"{base}/screen", params=sid).status_code == 404
    assert api.delete(f"{base}/screens/screen-0").status_code == 400


def test_the_sdk_and_the_cli(
    api: httpx.Client, desk: dict[str, Any], server: HutchProcess, tmp_path: Path
) -> None:
    from hutch.sdk import Client, Sandbox

    key = api.headers["X-Api-Key"]
    with Client(server.url, key) as client:
        box = Sandbox.connect(desk["id"], client=client)
        assert box.computer.wait_ready() == (1280, 800)
        box.computer.move_mouse(33, 44)
        assert box.computer.cursor() == (33, 44)
        assert png_size(box.computer.screenshot(region=(0, 0, 64, 32))) == (64, 32)
        assert [s.screen_id for s in box.computer.screens()] == ["screen-0"]
        assert any(w.title.endswith("Chromium") for w in box.computer.windows("chromium"))
    env = {"HUTCH_API_URL": server.url, "HUTCH_API_KEY": key}
    shot = tmp_path / "shot.png"
    ran = run_cli(server.home, "computer", "screenshot", desk["id"], "-o", str(shot), env=env)
    assert png_size(shot.read_bytes()) == (1280, 800), ran.stderr
    link = run_cli(server.home, "desktop", desk["id"], env=env).stdout.strip()
    assert link.startswith("http://6080-") and "websockify%3Ftoken%3D" in link
    # --open: the link in this machine's browser too (Python's webbrowser runs $BROWSER).
    browser, opened = tmp_path / "browser", tmp_path / "opened"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    env["BROWSER"] = str(browser)
    again = run_cli(server.home, "desktop", desk["id"], "--open", env=env).stdout.strip()
    assert again.startswith("http://6080-") and again != link, "a new link each time"
    assert opened.read_text().strip() == again


# -- noVNC ----------------------------------------------------------------------------------


def test_the_novnc_link_draws_the_desktop_and_takes_clicks(
    api: httpx.Client, desk: dict[str, Any], page: dict[str, Any]
) -> None:
    """The link loads in Chromium (Debian's, headless, on this machine), noVNC draws the
    screen (the page's orange button where the screenshot has it), and a click on the
    canvas where it shows the button clicks the button in the sandbox (its title)."""
    base, wid = desk["base"], page["id"]
    link = api.get(f"{base}/screens/screen-0/connect").json()["data"]
    assert link["screen_id"] == "screen-0" and link["port"] == 6080
    assert link["path"] == f"websockify?token={link['token']}"
    assert link["url"].startswith("http://6080-") and "vnc.html?" in link["url"]
    geometry = page["geometry"]
    x, y = geometry["x"] + geometry["width"] // 2, geometry["y"] + geometry["height"] * 85 // 100
    expected = png_pixel(api.get(f"{base}/screenshot").content, x, y)
    assert expected == (255, 136, 0), "the page's button is not where the test expects it"
    # Another title first, typed into the page's field (the pointer stays off the button).
    api.post(f"{base}/mouse/click", json={"x": x, "y": geometry["y"] + geometry["height"] // 5})
    api.post(f"{base}/keyboard/press", json={"keys": ["ctrl", "a"]})
    api.post(f"{base}/keyboard/type", json={"text": "novnc"})
    poll(lambda: title_of(api, desk, wid).startswith("typed:novnc"), what="the title typed:novnc")
    with chromium(link_port(link)) as browser:
        tab = novnc_canvas(browser, link, (1280, 800))
        pixel = canvas_pixel(tab, x, y)
        assert all(abs(a - b) <= 24 for a, b in zip(pixel, expected, strict=True)), pixel
        canvas_click(tab, x, y)
        poll(lambda: title_of(api, desk, wid).startswith("clicked"), what="a click via noVNC")
    cursor = api.get(f"{base}/cursor").json()["data"]  # noVNC's scaling may round a pixel
    assert abs(cursor["x"] - x) <= 2 and abs(cursor["y"] - y) <= 2, cursor


def test_a_forged_replaced_or_expired_token_is_refused(
    api: httpx.Client, desk: dict[str, Any]
) -> None:
    base = desk["base"]
    first = api.get(f"{base}/screens/screen-0/connect").json()["data"]
    assert (rfb_greeting(first, first["token"]) or b"").startswith(b"RFB ")
    assert rfb_greeting(first, first["token"][:-2] + "xx") is None
    assert rfb_greeting(first, "") is None
    second = api.get(f"{base}/screens/screen-0/connect").json()["data"]
    assert second["token"] != first["token"]
    assert rfb_greeting(first, first["token"]) is None, "a new link replaces the old one"
    assert (rfb_greeting(second, second["token"]) or b"").startswith(b"RFB ")
    expires_at = datetime.fromisoformat(second["expires_at"]).timestamp()
    assert abs(expires_at - (time.time() + CONNECT_TTL_S)) < 30
    # What the sandbox's websockify checks the token against: the link's expiry. Moved
    # into the past (as if CONNECT_TTL_S had gone by), the same token is refused.
    path = {"path": "/run/hutch-desktop/connect.json"}
    links = json.loads(api.get(f"/v1/sandboxes/{desk['id']}/files", params=path).content)
    assert links["0"] == {"token": second["token"], "expires_at": pytest.approx(expires_at)}
    links["0"]["expires_at"] = time.time() - 1
    put = api.put(f"/v1/sandboxes/{desk['id']}/files", params=path, content=json.dumps(links))
    assert put.status_code == 200
    assert rfb_greeting(second, second["token"]) is None, "an expired link is refused"


@pytest.fixture(scope="module")
def plain(api: httpx.Client) -> Iterator[dict[str, Any]]:
    """A second desktop sandbox, without ingress, its desktop up."""
    box = create(api, rootfs="desktop:1")
    box["base"] = f"/v1/sandboxes/{box['id']}/computer"
    poll(lambda: api.get(f"{box['base']}/screen").status_code == 200, what="the desktop")
    yield box
    api.delete(f"/v1/sandboxes/{box['id']}")


def test_connect_needs_ingress(api: httpx.Client, plain: dict[str, Any]) -> None:
    refused = api.get(f"{plain['base']}/screens/screen-0/connect")
    assert refused.status_code == 409, refused.text
    data = refused.json()["data"]
    assert data["code"] == "desktop_unavailable" and "ingress" in data["message"]


# -- errors -------------------------------------------------------------------------------


def test_a_sandbox_without_a_desktop_is_a_501(api: httpx.Client) -> None:
    box = create(api, shape="s-1vcpu-256mb")
    try:
        for method, path in (("GET", "screen"), ("GET", "screenshot"), ("POST", "mouse/move")):
            answer = api.request(method, f"/v1/sandboxes/{box['id']}/computer/{path}",
                                 json={"x": 1, "y": 1} if method == "POST" else None)  # fmt: skip
            assert answer.status_code == 501, answer.text
            assert answer.json()["status"] == "error" and "desktop" in answer.json()["message"]
    finally:
        api.delete(f"/v1/sandboxes/{box['id']}")


def test_unknown_screens_windows_and_keys(api: httpx.Client, desk: dict[str, Any]) -> None:
    base = desk["base"]
    missing = api.get(f"{base}/screen", params={"screen_id": "screen-5"})
    assert missing.status_code == 404 and missing.json()["status"] == "fail"
    assert api.get(f"{base}/screen", params={"screen_id": "screen-9"}).status_code == 400
    assert api.get(f"{base}/windows/0x7ffffff0").status_code == 404
    assert api.get(f"{base}/windows/nonsense").status_code == 400
    unknown = api.post(f"{base}/keyboard/press", json={"keys": ["ctrl", "NoSuchKeysymAtAll"]})
    assert unknown.status_code == 400 and "NoSuchKeysymAtAll" in unknown.json()["data"]["keys"]
    extra = api.post(f"{base}/mouse/move", json={"x": 1, "y": 1, "z": 3})
    assert extra.status_code == 400 and "z" in extra.json()["data"]
    assert api.get("/v1/sandboxes/sb_nope/computer/screen").status_code == 404


def test_an_action_that_fails_is_a_409(api: httpx.Client, desk: dict[str, Any]) -> None:
    """xdotool gone from the sandbox (its owner may break their desktop): the desktop is up,
    the action cannot be done."""

    def sh(script: str) -> None:
        ran = api.post(f"/v1/sandboxes/{desk['id']}/exec", json={"cmd": script})
        assert ran.json()["data"]["result"]["exit_code"] == 0, ran.text

    sh("mv /usr/bin/xdotool /usr/bin/xdotool.away")
    try:
        failed = api.post(f"{desk['base']}/mouse/move", json={"x": 5, "y": 5})
        assert failed.status_code == 409, failed.text
        data = failed.json()["data"]
        assert data["code"] == "desktop_unavailable" and "xdotool" in data["message"]
    finally:
        sh("mv /usr/bin/xdotool.away /usr/bin/xdotool")
    assert api.post(f"{desk['base']}/mouse/move", json={"x": 5, "y": 5}).status_code == 200


def test_what_the_sandbox_writes_in_the_desktops_files_is_never_a_500(
    api: httpx.Client, desk: dict[str, Any]
) -> None:
    """The desktop's files are in the sandbox, where its owner's programs may write
    anything: hutch reads them as the supervisor does (what it cannot read is the default,
    or nothing), never with a 500."""
    files = f"/v1/sandboxes/{desk['id']}/files"
    base = desk["base"]

    def put(path: str, content: str) -> None:
        assert api.put(files, params={"path": path}, content=content).status_code == 200

    # Links: an entry that is not one, and an expiry that is not a number.
    put("/run/hutch-desktop/connect.json", '{"0": {"token": "t", "expires_at": "soon"}, "1": 3}')
    linked = api.get(f"{base}/screens/screen-0/connect")
    assert linked.status_code == 200, linked.text
    # The wish: not a map of screens (the supervisor keeps screen-0 at its default size).
    put("/run/hutch-desktop/screens.json", '{"screens": ["x"]}')
    made = api.post(f"{base}/screens", json={"width": 640, "height": 480})
    assert made.status_code == 200, made.text
    assert made.json()["data"]["screen_id"] == "screen-1"
    assert api.delete(f"{base}/screens/screen-1").status_code == 200
    # The supervisor's status: not an object. Then the desktop is starting (a 409).
    status = api.get(files, params={"path": "/run/hutch-desktop/status.json"}).text
    put("/run/hutch-desktop/status.json", "[1, 2]")
    try:
        starting = api.get(f"{base}/screen")
        assert starting.status_code == 409, starting.text
        assert starting.json()["data"]["code"] == "desktop_unavailable"
    finally:
        put("/run/hutch-desktop/status.json", status)
    assert api.get(f"{base}/screen").status_code == 200


def test_what_the_sandboxs_tools_print_is_never_a_500(
    api: httpx.Client, desk: dict[str, Any]
) -> None:
    """xdotool and wmctrl are the sandbox's own: replaced by programs that print nonsense,
    the pointer and a window's geometry are a 409 desktop_unavailable, and the window list
    leaves out what is not a window."""

    def sh(script: str) -> None:
        ran = api.post(f"/v1/sandboxes/{desk['id']}/exec", json={"cmd": script})
        assert ran.json()["data"]["result"]["exit_code"] == 0, ran.text

    files = f"/v1/sandboxes/{desk['id']}/files"
    sh("mv /usr/bin/xdotool /usr/bin/xdotool.away && mv /usr/bin/wmctrl /usr/bin/wmctrl.away")
    fakes = {
        "/usr/bin/xdotool": "#!/bin/sh\nprintf 'X=left\\nY=up\\nWIDTH=wide\\nHEIGHT=tall\\n'\n",
        "/usr/bin/wmctrl": "#!/bin/sh\necho 'zz 0 a.b host title'\n",
    }
    for path, script in fakes.items():
        assert api.put(files, params={"path": path}, content=script).status_code == 200
    sh("chmod +x /usr/bin/xdotool /usr/bin/wmctrl")
    try:
        for path in ("cursor", "windows/0x01a00003/geometry"):
            answer = api.get(f"{desk['base']}/{path}")
            assert answer.status_code == 409, answer.text
            assert answer.json()["data"]["code"] == "desktop_unavailable"
        listed = api.get(f"{desk['base']}/windows")
        assert listed.status_code == 200 and listed.json()["data"] == [], listed.text
    finally:
        sh("mv /usr/bin/xdotool.away /usr/bin/xdotool && mv /usr/bin/wmctrl.away /usr/bin/wmctrl")
    assert api.get(f"{desk['base']}/cursor").status_code == 200


def test_the_desktop_comes_back_when_its_x_server_dies(
    api: httpx.Client, desk: dict[str, Any]
) -> None:
    """Kill Xvfb: /screen answers 409 desktop_unavailable while the supervisor starts the
    screen again, then 200 from a new X server (and its windows are gone with the old one)."""
    base = desk["base"]

    def xvfb() -> str:
        ran = api.post(f"/v1/sandboxes/{desk['id']}/exec", json={"cmd": "pidof Xvfb"})
        assert ran.json()["data"]["result"]["exit_code"] == 0, ran.text
        return str(ran.json()["data"]["result"]["stdout"]).strip()

    old = xvfb()
    killed = api.post(f"/v1/sandboxes/{desk['id']}/exec",
                      json={"cmd": "sh", "args": ["-c", f"kill -9 {old}"]})  # fmt: skip
    assert killed.json()["data"]["result"]["exit_code"] == 0, killed.text

    def starting() -> dict[str, Any] | None:
        answer = api.get(f"{base}/screen")
        return answer.json()["data"] if answer.status_code == 409 else None

    assert poll(starting, timeout=10, what="a 409")["code"] == "desktop_unavailable"
    poll(lambda: api.get(f"{base}/screen").status_code == 200, what="the desktop again")
    assert xvfb() not in ("", old), "a new X server"
    assert png_size(api.get(f"{base}/screenshot").content) == (1280, 800)
    chromium = api.get(f"{base}/windows", params={"application": "chromium"})
    assert chromium.status_code == 200 and chromium.json()["data"] == [], chromium.text


def test_screenshots_above_the_rate_are_429s(
    api: httpx.Client, desk: dict[str, Any], plain: dict[str, Any]
) -> None:
    """HUTCH_COMPUTER_SCREENSHOTS_PER_MINUTE is 30 here: a sandbox's 31st screenshot in a
    minute is a 429 (nothing done, Retry-After), its other routes are not limited, and
    another sandbox's screenshots are counted on their own (this module's other tests took
    fewer than 30 of ``desk``'s)."""
    base = plain["base"]
    answers = [api.get(f"{base}/screenshot") for _ in range(30)]
    assert [a.status_code for a in answers] == [200] * 30
    limited = api.get(f"{base}/screenshot")
    assert limited.status_code == 429, limited.text
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["status"] == "fail" and "30" in str(limited.json()["data"])
    assert api.get(f"{base}/screen").status_code == 200, "other routes are not limited"
    assert api.get(f"{desk['base']}/screenshot").status_code == 200, "per sandbox"


def test_a_desktop_from_the_warm_pool_starts_for_its_owner(
    tmp_path: Path, desktop_images: Path
) -> None:
    """A warm pool entry of desktop:1 is prepared without its desktop (a prepared sandbox
    runs nothing but its init, or it is never handed out) and the desktop starts at the
    hand-out: the create is warm, and its desktop comes up."""
    from tests.e2e.test_warm_pool_runc import warm_server
    from tests.support.warm import wait_for_pool

    server = warm_server(tmp_path / "home", desktop_images, 1,
                         HUTCH_WARM_POOL="desktop:1:s-2vcpu-2gb=1")  # fmt: skip
    try:
        with server.client(server.new_key("warm-desk")) as api:
            wait_for_pool(server, 1)
            made = api.post("/v1/sandboxes", json={"shape": "s-2vcpu-2gb", "rootfs": "desktop:1"})
            assert made.status_code == 201, made.text
            assert made.headers["X-Hutch-Warm"] == "1"
            base = f"/v1/sandboxes/{made.json()['data']['id']}/computer"
            poll(lambda: api.get(f"{base}/screen").status_code == 200, what="the desktop")
            assert png_size(api.get(f"{base}/screenshot").content) == (1280, 800)
    finally:
        server.stop()
        remove_instance(server.home)
