"""Computer use on a desktop sandbox (``rootfs="desktop:1"``): ``sandbox.computer``.

Every method mirrors one route of ``/v1/sandboxes/{id}/computer`` and takes
``screen_id`` (``screen-0`` by default). While the desktop starts the server answers 409
(:class:`~hutch.sdk.errors.ConflictError`); :meth:`AsyncComputer.wait_ready` waits for it.
A sandbox without a desktop raises :class:`~hutch.sdk.errors.HutchError` with status 501.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from hutch.sdk import errors
from hutch.sdk._http import Transport, parse_time

if TYPE_CHECKING:
    from hutch.sdk.sync import Client

__all__ = ["AsyncComputer", "Computer", "ScreenInfo", "ScreenLink", "Window", "WindowGeometry"]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Window:
    id: str
    title: str


@dataclass(frozen=True, kw_only=True)
class WindowGeometry:
    id: str
    x: int
    y: int
    width: int
    height: int
    screen: str


@dataclass(frozen=True, kw_only=True)
class ScreenInfo:
    screen_id: str
    display: str
    width: int
    height: int
    vnc_port: int
    novnc_port: int


@dataclass(frozen=True, kw_only=True)
class ScreenLink:
    screen_id: str
    port: int
    path: str
    token: str
    expires_at: datetime | None
    url: str


def _screen(data: dict[str, Any]) -> ScreenInfo:
    return ScreenInfo(**{key: data[key] for key in ScreenInfo.__dataclass_fields__})


class AsyncComputer:
    def __init__(self, transport: Transport, sandbox_id: str) -> None:
        self._transport = transport
        self._sandbox_id = sandbox_id

    async def _call(
        self,
        method: str,
        tail: str,
        *,
        screen_id: str | None = "screen-0",
        json: Any = None,
        params: dict[str, str | int] | None = None,
    ) -> Any:
        query: dict[str, str | int] = dict(params or {})
        if screen_id is not None:
            query["screen_id"] = screen_id
        return await self._transport.data(
            method, f"/v1/sandboxes/{self._sandbox_id}/computer{tail}",
            idempotent=method in ("GET", "PUT", "DELETE"), json=json, params=query,
            subjects={"sandbox": self._sandbox_id},
        )  # fmt: skip

    # -- seeing -------------------------------------------------------------------------

    async def screenshot(
        self,
        *,
        screen_id: str = "screen-0",
        window_id: str | None = None,
        region: tuple[int, int, int, int] | None = None,
    ) -> bytes:
        """PNG bytes of the screen, of one window, or of ``region`` (x, y, width, height)."""
        params: dict[str, str | int] = {"screen_id": screen_id}
        if window_id is not None:
            params["window_id"] = window_id
        if region is not None:
            params.update(zip(("x", "y", "width", "height"), region, strict=True))
        async with self._transport.stream(
            "GET", f"/v1/sandboxes/{self._sandbox_id}/computer/screenshot", idempotent=True,
            params=params, subjects={"sandbox": self._sandbox_id},
        ) as response:  # fmt: skip
            return await response.aread()

    async def screen(self, *, screen_id: str = "screen-0") -> tuple[int, int]:
        """The screen's width and height (a 409 until the desktop is up)."""
        data = await self._call("GET", "/screen", screen_id=screen_id)
        return int(data["width"]), int(data["height"])

    async def wait_ready(
        self, *, screen_id: str = "screen-0", timeout_s: float = 60.0
    ) -> tuple[int, int]:
        """Wait until the desktop answers ``/screen``; its size."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return await self.screen(screen_id=screen_id)
            except errors.ConflictError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def cursor(self, *, screen_id: str = "screen-0") -> tuple[int, int]:
        data = await self._call("GET", "/cursor", screen_id=screen_id)
        return int(data["x"]), int(data["y"])

    async def get_clipboard(self, *, screen_id: str = "screen-0") -> str:
        return str((await self._call("GET", "/clipboard", screen_id=screen_id))["text"])

    async def set_clipboard(self, text: str, *, screen_id: str = "screen-0") -> None:
        await self._call("PUT", "/clipboard", screen_id=screen_id, json={"text": text})

    # -- doing --------------------------------------------------------------------------

    async def open(self, target: str, *, screen_id: str = "screen-0") -> None:
        """Open a URL (or an absolute path inside the sandbox) in the browser."""
        await self._call("POST", "/open", screen_id=screen_id, json={"target": target})

    async def launch(
        self, application: str, uri: str | None = None, *, screen_id: str = "screen-0"
    ) -> None:
        body: dict[str, Any] = {"application": application}
        if uri is not None:
            body["uri"] = uri
        await self._call("POST", "/launch", screen_id=screen_id, json=body)

    async def move_mouse(self, x: int, y: int, *, screen_id: str = "screen-0") -> None:
        await self._call("POST", "/mouse/move", screen_id=screen_id, json={"x": x, "y": y})

    async def click(
        self,
        x: int | None = None,
        y: int | None = None,
        *,
        button: str = "left",
        count: int = 1,
        screen_id: str = "screen-0",
    ) -> None:
        """Click at ``x, y`` (where the pointer is when they are left out)."""
        body: dict[str, Any] = {"button": button, "count": count}
        if x is not None and y is not None:
            body |= {"x": x, "y": y}
        await self._call("POST", "/mouse/click", screen_id=screen_id, json=body)

    async def scroll(self, direction: str, amount: int = 1, *, screen_id: str = "screen-0") -> None:
        await self._call("POST", "/mouse/scroll", screen_id=screen_id,
                         json={"direction": direction, "amount": amount})  # fmt: skip

    async def drag(
        self, start: tuple[int, int], end: tuple[int, int], *, screen_id: str = "screen-0"
    ) -> None:
        body = {"from": {"x": start[0], "y": start[1]}, "to": {"x": end[0], "y": end[1]}}
        await self._call("POST", "/mouse/drag", screen_id=screen_id, json=body)

    async def mouse_down(self, button: str = "left", *, screen_id: str = "screen-0") -> None:
        await self._call("POST", "/mouse/down", screen_id=screen_id, json={"button": button})

    async def mouse_up(self, button: str = "left", *, screen_id: str = "screen-0") -> None:
        await self._call("POST", "/mouse/up", screen_id=screen_id, json={"button": button})

    async def type(
        self, text: str, *, delay_ms: int | None = None, screen_id: str = "screen-0"
    ) -> None:
        body: dict[str, Any] = {"text": text}
        if delay_ms is not None:
            body["delay_in_ms"] = delay_ms
        await self._call("POST", "/keyboard/type", screen_id=screen_id, json=body)

    async def press(self, *keys: str, screen_id: str = "screen-0") -> None:
        """Press ``keys`` together and release them: ``press("ctrl", "a")``."""
        await self._call("POST", "/keyboard/press", screen_id=screen_id, json={"keys": keys})

    async def key_down(self, *keys: str, screen_id: str = "screen-0") -> None:
        await self._call("POST", "/keyboard/down", screen_id=screen_id, json={"keys": keys})

    async def key_up(self, *keys: str, screen_id: str = "screen-0") -> None:
        await self._call("POST", "/keyboard/up", screen_id=screen_id, json={"keys": keys})

    # -- windows ------------------------------------------------------------------------

    async def windows(
        self, application: str | None = None, *, screen_id: str = "screen-0"
    ) -> builtins.list[Window]:
        params: dict[str, str | int] = {"application": application} if application else {}
        data = await self._call("GET", "/windows", screen_id=screen_id, params=params)
        items = data.get("data", []) if isinstance(data, dict) else data
        return [Window(id=item["id"], title=item["title"]) for item in items]

    async def current_window(self, *, screen_id: str = "screen-0") -> Window:
        data = await self._call("GET", "/windows/current", screen_id=screen_id)
        return Window(id=data["id"], title=data["title"])

    async def window(self, window_id: str, *, screen_id: str = "screen-0") -> Window:
        data = await self._call("GET", f"/windows/{window_id}", screen_id=screen_id)
        return Window(id=data["id"], title=data["title"])

    async def window_geometry(
        self, window_id: str, *, screen_id: str = "screen-0"
    ) -> WindowGeometry:
        data = await self._call("GET", f"/windows/{window_id}/geometry", screen_id=screen_id)
        return WindowGeometry(**{key: data[key] for key in WindowGeometry.__dataclass_fields__})

    async def window_action(
        self, window_id: str, action: str, *, screen_id: str = "screen-0"
    ) -> None:
        """``focus``, ``maximize``, ``minimize``, ``restore`` or ``close``."""
        if action == "close":
            await self._call("DELETE", f"/windows/{window_id}", screen_id=screen_id)
        else:
            await self._call("POST", f"/windows/{window_id}/{action}", screen_id=screen_id)

    async def move_window(
        self, window_id: str, x: int, y: int, *, screen_id: str = "screen-0"
    ) -> None:
        await self._call("POST", f"/windows/{window_id}/move", screen_id=screen_id,
                         json={"x": x, "y": y})  # fmt: skip

    async def resize_window(
        self, window_id: str, width: int, height: int, *, screen_id: str = "screen-0"
    ) -> None:
        await self._call("POST", f"/windows/{window_id}/resize", screen_id=screen_id,
                         json={"width": width, "height": height})  # fmt: skip

    # -- screens ------------------------------------------------------------------------

    async def screens(self) -> builtins.list[ScreenInfo]:
        data = await self._call("GET", "/screens", screen_id=None)
        items = data.get("data", []) if isinstance(data, dict) else data
        return [_screen(item) for item in items]

    async def create_screen(
        self, width: int | None = None, height: int | None = None
    ) -> ScreenInfo:
        body = {k: v for k, v in (("width", width), ("height", height)) if v is not None}
        return _screen(await self._call("POST", "/screens", screen_id=None, json=body))

    async def get_screen(self, screen_id: str) -> ScreenInfo:
        return _screen(await self._call("GET", f"/screens/{screen_id}", screen_id=None))

    async def resize_screen(self, screen_id: str, width: int, height: int) -> ScreenInfo:
        data = await self._call("POST", f"/screens/{screen_id}/resize", screen_id=None,
                                json={"width": width, "height": height})  # fmt: skip
        return _screen(data)

    async def delete_screen(self, screen_id: str) -> None:
        await self._call("DELETE", f"/screens/{screen_id}", screen_id=None)

    async def connect(self, screen_id: str = "screen-0") -> ScreenLink:
        """A noVNC link for a person to watch and use the screen (needs ingress on)."""
        data = await self._call("GET", f"/screens/{screen_id}/connect", screen_id=None)
        return ScreenLink(screen_id=data["screen_id"], port=data["port"], path=data["path"],
                          token=data["token"], expires_at=parse_time(data.get("expires_at")),
                          url=data["url"])  # fmt: skip


class Computer:
    """Blocking ``sandbox.computer``: every method of :class:`AsyncComputer`, run on the
    client's loop (``sandbox.computer.click(10, 20)``)."""

    def __init__(self, aio: AsyncComputer, client: Client) -> None:
        self.aio = aio
        self._loop = client._loop

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coroutine)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.aio, name)
        if name.startswith("_") or not callable(method):
            return method

        def blocking(*args: Any, **kwargs: Any) -> Any:
            return self._run(method(*args, **kwargs))

        blocking.__name__ = name
        blocking.__doc__ = method.__doc__
        return blocking
