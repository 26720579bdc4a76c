"""Computer use: the desktop of a ``desktop:1`` sandbox, seen, clicked and typed into.

Everything goes through the sandbox's guest agent, as exec and files do: a screenshot
reads the screen's framebuffer file (:mod:`hutch.guest.desktop` keeps ``Xvfb -fbdir``
running) and encodes it here (:mod:`hutch.core.computer_png`); an action runs xdotool,
wmctrl or xclip (:mod:`hutch.core.computer_input` builds their command lines); screens are
the supervisor's wish file, which it follows within 0.1 s. Window operations live in
:mod:`hutch.core.computer_windows`, screens in :mod:`hutch.core.computer_screens`.

Errors (CreateOS §15): :class:`NoDesktop` (501) on a sandbox whose image has no desktop;
:func:`desktop_unavailable` (409, ``data.code`` ``desktop_unavailable``) while the desktop
starts and when an action fails on a live one; :class:`NotFound` (404) for a screen or
window that does not exist; :class:`RateLimited` (429) above
``HUTCH_COMPUTER_SCREENSHOTS_PER_MINUTE`` screenshots of one sandbox.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass
from typing import Any

from hutch.core.catalog import DESKTOP_ROOTFS
from hutch.core.computer_png import FramebufferError, Region, parse_xwd, png
from hutch.core.errors import Conflict, HutchError, InvalidInput, NotFound, Unavailable
from hutch.core.identity import Principal
from hutch.core.ratelimit import RateLimiter
from hutch.core.sandboxes import SandboxService
from hutch.guest import desktop
from hutch.host.guest import (
    ExecExit,
    ExecOutput,
    ExecRequest,
    GuestClient,
    GuestError,
    GuestUnreachable,
)
from hutch.host.images import image_rootfs
from hutch.host.layers import resolve_image
from hutch.settings import Settings
from hutch.store.models import SandboxRecord

__all__ = [
    "Desktop",
    "DesktopService",
    "NoDesktop",
    "ScreenState",
    "desktop_unavailable",
    "screen_number",
]

MAX_SCREENS = 8
ACTION_TIMEOUT_S = 30.0
_SCREEN_ID = re.compile(r"^screen-([0-7])$")
# The desktop's supervisor, as desktop:1's recipe starts it.
SUPERVISOR = (
    "/usr/bin/python3", "-S", "-E", "-s", "-c",
    "import sys; sys.path.append('/.hutch'); from guest import desktop; desktop.main()",
)  # fmt: skip


class NoDesktop(HutchError):
    status = 501
    default_code = "desktop_not_supported"


def desktop_unavailable(message: str) -> Conflict:
    """409 with ``data: {"code": "desktop_unavailable", "message": …}`` (CreateOS's shape)."""
    return Conflict(message, code="desktop_unavailable",
                    fields={"code": "desktop_unavailable", "message": message})  # fmt: skip


def screen_number(screen_id: str) -> int:
    match = _SCREEN_ID.match(screen_id)
    if match is None:
        raise InvalidInput("screen_id must be screen-0 … screen-7", field="screen_id")
    return int(match.group(1))


@dataclass(frozen=True, kw_only=True)
class ScreenState:
    number: int
    width: int
    height: int
    state: str
    error: str
    vnc: str = "off"

    @property
    def screen_id(self) -> str:
        return f"screen-{self.number}"

    @property
    def display(self) -> str:
        return f":{self.number}"

    @property
    def vnc_port(self) -> int:
        return desktop.VNC_BASE + self.number

    @property
    def novnc_port(self) -> int:
        return desktop.NOVNC_BASE + self.number


@dataclass(frozen=True, kw_only=True)
class Desktop:
    """One running desktop sandbox, as a request found it."""

    record: SandboxRecord
    guest: GuestClient

    async def read(self, path: str) -> bytes | None:
        """A file inside, or None if it does not exist."""
        try:
            download = await self.guest.read_file(path)
        except GuestError as exc:
            if exc.code == "not_found":
                return None
            raise desktop_unavailable(f"cannot read {path}: {exc.message}") from exc
        except GuestUnreachable as exc:
            raise _unreachable() from exc
        return b"".join([chunk async for chunk in download.chunks])

    async def write(self, path: str, data: bytes) -> None:
        async def body() -> AsyncIterable[bytes]:
            yield data

        try:
            await self.guest.write_file(path, body(), mode=0o600)
        except GuestError as exc:
            raise desktop_unavailable(f"cannot write {path}: {exc.message}") from exc
        except GuestUnreachable as exc:
            raise _unreachable() from exc

    async def run(
        self, screen: int, argv: Sequence[str], *, stdin: bytes | None = None
    ) -> tuple[int, str, str]:
        """Run ``argv`` on display ``:screen``; its exit code, stdout and stderr."""
        request = ExecRequest(argv=list(argv), env={"DISPLAY": f":{screen}"},
                              timeout_s=ACTION_TIMEOUT_S, stdin=stdin)  # fmt: skip
        out, err = bytearray(), bytearray()
        done = ExecExit(None, "no exit status")
        try:
            async for event in self.guest.exec(request):
                if isinstance(event, ExecOutput):
                    (out if event.stream == "stdout" else err).extend(event.data[: 1 << 20])
                else:
                    done = event
        except GuestError as exc:
            raise desktop_unavailable(f"{argv[0]} did not run: {exc.message}") from exc
        except GuestUnreachable as exc:
            raise _unreachable() from exc
        if done.exit_code is None:
            raise desktop_unavailable(f"{argv[0]} did not run: {done.error}")
        return done.exit_code, out.decode(errors="replace"), err.decode(errors="replace")

    async def act(self, screen: int, argv: Sequence[str], *, stdin: bytes | None = None) -> str:
        """Run ``argv``; its stdout, or a 409 ``desktop_unavailable`` saying why it failed."""
        code, out, err = await self.run(screen, argv, stdin=stdin)
        if "No such key name" in err:  # xdotool skips an unknown key and still exits 0
            name = err.split("No such key name", 1)[1].split(".", 1)[0].strip(" '")
            raise InvalidInput(f"unknown key {name!r}", field="keys")
        if code != 0:
            why = err.strip().splitlines()[-1] if err.strip() else f"exit code {code}"
            raise desktop_unavailable(f"{argv[0]} failed: {why}")
        return out

    async def spawn(self, screen: int, argv: Sequence[str], *, field: str) -> int:
        request = ExecRequest(argv=list(argv), env={"DISPLAY": f":{screen}"})
        try:
            return await self.guest.spawn(request, log=f"{desktop.STATE_DIR}/apps.log")
        except GuestError as exc:
            raise InvalidInput(exc.message, field=field) from exc
        except GuestUnreachable as exc:
            raise _unreachable() from exc


def _unreachable() -> Unavailable:
    return Unavailable("the sandbox's agent does not answer; it may be stopping")


class DesktopService:
    """The computer-use operations that need a screen (the routes of §15 but windows and
    screens, which extend this: :class:`hutch.core.computer_screens.ComputerService`)."""

    def __init__(self, settings: Settings, sandboxes: SandboxService) -> None:
        self._settings = settings
        self._sandboxes = sandboxes
        self._shots = RateLimiter(settings.computer_screenshots_per_minute,
                                  per="this sandbox's screenshots")  # fmt: skip
        self._locks: dict[str, asyncio.Lock] = {}

    # -- finding the desktop ----------------------------------------------------------

    def has_desktop(self, record: SandboxRecord) -> bool:
        """Whether the sandbox's image is ``desktop:1`` or built on it (a template)."""
        if record.rootfs == DESKTOP_ROOTFS:
            return True
        images = self._settings.images_path
        base = image_rootfs(images, DESKTOP_ROOTFS)
        image = resolve_image(self._settings.home, images, record.rootfs)
        return base is not None and image is not None and base in image.lowers

    async def desktop(self, user: Principal, ident: str) -> Desktop:
        """The user's running desktop sandbox: 404 if not theirs, 501 without a desktop,
        409 if it is not running."""
        try:
            record, guest = await self._sandboxes.running_guest(user, ident)
        except Conflict:
            record = await self._sandboxes.get(user, ident)
            await self._check_desktop(record)
            raise
        await self._check_desktop(record)
        return Desktop(record=record, guest=guest)

    async def _check_desktop(self, record: SandboxRecord) -> None:
        if not await asyncio.to_thread(self.has_desktop, record):
            raise NoDesktop(
                f"sandbox {record.name} runs {record.rootfs or 'an image'} without a desktop; "
                f"create one with rootfs {DESKTOP_ROOTFS!r} for computer use"
            )

    async def screens(self, desk: Desktop) -> dict[int, ScreenState]:
        """The screens the supervisor reports; starts the supervisor if none runs (then
        the desktop is starting: 409)."""
        raw = await desk.read(desktop.STATUS)
        status: dict[str, Any] = {}
        if raw is not None:
            try:
                status = json.loads(raw)
            except ValueError:
                status = {}
            if not isinstance(status, dict):  # the sandbox may write anything there
                status = {}
        if not status or not await self._supervised(desk, status):
            await self._start_supervisor(desk)
            raise desktop_unavailable("the desktop is starting; retry in a moment")
        found: dict[int, ScreenState] = {}
        screens = status.get("screens")
        for key, item in (screens if isinstance(screens, dict) else {}).items():
            try:
                number = int(key)
                found[number] = ScreenState(number=number, width=int(item["width"]),
                                            height=int(item["height"]),
                                            state=str(item["state"]),
                                            error=str(item.get("error") or ""),
                                            vnc=str(item.get("vnc") or "off"))  # fmt: skip
            except (KeyError, TypeError, ValueError):
                continue
        return found

    async def _supervised(self, desk: Desktop, status: dict[str, Any]) -> bool:
        """Whether the supervisor that wrote ``status`` still runs."""
        pid = status.get("pid")
        if not isinstance(pid, int):
            return False
        cmdline = await desk.read(f"/proc/{pid}/cmdline")
        return cmdline is not None and b"desktop.main()" in cmdline

    async def _start_supervisor(self, desk: Desktop) -> None:
        """Start the desktop (a supervisor already running exits at once: a lock)."""
        request = ExecRequest(argv=list(SUPERVISOR), env={})
        try:
            await desk.guest.spawn(request, log="/var/log/hutch-desktop.log")
        except GuestError as exc:
            raise desktop_unavailable(f"the desktop cannot start: {exc.message}") from exc
        except GuestUnreachable as exc:
            raise _unreachable() from exc

    async def screen(self, desk: Desktop, screen_id: str, *, ready: bool = True) -> ScreenState:
        """Screen ``screen_id``: 404 if there is none, 409 until it is up (when ``ready``)."""
        number = screen_number(screen_id)
        found = (await self.screens(desk)).get(number)
        if found is None:
            raise NotFound(f"no screen {screen_id} in this sandbox", field="screen_id")
        if ready and found.state != "ready":
            detail = f": {found.error}" if found.error else "; retry in a moment"
            raise desktop_unavailable(f"{screen_id} is starting{detail}")
        return found

    async def ready_screen(
        self, user: Principal, ident: str, screen_id: str
    ) -> tuple[Desktop, ScreenState]:
        desk = await self.desktop(user, ident)
        return desk, await self.screen(desk, screen_id)

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    # -- seeing -----------------------------------------------------------------------

    async def screenshot(
        self,
        user: Principal,
        ident: str,
        screen_id: str,
        *,
        window_id: int | None = None,
        area: tuple[int, int, int | None, int | None] = (0, 0, None, None),
    ) -> bytes:
        """The screen as PNG bytes: all of it, a window of it (the part on the screen), or
        the ``area`` x, y, width, height (width/height None: to the screen's edge)."""
        number = screen_number(screen_id)
        desk = await self.desktop(user, ident)
        self._shots.hit((desk.record.id, "screenshot"))
        await self.screen(desk, screen_id, ready=False)  # 404, or 409 with no supervisor
        raw = await desk.read(desktop.framebuffer(number))
        if raw is None:
            raise desktop_unavailable(f"{screen_id} has no framebuffer yet; retry in a moment")
        try:
            fb = parse_xwd(raw)
        except FramebufferError as exc:
            raise desktop_unavailable(f"{screen_id}: {exc}") from exc
        if window_id is not None:
            from hutch.core.computer_windows import window_geometry

            geometry = await window_geometry(desk, number, window_id)
            x0, y0 = max(geometry.x, 0), max(geometry.y, 0)
            x1 = min(geometry.x + geometry.width, fb.width)
            y1 = min(geometry.y + geometry.height, fb.height)
            if x1 <= x0 or y1 <= y0:
                raise desktop_unavailable(f"window {window_id:#x} is off the screen")
            region = Region(x=x0, y=y0, width=x1 - x0, height=y1 - y0)
        else:
            x, y, width, height = area
            if x >= fb.width or y >= fb.height:
                raise InvalidInput(f"x, y must lie on the {fb.width}x{fb.height} screen", field="x")
            width = fb.width - x if width is None else width
            height = fb.height - y if height is None else height
            if x + width > fb.width or y + height > fb.height:
                raise InvalidInput(
                    f"the region is outside the {fb.width}x{fb.height} screen", field="width"
                )
            region = Region(x=x, y=y, width=width, height=height)
        return await asyncio.to_thread(png, fb, region)

    async def cursor(self, user: Principal, ident: str, screen_id: str) -> tuple[int, int]:
        desk, screen = await self.ready_screen(user, ident, screen_id)
        out = await desk.act(screen.number, ["xdotool", "getmouselocation", "--shell"])
        values = _shell_values(out)
        try:
            return int(values.get("X", 0)), int(values.get("Y", 0))
        except ValueError:  # xdotool is the sandbox's: it may be anything
            raise desktop_unavailable(f"xdotool did not give a position: {out[:200]!r}") from None

    async def clipboard(self, user: Principal, ident: str, screen_id: str) -> str:
        desk, screen = await self.ready_screen(user, ident, screen_id)
        code, out, err = await desk.run(screen.number, ["xclip", "-selection", "clipboard", "-o"])
        if code != 0:
            if "Error: target STRING not available" in err or "no selection" in err.lower():
                return ""  # nothing was copied yet
            raise desktop_unavailable(f"xclip failed: {err.strip() or code}")
        return out

    async def set_clipboard(self, user: Principal, ident: str, screen_id: str, text: str) -> None:
        """Put ``text`` on the clipboard; returns once the clipboard holds it."""
        desk, screen = await self.ready_screen(user, ident, screen_id)
        # xclip stays behind to own the selection, holding none of the exec's pipes.
        await desk.act(screen.number, ["sh", "-c",
                                       "exec xclip -selection clipboard -i >/dev/null 2>&1"],
                       stdin=text.encode())  # fmt: skip
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            code, out, _ = await desk.run(screen.number, ["xclip", "-selection", "clipboard", "-o"])
            if code == 0 and out == text:
                return
            await asyncio.sleep(0.02)
        raise desktop_unavailable("the clipboard did not take the text")

    # -- doing ------------------------------------------------------------------------

    async def act(self, user: Principal, ident: str, screen_id: str, argv: Sequence[str]) -> None:
        desk, screen = await self.ready_screen(user, ident, screen_id)
        await desk.act(screen.number, argv)

    async def open(self, user: Principal, ident: str, screen_id: str, target: str) -> None:
        """A URL (in Chromium) or a file or directory inside the sandbox (Chromium shows
        it, as file://)."""
        desk, screen = await self.ready_screen(user, ident, screen_id)
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", target) or target.startswith("about:"):
            url = target
        elif target.startswith("/"):
            code, _, _ = await desk.run(screen.number, ["test", "-e", target])
            if code != 0:
                raise InvalidInput(f"{target} does not exist in the sandbox", field="target")
            url = "file://" + target
        else:
            raise InvalidInput("target must be a URL or an absolute path", field="target")
        await desk.spawn(screen.number, ["chromium", "--new-window", url], field="target")

    async def launch(
        self, user: Principal, ident: str, screen_id: str, application: str, uri: str | None
    ) -> None:
        """Start ``application`` (a program on the sandbox's PATH, or ``browser``,
        ``chrome``, ``terminal``), with ``uri`` as its argument if given."""
        program = APPLICATIONS.get(application.lower(), application)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", program):
            raise InvalidInput("application must be a program name", field="application")
        desk, screen = await self.ready_screen(user, ident, screen_id)
        await desk.spawn(screen.number, [program, *([uri] if uri else [])], field="application")


# The terminal is st (window class st-256color): xterm cannot start on gvisor with
# Debian's runsc (its child opens /dev/tty, which that runsc answers with EIO).
APPLICATIONS = {
    "browser": "chromium", "chrome": "chromium", "google-chrome": "chromium",
    "chromium-browser": "chromium", "terminal": "st", "x-terminal-emulator": "st",
    "xfce4-terminal": "st",
}  # fmt: skip


def _shell_values(out: str) -> dict[str, str]:
    """``KEY=value`` lines (xdotool's ``--shell`` output)."""
    values = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def now_s() -> float:
    return time.time()
