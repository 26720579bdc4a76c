"""Screens (``screen-0`` … ``screen-7``, X displays ``:0`` … ``:7``) and their noVNC links,
and the user-facing window operations: :class:`ComputerService`, the whole of computer use.

A screen is created, resized or deleted by rewriting the supervisor's wish file
(:mod:`hutch.guest.desktop`); the call returns once the screen is up (or 409 if it is
still starting after :data:`SCREEN_START_S`). A resize starts the screen's X server
again at the new size: its windows close.

``connect`` gives a noVNC link through hutch's proxy: the sandbox's ingress name for the
screen's noVNC port, and a token of 192 random bits that websockify inside checks
(:class:`hutch.guest.desktop.ConnectTokens`) when the VNC connection opens. The token lasts
``HUTCH_COMPUTER_CONNECT_TTL_S``; a new ``connect`` replaces it (connections already open
stay). Needs ingress on the sandbox (409 ``desktop_unavailable`` without, as CreateOS).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from hutch.core import computer_windows as windows
from hutch.core.computer import (
    MAX_SCREENS,
    Desktop,
    DesktopService,
    ScreenState,
    desktop_unavailable,
    screen_number,
)
from hutch.core.computer_input import window_number
from hutch.core.errors import Conflict, InvalidInput, NotFound
from hutch.core.identity import Principal
from hutch.core.previews import PreviewService
from hutch.core.sandboxes import SandboxService
from hutch.guest import desktop
from hutch.settings import Settings

__all__ = ["ComputerService", "ScreenLink"]

SCREEN_START_S = 20.0
MIN_SIDE, MAX_WIDTH, MAX_HEIGHT = 64, 3840, 2160
# Every screen's framebuffer is in the sandbox's /dev/shm (64 MiB); leave room for others.
FRAMEBUFFER_BUDGET = 48 << 20


@dataclass(frozen=True, kw_only=True)
class ScreenLink:
    screen_id: str
    port: int
    path: str
    token: str
    expires_at: datetime
    url: str


class ComputerService(DesktopService):
    def __init__(
        self, settings: Settings, sandboxes: SandboxService, previews: PreviewService
    ) -> None:
        super().__init__(settings, sandboxes)
        self._previews = previews

    # -- screens ----------------------------------------------------------------------

    async def list_screens(self, user: Principal, ident: str) -> list[ScreenState]:
        desk = await self.desktop(user, ident)
        return [screen for _, screen in sorted((await self.screens(desk)).items())]

    async def get_screen(self, user: Principal, ident: str, screen_id: str) -> ScreenState:
        desk = await self.desktop(user, ident)
        return await self.screen(desk, screen_id, ready=False)

    async def create_screen(
        self, user: Principal, ident: str, width: int | None, height: int | None
    ) -> ScreenState:
        desk = await self.desktop(user, ident)
        async with self.lock(desk.record.id):
            wish = await self._wish(desk)
            free = [n for n in range(MAX_SCREENS) if n not in wish]
            if not free:
                raise Conflict(f"a sandbox has at most {MAX_SCREENS} screens",
                               code="screen_limit", field="screen_id")  # fmt: skip
            first = wish.get(0, (1280, 800))
            size = _size(width or first[0], height or first[1])
            number = free[0]
            await self._write_wish(desk, {**wish, number: size})
        return await self._await_screen(desk, number)

    async def resize_screen(
        self, user: Principal, ident: str, screen_id: str, width: int, height: int
    ) -> ScreenState:
        number = screen_number(screen_id)
        desk = await self.desktop(user, ident)
        async with self.lock(desk.record.id):
            wish = await self._wish(desk)
            if number not in wish:
                raise NotFound(f"no screen {screen_id} in this sandbox", field="screen_id")
            await self._write_wish(desk, {**wish, number: _size(width, height)})
        return await self._await_screen(desk, number, size=(width, height))

    async def delete_screen(self, user: Principal, ident: str, screen_id: str) -> None:
        number = screen_number(screen_id)
        if number == 0:
            raise InvalidInput("screen-0 is the sandbox's own display; it stays",
                               field="screen_id")  # fmt: skip
        desk = await self.desktop(user, ident)
        async with self.lock(desk.record.id):
            wish = await self._wish(desk)
            if number not in wish:
                raise NotFound(f"no screen {screen_id} in this sandbox", field="screen_id")
            del wish[number]
            await self._write_wish(desk, wish)
        deadline = time.monotonic() + SCREEN_START_S
        while number in await self.screens(desk):
            if time.monotonic() > deadline:
                raise desktop_unavailable(f"{screen_id} is still stopping")
            await asyncio.sleep(0.05)

    async def _wish(self, desk: Desktop) -> dict[int, tuple[int, int]]:
        await self.screens(desk)  # a 409 while the supervisor is not running
        raw = await desk.read(desktop.WISH)
        # The file is in the sandbox, where anything may rewrite it: what the supervisor
        # cannot read, it takes for the default (desktop.read_wish), and so does this.
        try:
            screens = json.loads(raw)["screens"] if raw is not None else desktop.DEFAULT_WISH
            wish = {int(n): (int(s["width"]), int(s["height"])) for n, s in screens.items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            wish = {int(n): (s["width"], s["height"]) for n, s in desktop.DEFAULT_WISH.items()}
        return {n: size for n, size in wish.items() if 0 <= n < MAX_SCREENS}

    async def _write_wish(self, desk: Desktop, wish: dict[int, tuple[int, int]]) -> None:
        if sum(w * h * 4 for w, h in wish.values()) > FRAMEBUFFER_BUDGET:
            raise Conflict(
                f"the screens would need more than {FRAMEBUFFER_BUDGET >> 20} MiB of "
                "framebuffers (4 bytes a pixel); make them smaller or delete one",
                field="width",
            )
        body = {"screens": {str(n): {"width": w, "height": h} for n, (w, h) in wish.items()}}
        await desk.write(desktop.WISH, json.dumps(body).encode())

    async def _await_screen(
        self, desk: Desktop, number: int, size: tuple[int, int] | None = None
    ) -> ScreenState:
        deadline = time.monotonic() + SCREEN_START_S
        while True:
            found = (await self.screens(desk)).get(number)
            fits = found is not None and (size is None or (found.width, found.height) == size)
            if found is not None and fits and found.state == "ready":
                return found
            if time.monotonic() > deadline:
                why = found.error if found is not None and found.error else "still starting"
                raise desktop_unavailable(f"screen-{number} is not up yet: {why}")
            await asyncio.sleep(0.05)

    async def _await_viewers(self, desk: Desktop, number: int) -> None:
        """Wait for the screen's VNC server and websockify, which the supervisor starts
        when ``connect.json`` first names the screen."""
        deadline = time.monotonic() + SCREEN_START_S
        while True:
            found = (await self.screens(desk)).get(number)
            if found is None:
                raise NotFound(f"no screen screen-{number} in this sandbox", field="screen_id")
            if found.vnc == "ready":
                return
            if time.monotonic() > deadline:
                raise desktop_unavailable(f"screen-{number}'s VNC server is not up yet")
            await asyncio.sleep(0.05)

    async def connect(self, user: Principal, ident: str, screen_id: str) -> ScreenLink:
        desk = await self.desktop(user, ident)
        template = self._previews.ingress_template(desk.record)
        if template is None:
            raise desktop_unavailable(
                "noVNC links need ingress on the sandbox: PATCH it with "
                '{"ingress_enabled": true} (and a host with the proxy on)'
            )
        screen = await self.screen(desk, screen_id)
        token = secrets.token_urlsafe(24)
        expires = time.time() + self._settings.computer_connect_ttl_s
        async with self.lock(desk.record.id):
            raw = await desk.read(desktop.CONNECT)
            try:
                links = json.loads(raw) if raw is not None else {}
                if not isinstance(links, dict):
                    links = {}
            except ValueError:
                links = {}
            now = time.time()
            links = {k: v for k, v in links.items() if _expires_at(v) > now}
            links[str(screen.number)] = {"token": token, "expires_at": expires}
            await desk.write(desktop.CONNECT, json.dumps(links).encode())
        await self._await_viewers(desk, screen.number)
        base = template.replace("<port>", str(screen.novnc_port))
        path = f"websockify?token={token}"
        query = f"autoconnect=true&reconnect=false&resize=scale&path={quote(path, safe='')}"
        return ScreenLink(screen_id=screen.screen_id, port=screen.novnc_port, path=path,
                          token=token, expires_at=datetime.fromtimestamp(expires, UTC),
                          url=f"{base}vnc.html?{query}")  # fmt: skip

    # -- windows ----------------------------------------------------------------------

    async def list_windows(
        self, user: Principal, ident: str, screen_id: str, application: str | None
    ) -> list[windows.Window]:
        desk, screen = await self.ready_screen(user, ident, screen_id)
        return await windows.list_windows(desk, screen.number, application)

    async def current_window(self, user: Principal, ident: str, screen_id: str) -> windows.Window:
        desk, screen = await self.ready_screen(user, ident, screen_id)
        return await windows.active_window(desk, screen.number)

    async def get_window(
        self, user: Principal, ident: str, screen_id: str, window_id: str
    ) -> windows.Window:
        number = window_number(window_id)
        desk, screen = await self.ready_screen(user, ident, screen_id)
        return await windows.window(desk, screen.number, number)

    async def window_geometry(
        self, user: Principal, ident: str, screen_id: str, window_id: str
    ) -> tuple[windows.WindowGeometry, str]:
        number = window_number(window_id)
        desk, screen = await self.ready_screen(user, ident, screen_id)
        return await windows.window_geometry(desk, screen.number, number), screen.screen_id

    async def window_action(
        self, user: Principal, ident: str, screen_id: str, window_id: str, action: str
    ) -> None:
        number = window_number(window_id)
        desk, screen = await self.ready_screen(user, ident, screen_id)
        await windows.window_action(desk, screen.number, number, action)

    async def move_window(
        self, user: Principal, ident: str, screen_id: str, window_id: str, x: int, y: int
    ) -> None:
        number = window_number(window_id)
        desk, screen = await self.ready_screen(user, ident, screen_id)
        await windows.move_window(desk, screen.number, number, x, y)

    async def resize_window(
        self, user: Principal, ident: str, screen_id: str, window_id: str, width: int, height: int
    ) -> None:
        number = window_number(window_id)
        desk, screen = await self.ready_screen(user, ident, screen_id)
        await windows.resize_window(desk, screen.number, number, width, height)


def _expires_at(link: object) -> float:
    """A kept link's expiry; 0 for one that is not as this module writes them (the file is
    in the sandbox, where anything may rewrite it)."""
    try:
        return float(link["expires_at"]) if isinstance(link, dict) else 0.0
    except (KeyError, TypeError, ValueError):
        return 0.0


def _size(width: int, height: int) -> tuple[int, int]:
    if not MIN_SIDE <= width <= MAX_WIDTH:
        raise InvalidInput(f"width must be between {MIN_SIDE} and {MAX_WIDTH}", field="width")
    if not MIN_SIDE <= height <= MAX_HEIGHT:
        raise InvalidInput(f"height must be between {MIN_SIDE} and {MAX_HEIGHT}", field="height")
    return width, height
