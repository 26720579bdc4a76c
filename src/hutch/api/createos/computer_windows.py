"""``/v1/sandboxes/{id}/computer/windows`` and ``…/screens``: a desktop's windows and its
screens (up to 8 X displays), and a screen's noVNC link (CreateOS §15). The lists are not
paginated (as CreateOS has them): ``data`` is the array itself."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from hutch.api.createos.computer import COMPUTER_ERRORS, Ack, ScreenIdQuery, computer_of
from hutch.api.deps import CurrentUser, ServicesDep
from hutch.api.envelopes import JSend
from hutch.core.computer import ScreenState
from hutch.core.computer_windows import Window

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/sandboxes/{sandbox_id}/computer", tags=["computer"], responses=COMPUTER_ERRORS
)
WindowId = Annotated[str, Path(max_length=20, description="0x01a00003 (or decimal).")]
ScreenId = Annotated[str, Path(max_length=16, description="screen-0 … screen-7.")]


class WindowOut(BaseModel):
    id: str = Field(description="The X window id, as 0x01a00003.")
    title: str

    @classmethod
    def of(cls, window: Window) -> WindowOut:
        return cls(id=window.id, title=window.title)


class WindowGeometryOut(BaseModel):
    id: str
    x: int
    y: int
    width: int
    height: int
    screen: str = Field(description="The screen the window is on (screen-0 …).")


class WindowPosition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: int = Field(ge=-65535, le=65535)
    y: int = Field(ge=-65535, le=65535)


class WindowSize(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(ge=1, le=65535)
    height: int = Field(ge=1, le=65535)


class ComputerScreen(BaseModel):
    screen_id: str
    display: str = Field(description="The X display inside the sandbox, as :1.")
    width: int
    height: int
    vnc_port: int = Field(description="x11vnc, on the sandbox's loopback only.")
    novnc_port: int = Field(description="noVNC (websockify): reached through ingress.")

    @classmethod
    def of(cls, screen: ScreenState) -> ComputerScreen:
        return cls(screen_id=screen.screen_id, display=screen.display, width=screen.width,
                   height=screen.height, vnc_port=screen.vnc_port,
                   novnc_port=screen.novnc_port)  # fmt: skip


class ScreenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int | None = Field(default=None, ge=64, le=3840)
    height: int | None = Field(default=None, ge=64, le=2160)


class ScreenResize(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(ge=64, le=3840)
    height: int = Field(ge=64, le=2160)


class ScreenLinkOut(BaseModel):
    screen_id: str
    port: int = Field(description="The screen's noVNC port in the sandbox.")
    path: str = Field(description="The WebSocket path, with the token.")
    token: str = Field(description="A bearer credential for this screen until expires_at.")
    expires_at: datetime
    url: str = Field(description="noVNC in a browser, through hutch's proxy (ingress).")


# -- windows ----------------------------------------------------------------------------


@router.get("/windows", summary="List the screen's windows")
async def list_windows(
    sandbox_id: str,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
    application: Annotated[
        str | None, Query(max_length=64, description="Only this WM_CLASS, e.g. chromium.")
    ] = None,
) -> JSend[list[WindowOut]]:
    found = await computer_of(services).list_windows(user, sandbox_id, screen_id, application)
    return JSend(data=[WindowOut.of(window) for window in found])


@router.get("/windows/current", summary="The window with the focus")
async def current_window(
    sandbox_id: str, user: CurrentUser, services: ServicesDep, screen_id: ScreenIdQuery = "screen-0"
) -> JSend[WindowOut]:
    window = await computer_of(services).current_window(user, sandbox_id, screen_id)
    return JSend(data=WindowOut.of(window))


@router.get("/windows/{window_id}", summary="A window")
async def get_window(
    sandbox_id: str,
    window_id: WindowId,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[WindowOut]:
    window = await computer_of(services).get_window(user, sandbox_id, screen_id, window_id)
    return JSend(data=WindowOut.of(window))


@router.get("/windows/{window_id}/geometry", summary="Where a window is, and its size")
async def window_geometry(
    sandbox_id: str,
    window_id: WindowId,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[WindowGeometryOut]:
    """The window's content (without the window manager's frame), in screen pixels."""
    geometry, screen = await computer_of(services).window_geometry(
        user, sandbox_id, screen_id, window_id
    )
    return JSend(data=WindowGeometryOut(id=geometry.id, x=geometry.x, y=geometry.y,
                                        width=geometry.width, height=geometry.height,
                                        screen=screen))  # fmt: skip


@router.post("/windows/{window_id}/move", summary="Move a window")
async def move_window(
    sandbox_id: str,
    window_id: WindowId,
    body: WindowPosition,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[Ack]:
    """Its content's top-left corner goes to ``x, y`` (as ``geometry`` then reports)."""
    await computer_of(services).move_window(user, sandbox_id, screen_id, window_id, body.x, body.y)
    return JSend(data=Ack())


@router.post("/windows/{window_id}/resize", summary="Resize a window")
async def resize_window(
    sandbox_id: str,
    window_id: WindowId,
    body: WindowSize,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[Ack]:
    await computer_of(services).resize_window(
        user, sandbox_id, screen_id, window_id, body.width, body.height
    )
    return JSend(data=Ack())


Action = Literal["focus", "maximize", "minimize", "restore"]


@router.post("/windows/{window_id}/{action}", summary="Focus, maximize, minimize or restore")
async def window_action(
    sandbox_id: str,
    window_id: WindowId,
    action: Action,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[Ack]:
    await computer_of(services).window_action(user, sandbox_id, screen_id, window_id, action)
    return JSend(data=Ack())


@router.delete("/windows/{window_id}", summary="Close a window")
async def close_window(
    sandbox_id: str,
    window_id: WindowId,
    user: CurrentUser,
    services: ServicesDep,
    screen_id: ScreenIdQuery = "screen-0",
) -> JSend[Ack]:
    """Asks the application to close it, as the frame's close button does."""
    await computer_of(services).window_action(user, sandbox_id, screen_id, window_id, "close")
    return JSend(data=Ack())


# -- screens ----------------------------------------------------------------------------


@router.get("/screens", summary="List the screens")
async def list_screens(
    sandbox_id: str, user: CurrentUser, services: ServicesDep
) -> JSend[list[ComputerScreen]]:
    screens = await computer_of(services).list_screens(user, sandbox_id)
    return JSend(data=[ComputerScreen.of(screen) for screen in screens])


@router.post("/screens", summary="Add a screen (another X display)")
async def create_screen(
    sandbox_id: str, user: CurrentUser, services: ServicesDep, body: ScreenCreate | None = None
) -> JSend[ComputerScreen]:
    """Answers once it is up. Up to 8 screens; the size defaults to screen-0's."""
    body = body or ScreenCreate()
    screen = await computer_of(services).create_screen(user, sandbox_id, body.width, body.height)
    return JSend(data=ComputerScreen.of(screen))


@router.get("/screens/{screen}", summary="A screen")
async def get_screen(
    sandbox_id: str, screen: ScreenId, user: CurrentUser, services: ServicesDep
) -> JSend[ComputerScreen]:
    found = await computer_of(services).get_screen(user, sandbox_id, screen)
    return JSend(data=ComputerScreen.of(found))


@router.post("/screens/{screen}/resize", summary="Resize a screen")
async def resize_screen(
    sandbox_id: str, screen: ScreenId, body: ScreenResize, user: CurrentUser, services: ServicesDep
) -> JSend[ComputerScreen]:
    """The screen's X server starts again at the new size: its windows close."""
    found = await computer_of(services).resize_screen(
        user, sandbox_id, screen, body.width, body.height
    )
    return JSend(data=ComputerScreen.of(found))


@router.delete("/screens/{screen}", summary="Remove a screen")
async def delete_screen(
    sandbox_id: str, screen: ScreenId, user: CurrentUser, services: ServicesDep
) -> JSend[Ack]:
    """Its X server and windows go; screen-0 stays (400)."""
    await computer_of(services).delete_screen(user, sandbox_id, screen)
    return JSend(data=Ack())


@router.get("/screens/{screen}/connect", summary="A noVNC link to watch and use a screen")
async def connect_screen(
    sandbox_id: str, screen: ScreenId, user: CurrentUser, services: ServicesDep
) -> JSend[ScreenLinkOut]:
    """A temporary noVNC URL through hutch's proxy; needs ingress on the sandbox (409
    without). The token is a bearer credential; a new call replaces it for new
    connections."""
    link = await computer_of(services).connect(user, sandbox_id, screen)
    return JSend(data=ScreenLinkOut(screen_id=link.screen_id, port=link.port, path=link.path,
                                    token=link.token, expires_at=link.expires_at,
                                    url=link.url))  # fmt: skip
