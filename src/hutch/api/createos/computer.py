"""``/v1/sandboxes/{id}/computer``: computer use on a desktop sandbox (CreateOS §15).

This module: screenshot (PNG bytes, not JSend), screen, cursor, clipboard, open, launch,
mouse and keyboard. Windows and screens are in :mod:`hutch.api.createos.computer_windows`.
Most routes take ``?screen_id=screen-0…screen-7`` (default ``screen-0``). Coordinates are
raw X11 pixels of that screen (read its bounds from ``/screen``).

Errors: 501 (the image has no desktop), 409 with ``data.code`` ``desktop_unavailable``
(still starting, or the action failed), 404 (no such sandbox, screen or window), 429
(screenshots above ``HUTCH_COMPUTER_SCREENSHOTS_PER_MINUTE``, with ``Retry-After``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from hutch.api.createos.responses import AUTH_ERRORS
from hutch.api.deps import CurrentUser, ServicesDep
from hutch.api.envelopes import JSend, JSendError, JSendFail
from hutch.core.computer_input import (
    MAX_TEXT,
    button,
    chord,
    click_argv,
    drag_argv,
    scroll_argv,
    type_argv,
    window_number,
)
from hutch.core.computer_screens import ComputerService
from hutch.core.errors import Unavailable

__all__ = ["ScreenIdQuery", "computer_of", "router"]

COMPUTER_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    404: {"model": JSendFail, "description": "No such sandbox, screen or window (or not yours)."},
    409: {
        "model": JSendFail,
        "description": "The desktop is starting or the action failed: data.code is "
        '"desktop_unavailable" (or the sandbox is not running).',
    },
    501: {"model": JSendError, "description": "The sandbox's image has no desktop."},
}
router = APIRouter(
    prefix="/v1/sandboxes/{sandbox_id}/computer", tags=["computer"], responses=COMPUTER_ERRORS
)

ScreenIdQuery = Annotated[
    str, Query(max_length=16, description="screen-0 … screen-7 (default screen-0).")
]
Coordinate = Annotated[int, Field(ge=0, le=65535)]


def computer_of(services: Any) -> ComputerService:
    if services.computer is None:
        raise Unavailable("computer use is served by the host agent, which is not running")
    computer: ComputerService = services.computer
    return computer


class Ack(BaseModel):
    ok: bool = True


class ScreenSize(BaseModel):
    width: int
    height: int


class Cursor(BaseModel):
    x: int
    y: int


class ClipboardText(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(max_length=MAX_TEXT * 100)


class OpenTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str = Field(min_length=1, max_length=8192, description="A URL or an absolute path.")


class Launch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    application: str = Field(min_length=1, max_length=64,
                             description="A program on the sandbox's PATH, or browser, "
                             "chrome, terminal.")  # fmt: skip
    uri: str | None = Field(default=None, max_length=8192)


class Point(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: Coordinate
    y: Coordinate


Button = Literal["left", "middle", "right"]


class Click(BaseModel):
    model_config = ConfigDict(extra="forbid")
    button: Button | None = None
    x: Coordinate | None = None
    y: Coordinate | None = None
    count: int = Field(default=1, ge=1, le=10)


class Scroll(BaseModel):
    model_config = ConfigDict(extra="forbid")
    direction: Literal["up", "down", "left", "right"]
    amount: int = Field(default=1, ge=1, le=100)


class Drag(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    start: Point = Field(alias="from")
    end: Point = Field(alias="to")
    button: Button | None = None


class ButtonOnly(BaseModel):
    model_config = ConfigDict(extra="forbid")
    button: Button | None = None


class TypeText(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(max_length=MAX_TEXT)
    delay_in_ms: int = Field(default=12, ge=0, le=1000)


class Keys(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(
        min_length=1, max_length=8, description='A chord, pressed together: ["ctrl", "l"].'
    )


@router.get(
    "/screenshot",
    summary="Take a screenshot (PNG)",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "PNG bytes."},
        429: {"model": JSendFail, "description": "Over the screenshot rate; see Retry-After."},
    },
)
async def screenshot(
    sandbox_id: str,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
    window_id: Annotated[str | None, Query(max_length=20)] = None,
    x: Annotated[int, Query(ge=0, le=65535)] = 0,
    y: Annotated[int, Query(ge=0, le=65535)] = 0,
    width: Annotated[int | None, Query(ge=1, le=65535)] = None,
    height: Annotated[int | None, Query(ge=1, le=65535)] = None,
) -> Response:
    """The screen as PNG: all of it, one window (``window_id``), or a region (``x``,
    ``y``, ``width``, ``height``; a missing width or height reaches the screen's edge)."""
    number = window_number(window_id) if window_id else None
    data = await computer_of(services).screenshot(
        user, sandbox_id, screen_id, window_id=number, area=(x, y, width, height)
    )
    return Response(content=data, media_type="image/png")


@router.get("/screen", summary="The screen's size (and whether the desktop is up)")
async def screen(
    sandbox_id: str, user: CurrentUser, services: ServicesDep, screen_id: ScreenIdQuery = "screen-0"
) -> JSend[ScreenSize]:
    """2xx only once the desktop is up: the cheapest readiness probe."""
    computer = computer_of(services)
    _, found = await computer.ready_screen(user, sandbox_id, screen_id)
    return JSend(data=ScreenSize(width=found.width, height=found.height))


@router.get("/cursor", summary="Where the pointer is")
async def cursor(
    sandbox_id: str, user: CurrentUser, services: ServicesDep, screen_id: ScreenIdQuery = "screen-0"
) -> JSend[Cursor]:
    x, y = await computer_of(services).cursor(user, sandbox_id, screen_id)
    return JSend(data=Cursor(x=x, y=y))


@router.get("/clipboard", summary="The clipboard's text")
async def get_clipboard(
    sandbox_id: str, user: CurrentUser, services: ServicesDep, screen_id: ScreenIdQuery = "screen-0"
) -> JSend[ClipboardText]:
    text = await computer_of(services).clipboard(user, sandbox_id, screen_id)
    return JSend(data=ClipboardText(text=text))


@router.put("/clipboard", summary="Put text on the clipboard")
async def put_clipboard(
    sandbox_id: str,
    body: ClipboardText,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[ClipboardText]:
    await computer_of(services).set_clipboard(user, sandbox_id, screen_id, body.text)
    return JSend(data=ClipboardText(text=body.text))


@router.post("/open", summary="Open a URL or a file")
async def open_target(
    sandbox_id: str,
    body: OpenTarget,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[Ack]:
    """A URL opens in Chromium; an absolute path inside the sandbox too (as file://)."""
    await computer_of(services).open(user, sandbox_id, screen_id, body.target)
    return JSend(data=Ack())


@router.post("/launch", summary="Start an application")
async def launch(
    sandbox_id: str,
    body: Launch,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[Ack]:
    await computer_of(services).launch(user, sandbox_id, screen_id, body.application, body.uri)
    return JSend(data=Ack())


async def _act(
    services: Any, user: Any, sandbox_id: str, screen_id: str, argv: list[str]
) -> JSend[Ack]:
    await computer_of(services).act(user, sandbox_id, screen_id, argv)
    return JSend(data=Ack())


@router.post("/mouse/move", summary="Move the pointer")
async def mouse_move(
    sandbox_id: str,
    body: Point,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[Ack]:
    argv = ["xdotool", "mousemove", str(body.x), str(body.y)]
    return await _act(services, user, sandbox_id, screen_id, argv)


@router.post("/mouse/click", summary="Click (where the pointer is, or at x, y)")
async def mouse_click(
    sandbox_id: str,
    body: Click,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[Ack]:
    argv = click_argv(x=body.x, y=body.y, button_name=body.button, count=body.count)
    return await _act(services, user, sandbox_id, screen_id, argv)


@router.post("/mouse/scroll", summary="Scroll")
async def mouse_scroll(
    sandbox_id: str,
    body: Scroll,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[Ack]:
    argv = scroll_argv(body.direction, body.amount)
    return await _act(services, user, sandbox_id, screen_id, argv)


@router.post("/mouse/drag", summary="Drag from one point to another")
async def mouse_drag(
    sandbox_id: str,
    body: Drag,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[Ack]:
    argv = drag_argv((body.start.x, body.start.y), (body.end.x, body.end.y), body.button)
    return await _act(services, user, sandbox_id, screen_id, argv)


@router.post("/mouse/down", summary="Press a mouse button (and hold it)")
async def mouse_down(
    sandbox_id: str,
    user: CurrentUser,
    services: ServicesDep,
    body: ButtonOnly | None = None,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[Ack]:
    argv = ["xdotool", "mousedown", button(body.button if body else None)]
    return await _act(services, user, sandbox_id, screen_id, argv)


@router.post("/mouse/up", summary="Release a mouse button")
async def mouse_up(
    sandbox_id: str,
    user: CurrentUser,
    services: ServicesDep,
    body: ButtonOnly | None = None,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[Ack]:
    argv = ["xdotool", "mouseup", button(body.button if body else None)]
    return await _act(services, user, sandbox_id, screen_id, argv)


@router.post("/keyboard/type", summary="Type text")
async def keyboard_type(
    sandbox_id: str,
    body: TypeText,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[Ack]:
    argv = type_argv(body.text, body.delay_in_ms)
    return await _act(services, user, sandbox_id, screen_id, argv)


@router.post("/keyboard/press", summary="Press keys together (a chord) and release them")
async def keyboard_press(
    sandbox_id: str,
    body: Keys,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[Ack]:
    argv = ["xdotool", "key", chord(body.keys)]
    return await _act(services, user, sandbox_id, screen_id, argv)


@router.post("/keyboard/down", summary="Press keys (and hold them)")
async def keyboard_down(
    sandbox_id: str,
    body: Keys,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[Ack]:
    argv = ["xdotool", "keydown", chord(body.keys)]
    return await _act(services, user, sandbox_id, screen_id, argv)


@router.post("/keyboard/up", summary="Release keys")
async def keyboard_up(
    sandbox_id: str,
    body: Keys,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[Ack]:
    argv = ["xdotool", "keyup", chord(body.keys)]
    return await _act(services, user, sandbox_id, screen_id, argv)
