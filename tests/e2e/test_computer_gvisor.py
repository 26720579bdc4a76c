"""Computer use on a real ``desktop:1`` sandbox of the gvisor runtime: the desktop comes up
in gVisor's kernel, a screenshot is the size of ``/screen``, a click and typed keys reach a
terminal (st: a pseudo-terminal of gVisor's devpts, and a shell in it), and a desktop
paused (hibernated: written to a snapshot, nothing of it left running) and resumed keeps
its windows where they were, its terminal's shell included.

One server and one desktop sandbox serve the module (under gVisor's ptrace platform every
system call is slow, so the module does few things, each once). The desktop image is
built once, by the session's ``desktop_images`` fixture."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_computer_runc import png_pixel, png_size, poll
from tests.e2e.test_gvisor import disk_unmounted, runsc_sandboxes
from tests.e2e.test_sandboxes_runc import runc_server, sh
from tests.support.server import HutchProcess, remove_instance

TIMEOUT_S = 120  # ptrace: a desktop's start, a window's, are seconds, not tenths


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, desktop_images: Path
) -> Iterator[HutchProcess]:
    home = tmp_path_factory.mktemp("computer-gvisor") / "home"
    process = runc_server(home, desktop_images,
                          env={"HUTCH_COMPUTER_SCREENSHOTS_PER_MINUTE": "600"})  # fmt: skip
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture(scope="module")
def api(server: HutchProcess) -> Iterator[httpx.Client]:
    with server.client(server.new_key("gdesk")) as client:
        client.timeout = httpx.Timeout(TIMEOUT_S)
        yield client


@pytest.fixture(scope="module")
def desk(api: httpx.Client) -> Iterator[dict[str, Any]]:
    made = api.post("/v1/sandboxes", json={"shape": "s-2vcpu-2gb", "rootfs": "desktop:1",
                                           "runtime": "gvisor"})  # fmt: skip
    assert made.status_code == 201, made.text
    box: dict[str, Any] = made.json()["data"]
    assert box["runtime"] == "gvisor"
    box["base"] = f"/v1/sandboxes/{box['id']}/computer"
    poll(lambda: api.get(f"{box['base']}/screen").status_code == 200, timeout=TIMEOUT_S,
         what="the desktop")  # fmt: skip
    yield box
    api.delete(f"/v1/sandboxes/{box['id']}")


def terminals(api: httpx.Client, desk: dict[str, Any]) -> list[dict[str, Any]]:
    answer = api.get(f"{desk['base']}/windows", params={"application": "st-256color"})
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["data"]
    return found


def geometry(api: httpx.Client, desk: dict[str, Any], wid: str) -> dict[str, Any]:
    answer = api.get(f"{desk['base']}/windows/{wid}/geometry")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()["data"]
    return found


def typed_into(api: httpx.Client, desk: dict[str, Any], wid: str, marker: str) -> None:
    """Click into the terminal ``wid``, type a command that leaves ``marker`` in a file,
    and wait for the file: the click focused it, the keys reached its shell through its
    pseudo-terminal."""
    at = geometry(api, desk, wid)
    middle = {"x": at["x"] + at["width"] // 2, "y": at["y"] + at["height"] // 2}
    click = api.post(f"{desk['base']}/mouse/click", json=middle)
    assert click.status_code == 200, click.text
    poll(lambda: api.get(f"{desk['base']}/windows/current").json()["data"]["id"] == wid,
         timeout=TIMEOUT_S, what="the clicked terminal to have the focus")  # fmt: skip
    command = f"echo {marker} $(tty) > /tmp/typed-{marker}\n"
    typed = api.post(f"{desk['base']}/keyboard/type", json={"text": command})
    assert typed.status_code == 200, typed.text

    def written() -> str:
        return str(sh(api, desk, f"cat /tmp/typed-{marker} 2>/dev/null")["stdout"])

    line = poll(written, timeout=TIMEOUT_S, what=f"the typed command's file /tmp/typed-{marker}")
    # The shell that ran it sits on a pseudo-terminal of gVisor's devpts.
    assert line.startswith(f"{marker} /dev/pts/"), line


def _exactly(found: list[dict[str, Any]], count: int) -> list[dict[str, Any]] | None:
    return found if len(found) == count else None


@pytest.fixture(scope="module")
def two_terminals(api: httpx.Client, desk: dict[str, Any]) -> list[dict[str, Any]]:
    """Two terminals (st), the second moved off the first, and both with a shell."""
    for count in (1, 2):
        launched = api.post(f"{desk['base']}/launch", json={"application": "terminal"})
        assert launched.status_code == 200, launched.text
        found = poll(lambda n=count: _exactly(terminals(api, desk), n),
                     timeout=TIMEOUT_S, what=f"{count} terminal window(s)")  # fmt: skip
    # Side by side, apart (the last one opened would cover the first's middle otherwise).
    for window, (x, y) in zip(found, ((10, 10), (640, 400)), strict=True):
        moved = api.post(f"{desk['base']}/windows/{window['id']}/move", json={"x": x, "y": y})
        assert moved.status_code == 200, moved.text
    return found


def test_the_desktop_runs_and_a_screenshot_is_the_size_of_the_screen(
    api: httpx.Client, desk: dict[str, Any]
) -> None:
    # gVisor's own kernel answers inside, not the host's: this desktop runs on gvisor.
    assert sh(api, desk, "uname -r")["stdout"].strip() != platform.release()
    screen = api.get(f"{desk['base']}/screen").json()["data"]
    assert screen == {"width": 1280, "height": 800}
    shot = api.get(f"{desk['base']}/screenshot")
    assert shot.status_code == 200 and shot.headers["content-type"] == "image/png"
    assert png_size(shot.content) == (screen["width"], screen["height"])
    region = api.get(f"{desk['base']}/screenshot",
                     params={"x": 10, "y": 20, "width": 200, "height": 100})  # fmt: skip
    assert png_size(region.content) == (200, 100)


def test_a_terminal_opens_and_takes_clicks_and_keys(
    api: httpx.Client, desk: dict[str, Any], two_terminals: list[dict[str, Any]]
) -> None:
    first, second = two_terminals
    typed_into(api, desk, first["id"], "one")
    typed_into(api, desk, second["id"], "two")  # the click moved the focus to the other


def test_a_paused_and_resumed_desktop_keeps_its_windows(
    api: httpx.Client, desk: dict[str, Any], two_terminals: list[dict[str, Any]],
    server: HutchProcess,
) -> None:  # fmt: skip
    windows = api.get(f"{desk['base']}/windows").json()["data"]
    places = {w["id"]: geometry(api, desk, w["id"]) for w in windows}
    assert {t["id"] for t in two_terminals} <= set(places)
    before = api.get(f"{desk['base']}/screenshot").content

    paused = api.post(f"/v1/sandboxes/{desk['id']}/pause")
    assert paused.status_code == 202, paused.text
    assert paused.json()["data"]["hibernated"] is True, paused.json()
    # Nothing of it runs while paused (its memory went back to the host), nor is its
    # disk mounted.
    assert desk["id"] not in runsc_sandboxes(server.home)
    assert disk_unmounted(server.home, desk["id"])
    gone = api.get(f"{desk['base']}/screen")
    assert gone.status_code == 409, gone.text

    resumed = api.post(f"/v1/sandboxes/{desk['id']}/resume")
    assert resumed.status_code == 202, resumed.text
    poll(lambda: api.get(f"{desk['base']}/screen").status_code == 200, timeout=TIMEOUT_S,
         what="the desktop after the resume")  # fmt: skip
    # The same windows, where they were, and the same picture of them.
    assert api.get(f"{desk['base']}/windows").json()["data"] == windows
    assert {wid: geometry(api, desk, wid) for wid in places} == places
    after = api.get(f"{desk['base']}/screenshot").content
    assert png_size(after) == png_size(before)
    first = places[two_terminals[0]["id"]]
    spot = (first["x"] + 5, first["y"] + 5)
    assert png_pixel(after, *spot) == png_pixel(before, *spot)
    # The terminals' shells survived too: keys still reach them.
    typed_into(api, desk, two_terminals[0]["id"], "after")
