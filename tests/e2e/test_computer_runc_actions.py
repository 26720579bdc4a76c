"""Every action of computer use (CreateOS §15) through the SDK's ``sandbox.computer``, on a
real ``desktop:1`` runc sandbox, each seen where a user would see it: a page in Chromium
(a file in the sandbox, opened by its path) writes the events it gets into its title, so
a scroll, a drag, a button held and released, a double and a middle click, keys held and
released each show there; a window minimized leaves the screenshot and comes back when
restored; an application launched with a URI shows it; a sandbox has at most 8 screens.
And the desktop is supervised: its window manager, VNC server and websockify killed are
started again (its windows stay), and its supervisor killed is started again by the next
call (409 meanwhile).

One server and one desktop sandbox serve the module (the image is the session's)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.computer_help import png_pixel, poll, rfb_greeting
from tests.e2e.test_sandboxes_runc import runc_server, sh
from tests.support.server import HutchProcess, remove_instance

BLUE = (0, 136, 255)
# Every event the page gets goes into its title (the last eight): ``down0@x,y`` (button 0,
# 1 or 2 pressed at screen x, y), ``up0@x,y``, ``dbl``, ``wheeldown`` (up, left, right),
# ``kd:Shift`` (a key down), ``ku:Shift``.
EVENTS = """<!doctype html><title>events</title>
<style>html, body { margin: 0; height: 100%; background: rgb(0, 136, 255) }</style>
<script>
let seen = [];
function note(what) { seen = [...seen, what].slice(-8); document.title = seen.join(' '); }
const at = (e) => `${e.button}@${e.screenX},${e.screenY}`;
addEventListener('mousedown', (e) => {
  if (e.button === 1) e.preventDefault();  // no autoscroll
  note('down' + at(e));
});
addEventListener('mouseup', (e) => note('up' + at(e)));
addEventListener('dblclick', () => note('dbl'));
addEventListener('contextmenu', (e) => e.preventDefault());
addEventListener('wheel', (e) => note('wheel' + (e.deltaY > 0 ? 'down' : e.deltaY < 0 ? 'up'
  : e.deltaX > 0 ? 'right' : 'left')), { passive: true });
addEventListener('keydown', (e) => note('kd:' + e.key));
addEventListener('keyup', (e) => note('ku:' + e.key));
</script>
"""
OTHER = "<!doctype html><title>launched</title><p>launched with a URI</p>"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, desktop_images: Path
) -> Iterator[HutchProcess]:
    home = tmp_path_factory.mktemp("computer-actions") / "home"
    env = {"HUTCH_PROXY_ENABLED": "true", "HUTCH_PROXY_PORT": "0"}
    process = runc_server(home, desktop_images, env=env)
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture(scope="module")
def api(server: HutchProcess) -> Iterator[httpx.Client]:
    with server.client(server.new_key("desk-actions")) as client:
        client.timeout = httpx.Timeout(60)
        yield client


@pytest.fixture(scope="module")
def box(api: httpx.Client, server: HutchProcess) -> Iterator[Any]:
    """The desktop sandbox, as the SDK's blocking ``Sandbox`` (``box.computer``)."""
    from hutch.sdk import Client, Sandbox

    made = api.post("/v1/sandboxes", json={"shape": "s-2vcpu-2gb", "rootfs": "desktop:1",
                                           "ingress_enabled": True})  # fmt: skip
    assert made.status_code == 201, made.text
    ident = made.json()["data"]["id"]
    files = f"/v1/sandboxes/{ident}/files"
    for path, page in (("/srv/events.html", EVENTS), ("/srv/other.html", OTHER)):
        assert api.put(files, params={"path": path}, content=page.encode()).status_code == 200
    try:
        with Client(server.url, api.headers["X-Api-Key"]) as client:
            sandbox = Sandbox.connect(ident, client=client)
            assert sandbox.computer.wait_ready() == (1280, 800)
            yield sandbox
    finally:
        api.delete(f"/v1/sandboxes/{ident}")


@pytest.fixture(scope="module")
def page(box: Any) -> dict[str, Any]:
    """The events page, opened by its path and maximized: its window's id and geometry."""
    box.computer.open("/srv/events.html")

    def window() -> Any:
        return next((w for w in box.computer.windows("chromium") if w.title == "events - Chromium"),
                    None)  # fmt: skip

    wid = poll(window, what="the events page's window").id
    box.computer.window_action(wid, "maximize")
    geometry = poll(lambda: (g := box.computer.window_geometry(wid)).width > 1200 and g,
                    what="a maximized window")  # fmt: skip
    middle = (geometry.x + geometry.width // 2, geometry.y + geometry.height // 2)
    return {"id": wid, "geometry": geometry, "middle": middle}


def seen(box: Any, page: dict[str, Any], *events: str) -> bool:
    title = box.computer.window(page["id"]).title.removesuffix(" - Chromium")
    return all(event in title.split() for event in events)


def test_scroll_drag_and_buttons_held_and_released(box: Any, page: dict[str, Any]) -> None:
    computer, (x, y) = box.computer, page["middle"]
    computer.move_mouse(x, y)
    computer.scroll("down", 3)
    poll(lambda: seen(box, page, "wheeldown"), what="a wheel down")
    computer.scroll("up")
    poll(lambda: seen(box, page, "wheelup"), what="a wheel up")
    computer.scroll("right", 2)
    poll(lambda: seen(box, page, "wheelright"), what="a wheel right")

    computer.drag((x - 200, y - 100), (x + 150, y + 120))
    poll(lambda: seen(box, page, f"down0@{x - 200},{y - 100}", f"up0@{x + 150},{y + 120}"),
         what="a drag: pressed at its start, released at its end")  # fmt: skip
    assert computer.cursor() == (x + 150, y + 120)

    computer.move_mouse(x, y)
    computer.mouse_down("right")
    poll(lambda: seen(box, page, f"down2@{x},{y}"), what="the right button held")
    assert not seen(box, page, f"up2@{x},{y}"), "the button went up on its own"
    computer.mouse_up("right")
    poll(lambda: seen(box, page, f"up2@{x},{y}"), what="the right button released")

    computer.move_mouse(x + 30, y + 5)
    computer.click()  # no x, y: where the pointer is
    poll(lambda: seen(box, page, f"down0@{x + 30},{y + 5}", f"up0@{x + 30},{y + 5}"),
         what="a click where the pointer is")  # fmt: skip
    computer.click(x + 10, y, count=2)
    poll(lambda: seen(box, page, "dbl"), what="a double click")
    computer.click(x + 20, y, button="middle")
    poll(lambda: seen(box, page, f"down1@{x + 20},{y}", f"up1@{x + 20},{y}"),
         what="a middle click")  # fmt: skip


def test_keys_held_and_released(box: Any, page: dict[str, Any]) -> None:
    computer = box.computer
    computer.window_action(page["id"], "focus")
    computer.key_down("shift", "a")
    poll(lambda: seen(box, page, "kd:Shift", "kd:A"), what="shift and a held")
    assert not seen(box, page, "ku:Shift"), "shift went up on its own"
    computer.key_up("shift", "a")
    poll(lambda: seen(box, page, "ku:Shift"), what="shift released")
    computer.press("ctrl")
    poll(lambda: seen(box, page, "kd:Control", "ku:Control"), what="ctrl pressed")


def test_a_window_minimized_and_restored(box: Any, page: dict[str, Any]) -> None:
    """Minimized, the page leaves the screen; restored (no longer minimized nor maximized:
    its size before), it is back and has the focus; maximized again, as it was."""
    computer, wid = box.computer, page["id"]

    def colour(at: tuple[int, int]) -> tuple[int, int, int]:
        return png_pixel(computer.screenshot(), *at)

    computer.move_mouse(1279, 799)  # the pointer (drawn in screenshots) off the spots
    poll(lambda: colour(page["middle"]) == BLUE, what="the page on the screen")
    computer.window_action(wid, "minimize")
    poll(lambda: colour(page["middle"]) != BLUE, what="the page gone from the screen")
    computer.window_action(wid, "restore")
    restored = computer.window_geometry(wid)
    middle = (restored.x + restored.width // 2, restored.y + restored.height // 2)
    poll(lambda: colour(middle) == BLUE, what="the page back")
    assert computer.current_window().id == wid
    computer.window_action(wid, "maximize")
    poll(lambda: computer.window_geometry(wid) == page["geometry"], what="maximized again")


def test_the_rest_of_the_sdk(box: Any, page: dict[str, Any]) -> None:
    """Typing, the clipboard, a window moved and resized, a screen resized: each through
    its SDK method, each read back."""
    computer, wid = box.computer, page["id"]
    computer.window_action(wid, "focus")
    computer.type("q")
    poll(lambda: seen(box, page, "kd:q", "ku:q"), what="a typed q")
    computer.set_clipboard("from the sdk")
    assert computer.get_clipboard() == "from the sdk"
    computer.window_action(wid, "restore")
    computer.resize_window(wid, 700, 500)
    computer.move_window(wid, 50, 60)
    at = computer.window_geometry(wid)
    assert (at.x, at.y, at.width, at.height, at.screen) == (50, 60, 700, 500, "screen-0")
    computer.window_action(wid, "maximize")
    poll(lambda: computer.window_geometry(wid) == page["geometry"], what="maximized again")
    made = computer.create_screen(320, 200)
    try:
        resized = computer.resize_screen(made.screen_id, 400, 300)
        assert (resized.width, resized.height) == (400, 300)
        assert computer.screen(screen_id=made.screen_id) == (400, 300)
    finally:
        computer.delete_screen(made.screen_id)


def test_an_application_launched_with_a_uri(box: Any, page: dict[str, Any]) -> None:
    computer = box.computer
    computer.launch("browser", "file:///srv/other.html")
    poll(lambda: any(w.title.startswith("launched") for w in computer.windows("chromium")),
         what="Chromium showing the launched URI")  # fmt: skip


def test_at_most_eight_screens(box: Any) -> None:
    from hutch.sdk.errors import ConflictError

    computer = box.computer
    made = [computer.create_screen()]  # no size: screen-0's
    made += [computer.create_screen(64, 64) for _ in range(6)]
    try:
        assert [s.screen_id for s in made] == [f"screen-{n}" for n in range(1, 8)]
        assert (made[0].width, made[0].height) == (1280, 800)
        assert computer.get_screen("screen-7").display == ":7"
        assert computer.screen(screen_id="screen-7") == (64, 64)
        with pytest.raises(ConflictError) as refused:
            computer.create_screen(64, 64)
        assert refused.value.status == 409 and "8 screens" in str(refused.value)
    finally:
        for screen in made:
            computer.delete_screen(screen.screen_id)
    assert [s.screen_id for s in computer.screens()] == ["screen-0"]


# -- supervision ------------------------------------------------------------------------------


def pids(api: httpx.Client, box: Any, program: str) -> list[str]:
    """The oldest process whose command line has ``program`` (websockify is a Python
    script, and forks one child a connection); the pattern ``[o]penbox`` does not match
    the shell that runs pgrep."""
    pattern = f"[{program[0]}]{program[1:]}"
    return str(sh(api, {"id": box.id}, f"pgrep -o -f '{pattern}' || true")["stdout"]).split()


def test_the_desktops_parts_are_started_again_when_they_die(
    api: httpx.Client, box: Any, page: dict[str, Any]
) -> None:
    """openbox, x11vnc and websockify killed (-9): each is started again, the windows
    stay where they were, and the noVNC link works again."""
    computer = box.computer
    link = computer.connect()  # x11vnc and websockify run once a link was asked for
    link_data = {"url": link.url}
    assert (rfb_greeting(link_data, link.token) or b"").startswith(b"RFB ")
    windows = sorted((w.id, w.title) for w in computer.windows())
    place = computer.window_geometry(page["id"])
    for program in ("openbox", "x11vnc", "websockify"):
        before = pids(api, box, program)
        assert len(before) == 1, (program, before)
        sh(api, {"id": box.id}, f"kill -9 {before[0]}")
        poll(lambda p=program, b=before: pids(api, box, p) not in ([], b),  # type: ignore[misc]
             what=f"{program} started again")  # fmt: skip
    poll(lambda: (rfb_greeting(link_data, link.token) or b"").startswith(b"RFB "),
         what="the link through the new x11vnc and websockify")  # fmt: skip
    assert sorted((w.id, w.title) for w in computer.windows()) == windows
    assert computer.window_geometry(page["id"]) == place

    def restarts() -> int:
        status = sh(api, {"id": box.id}, "cat /run/hutch-desktop/status.json")["stdout"]
        return int(json.loads(status)["screens"]["0"]["restarts"])

    poll(lambda: restarts() == 3, what="three restarts in the supervisor's status")
    # x11vnc (the new one too) runs with 256 open files at most: it asks every descriptor
    # up to its limit whether it is open, which under gVisor took a minute with 20,000.
    limits = sh(api, {"id": box.id}, f"cat /proc/{pids(api, box, 'x11vnc')[0]}/limits")
    assert any(line.startswith("Max open files") and line.split()[3] == "256"
               for line in limits["stdout"].splitlines()), limits  # fmt: skip


def test_a_killed_supervisor_is_started_again(api: httpx.Client, box: Any) -> None:
    """Last in the module: the new supervisor starts the desktop again (its windows go).
    The next computer call finds the supervisor gone, starts it and answers 409."""
    base = f"/v1/sandboxes/{box.id}/computer"
    # (The patterns are written so that they do not match the shell that runs them.)
    old = sh(api, {"id": box.id}, "pgrep -f 'desktop[.]main'")["stdout"].split()
    assert len(old) == 1, old
    killed = sh(api, {"id": box.id}, "pkill -9 -f 'desktop[.]main'; echo $?")
    assert killed["stdout"].strip() == "0", killed
    starting = api.get(f"{base}/screen")
    assert starting.status_code == 409, starting.text
    assert starting.json()["data"]["code"] == "desktop_unavailable"
    poll(lambda: api.get(f"{base}/screen").status_code == 200, what="the desktop again")
    supervisor = sh(api, {"id": box.id}, "pgrep -f 'desktop[.]main'")["stdout"].split()
    assert len(supervisor) == 1 and supervisor[0] not in old, (supervisor, old)
    assert box.computer.screenshot()[:8] == b"\x89PNG\r\n\x1a\n"
