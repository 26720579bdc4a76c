"""What the computer-use tests share (``test_computer_*.py``): reading hutch's PNGs,
polling, the noVNC link's first bytes, and Debian's Chromium (driven by Playwright) in a
network namespace of its own, loading a noVNC link and reading its canvas.

Why a namespace: Chromium drops the requests it has in flight whenever the network it
sees changes (``net::ERR_NETWORK_CHANGED``), and the tests on this machine make and remove
interfaces all the time (every sandbox has a veth): noVNC's page then never finished
loading, sometimes for minutes. In a namespace with nothing but its loopback, Chromium
sees no change; a thread of the test forwards that loopback's port to hutch's proxy, on
this machine's loopback (the same port, so the link's URL is unchanged). The namespace is
removed when the browser is done, also on failure."""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "CHROMIUM",
    "PAGE",
    "chromium",
    "novnc_canvas",
    "png_pixel",
    "png_size",
    "poll",
    "rfb_greeting",
]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "computer"
CANVAS = "document.querySelector('#noVNC_container canvas')"
CLONE_NEWNET = 0x40000000
# A page for the tests to click and type into: the field fills its top 40%, the orange
# button its lower half; the title says what happened.
PAGE = """<!doctype html><title>start</title>
<style>
  body { margin: 0 }
  #field { position: fixed; left: 0; top: 0; width: 100%; height: 40%; font-size: 40px }
  #go { position: fixed; left: 0; top: 50%; width: 100%; height: 50%; font-size: 40px;
        background: rgb(255, 136, 0); border: 0 }
</style>
<input id="field" oninput="document.title = 'typed:' + this.value">
<button id="go" onclick="document.title = 'clicked'">Go</button>
"""


def poll(check: Callable[[], Any], *, timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.1)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def png_pixel(data: bytes, x: int, y: int) -> tuple[int, int, int]:
    """A pixel of an 8-bit RGB PNG with filter 0 rows (as hutch writes them)."""
    width, _ = png_size(data)
    at, idat = 8, b""
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind == b"IDAT":
            idat += data[at + 8 : at + 8 + length]
        at += 12 + length
    raw = zlib.decompress(idat)
    row = raw[y * (width * 3 + 1) :]
    assert row[0] == 0
    r, g, b = row[1 + x * 3 : 4 + x * 3]
    return r, g, b


def link_port(link: dict[str, Any]) -> int:
    """The port of hutch's proxy in a noVNC link's URL."""
    return int(link["url"].split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def rfb_greeting(link: dict[str, Any], token: str) -> bytes | None:
    """What websockify says first through the proxy with ``token``: b"RFB 003.008\\n" when
    it lets the connection through to the VNC server, None when it refuses it."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake
    from websockets.sync.client import connect

    host_port = link["url"].split("//", 1)[1].split("/", 1)[0]
    sock = socket.create_connection(("127.0.0.1", link_port(link)), timeout=10)
    uri = f"ws://{host_port}/websockify?token={token}"
    try:
        with connect(uri, sock=sock, subprotocols=["binary"], open_timeout=10) as ws:  # type: ignore[list-item]
            message = ws.recv(timeout=10)
            return message if isinstance(message, bytes) else message.encode()
    except (ConnectionClosed, InvalidHandshake, TimeoutError, EOFError):
        return None


# -- Chromium in a network namespace of its own ------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


def _listen_in(namespace: str, port: int) -> socket.socket:
    """A socket listening on ``namespace``'s 127.0.0.1:``port``. setns moves only the
    calling thread, so a thread of its own makes it (and goes back before it ends)."""
    made: list[socket.socket | BaseException] = []

    def make() -> None:
        here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        there = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
        try:
            _setns(there)
            try:
                listener = socket.socket()
                listener.bind(("127.0.0.1", port))
                listener.listen(64)
                made.append(listener)
            finally:
                _setns(here)
        except BaseException as exc:  # handed to the caller's thread
            made.append(exc)
        finally:
            os.close(here)
            os.close(there)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


def _forward(listener: socket.socket, port: int) -> None:
    """Each connection to ``listener`` (in the namespace) to 127.0.0.1:``port`` here."""
    while True:
        try:
            inner, _ = listener.accept()
        except OSError:
            return  # closed: the browser is done
        try:
            outer = socket.create_connection(("127.0.0.1", port), timeout=10)
            outer.settimeout(None)
        except OSError:
            inner.close()
            continue
        for source, sink in ((inner, outer), (outer, inner)):
            threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


@contextlib.contextmanager
def chromium(port: int) -> Iterator[Any]:
    """Debian's Chromium (Playwright, headless) in a network namespace of its own, which
    reaches this machine's 127.0.0.1:``port`` (hutch's proxy) at its own 127.0.0.1:``port``."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing (make debs-test installs it)")
    from playwright.sync_api import sync_playwright

    namespace = f"hutch-test-browser-{os.getpid()}-{port}"
    wrapper = Path(f"/tmp/{namespace}.sh")
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    listener = None
    try:
        subprocess.run(["ip", "-n", namespace, "link", "set", "lo", "up"], check=True)
        listener = _listen_in(namespace, port)
        threading.Thread(target=_forward, args=(listener, port), daemon=True).start()
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {namespace} {CHROMIUM} "$@"\n')
        wrapper.chmod(0o755)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(wrapper), headless=True)
            try:
                yield browser
            finally:
                browser.close()
    finally:
        if listener is not None:
            listener.close()
        subprocess.run(["ip", "netns", "del", namespace], check=False)
        wrapper.unlink(missing_ok=True)


def novnc_canvas(
    browser: Any, link: dict[str, Any], size: tuple[int, int], *, timeout_s: float = 60
) -> Any:
    """A tab with ``link`` loaded, once noVNC draws the screen (its canvas is ``size``).
    Fails on an error in the page's console (but for what Debian's noVNC always logs)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    tab = browser.new_page(viewport={"width": 1400, "height": 900})
    logged: list[str] = []
    tab.on("console", lambda message: logged.append(f"{message.type}: {message.text}"))
    tab.goto(link["url"], timeout=timeout_s * 1000)
    width, height = size
    drawn = (
        f"() => {{ const c = {CANVAS}; return c && c.width === {width} && c.height === {height}; }}"
    )
    try:
        tab.wait_for_function(drawn, timeout=timeout_s * 1000)
    except PlaywrightTimeout:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / "novnc-failed.png"))
        raise AssertionError(f"noVNC did not draw the screen; console: {logged}") from None
    # Debian's noVNC leaves out the package.json its About box reads its version from.
    noise = ("404 (File not found)", "fetch package.json")
    errors = [line for line in logged if line.startswith("error")]
    assert not [line for line in errors if not any(n in line for n in noise)], logged
    return tab


def canvas_pixel(tab: Any, x: int, y: int, *, timeout_s: float = 30) -> tuple[int, int, int]:
    """The noVNC canvas's pixel at the screen's ``x, y``, once something is drawn there."""
    found = tab.wait_for_function(
        f"""() => {{
            const [r, g, b] = {CANVAS}.getContext('2d').getImageData({x}, {y}, 1, 1).data;
            return r + g + b > 0 ? [r, g, b] : null;
        }}""",
        timeout=timeout_s * 1000,
    ).json_value()
    return found[0], found[1], found[2]


def canvas_click(tab: Any, x: int, y: int) -> None:
    """A click in the page on the noVNC canvas where it shows the screen's ``x, y`` (noVNC
    scales the screen to the page: the canvas's shown size is not its pixels')."""
    box = tab.evaluate(
        f"() => {{ const c = {CANVAS}, r = c.getBoundingClientRect();"
        " return [r.left, r.top, r.width / c.width, r.height / c.height]; }"
    )
    left, top, sx, sy = box
    tab.mouse.click(left + x * sx, top + y * sy)
