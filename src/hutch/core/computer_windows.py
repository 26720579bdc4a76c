"""The windows of a desktop screen (wmctrl and xdotool in the sandbox; openbox keeps the
EWMH lists they read). A window's id is its X window id, written ``0x01a00003``; a window
that does not exist (any more) is a 404."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from hutch.core.computer import Desktop, _shell_values, desktop_unavailable
from hutch.core.errors import NotFound

SETTLE_S = 1.0
__all__ = [
    "Window",
    "WindowGeometry",
    "active_window",
    "list_windows",
    "window",
    "window_action",
    "window_geometry",
]


@dataclass(frozen=True, kw_only=True)
class Window:
    id: str
    title: str
    application: str = ""


@dataclass(frozen=True, kw_only=True)
class WindowGeometry:
    id: str
    x: int
    y: int
    width: int
    height: int


def _hex(number: int) -> str:
    return f"0x{number:08x}"


def _missing(number: int) -> NotFound:
    return NotFound(f"no window {_hex(number)} on this screen", field="window_id")


async def list_windows(desk: Desktop, screen: int, application: str | None) -> list[Window]:
    """The screen's top-level windows (the window manager's client list), oldest first;
    only those whose class (WM_CLASS, e.g. ``chromium``, ``st-256color``) is ``application``
    when it is given (case-insensitive)."""
    out = await desk.act(screen, ["wmctrl", "-l", "-x"])
    windows = []
    for line in out.splitlines():
        parts = line.split(None, 4)
        if len(parts) < 4:
            continue
        try:
            number, klass = int(parts[0], 16), parts[2]
        except ValueError:  # not a window line (wmctrl is the sandbox's: it may be anything)
            continue
        title = parts[4] if len(parts) > 4 else ""
        names = {name.lower() for name in klass.split(".")}
        if application and application.lower() not in names:
            continue
        windows.append(Window(id=_hex(number), title=title, application=klass))
    return windows


async def window(desk: Desktop, screen: int, number: int) -> Window:
    code, out, _ = await desk.run(screen, ["xdotool", "getwindowname", str(number)])
    if code != 0:
        raise _missing(number)
    return Window(id=_hex(number), title=out.rstrip("\n"))


async def active_window(desk: Desktop, screen: int) -> Window:
    code, out, _ = await desk.run(screen, ["xdotool", "getactivewindow"])
    if code != 0 or not out.strip().isdigit():
        raise NotFound("no window has the focus on this screen", field="window_id")
    return await window(desk, screen, int(out.strip()))


async def window_geometry(desk: Desktop, screen: int, number: int) -> WindowGeometry:
    """Where the window's content is on the screen (without the manager's frame)."""
    code, out, _ = await desk.run(screen, ["xdotool", "getwindowgeometry", "--shell", str(number)])
    values = _shell_values(out)
    if code != 0 or "WIDTH" not in values:
        raise _missing(number)
    try:
        return WindowGeometry(id=_hex(number), x=int(values["X"]), y=int(values["Y"]),
                              width=int(values["WIDTH"]),
                              height=int(values["HEIGHT"]))  # fmt: skip
    except (KeyError, ValueError):  # xdotool is the sandbox's: it may be anything
        raise desktop_unavailable(f"xdotool did not give a geometry: {out[:200]!r}") from None


# How each action is done; ``{w}`` is the window id. The EWMH requests go through the
# window manager, as a person's clicks on the frame would.
_ACTIONS = {
    "focus": [["xdotool", "windowactivate", "{w}"]],
    "maximize": [["wmctrl", "-i", "-r", "{w}", "-b", "add,maximized_vert,maximized_horz"]],
    "minimize": [["xdotool", "windowminimize", "{w}"]],
    "restore": [
        ["wmctrl", "-i", "-r", "{w}", "-b", "remove,maximized_vert,maximized_horz"],
        ["wmctrl", "-i", "-a", "{w}"],
    ],
    "close": [["wmctrl", "-i", "-c", "{w}"]],
}


async def window_action(desk: Desktop, screen: int, number: int, action: str) -> None:
    await window(desk, screen, number)  # 404 first
    for argv in _ACTIONS[action]:
        await desk.act(screen, [part.replace("{w}", _hex(number)) for part in argv])


async def _settled(
    desk: Desktop, screen: int, number: int, done: Callable[[WindowGeometry], bool]
) -> WindowGeometry:
    """The window's geometry once ``done`` holds for it (the manager acts on a request a
    moment later), or as it is after :data:`SETTLE_S`."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        geometry = await window_geometry(desk, screen, number)
        if done(geometry) or time.monotonic() > deadline:
            return geometry
        await asyncio.sleep(0.02)


async def move_window(desk: Desktop, screen: int, number: int, x: int, y: int) -> None:
    """Put the window's content at ``x, y``. A manager places a window's frame where a
    client asks its window to be, so the frame's offset is measured and taken off."""
    geometry = await window_geometry(desk, screen, number)
    target = (x, y)
    if (geometry.x, geometry.y) == target:
        return
    for _ in range(2):
        start = (geometry.x, geometry.y)
        argv = ["xdotool", "windowmove", str(number), str(target[0]), str(target[1])]
        await desk.act(screen, argv)
        geometry = await _settled(desk, screen, number, _moved_from(start))
        dx, dy = geometry.x - x, geometry.y - y
        if not dx and not dy:
            return
        target = (target[0] - dx, target[1] - dy)


def _moved_from(start: tuple[int, int]) -> Callable[[WindowGeometry], bool]:
    return lambda geometry: (geometry.x, geometry.y) != start


async def resize_window(desk: Desktop, screen: int, number: int, width: int, height: int) -> None:
    await window_geometry(desk, screen, number)  # 404 first
    await desk.act(screen, ["xdotool", "windowsize", str(number), str(width), str(height)])
    await _settled(desk, screen, number, lambda g: (g.width, g.height) == (width, height))
