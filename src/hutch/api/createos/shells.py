"""Interactive shells in a sandbox: ``POST …/shell`` (raw upgrade) and ``GET …/shell-ws``.

``POST /v1/sandboxes/{id}/shell`` with ``Connection: Upgrade``, ``Upgrade: tcp-tunnel``:
after the 101 the client sends frames ``[type: 1][length: 4, big-endian][payload]`` (type
0 input, type 1 resize with ``rows: u16, cols: u16``) and receives the terminal's output
unframed, until the shell exits (the server closes) or the client closes (the shell is
hung up). ``?rows=&cols=`` set the first size (24 by 80 without).

``GET /v1/sandboxes/{id}/shell-ws`` (WebSocket; the key as ``X-Api-Key`` or Bearer
header; ``?rows=&cols=``), in the messages of the processes WebSocket: the server sends
the output as binary messages and, when the shell exits, one text message ``{"type":
"exit", "exit_code": N, "signal": null}`` before closing; the client sends input as binary
messages and text messages ``{"type": "resize", "rows", "cols"}``, ``{"type": "signal",
"signal": "SIGINT"}``, ``{"type": "input", "data": "text"}`` or ``{"type": "eof"}`` (^D).
A refusal comes before the WebSocket opens, as the HTTP answer in JSend (401, 404, 409).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect

from hutch.api.createos.connections import SWITCHING
from hutch.api.createos.responses import AUTH_ERRORS
from hutch.api.deps import (
    CurrentUser,
    ServicesDep,
    accepted_subprotocol,
    authenticate_connection,
)
from hutch.api.dialects import error_response
from hutch.api.envelopes import JSendFail
from hutch.api.upgrade import UpgradeResponse, require_upgrade
from hutch.core.errors import Conflict, HutchError
from hutch.core.ids import new_ulid
from hutch.core.processes import ProcessExit
from hutch.core.shells import Shell, ShellService

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/sandboxes/{sandbox_id}",
    tags=["connections"],
    responses={
        **AUTH_ERRORS,
        404: {"model": JSendFail, "description": "No such sandbox (or not yours)."},
        409: {"model": JSendFail, "description": "The sandbox is not running."},
    },
)

Rows = Annotated[int, Query(ge=1, le=1000, description="The terminal's rows at the start.")]
Cols = Annotated[int, Query(ge=1, le=1000, description="The terminal's columns at the start.")]


@router.post(
    "/shell",
    summary="A login shell on a terminal, over the raw upgrade (Upgrade: tcp-tunnel)",
    status_code=101,
    response_class=UpgradeResponse,
    responses={**SWITCHING, 400: {"model": JSendFail, "description": "No upgrade asked for."}},
)
async def shell(
    sandbox_id: str,
    request: Request,
    user: CurrentUser,
    services: ServicesDep,
    rows: Rows = 24,
    cols: Cols = 80,
) -> UpgradeResponse:
    """After the 101: send `[type:1][len:4 BE][payload]` frames (0 input, 1 resize with
    `u16 rows, u16 cols`), read the terminal's output raw. The shell is root's login shell;
    closing the connection hangs it up, and its exit closes the connection."""
    require_upgrade(request)
    shells: ShellService = services.shells
    opened = await shells.open(user, sandbox_id, rows=rows, cols=cols)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await shells.run_framed(opened, reader, writer)

    async def abandon() -> None:
        await shells.hang_up(opened)

    return UpgradeResponse(handler, abandon=abandon)


@router.websocket("/shell-ws")
async def shell_ws(websocket: WebSocket, sandbox_id: str, rows: int = 24, cols: int = 80) -> None:
    """A login shell on a terminal over a WebSocket (see the module docstring)."""
    services = websocket.app.state.services
    shells: ShellService = services.shells
    try:
        user = await authenticate_connection(websocket)
        opened = await shells.open(user, sandbox_id, rows=rows, cols=cols)
    except HutchError as exc:
        await _refuse(websocket, exc)
        return
    await websocket.accept(subprotocol=accepted_subprotocol(websocket))
    keys = asyncio.create_task(_take_messages(websocket, shells, opened))
    screen = asyncio.create_task(_send_output(websocket, shells, opened))
    exited = False
    try:
        await asyncio.wait({keys, screen}, return_when=asyncio.FIRST_COMPLETED)
        exited = (
            screen.done()
            and not screen.cancelled()
            and screen.exception() is None
            and screen.result()
        )
    finally:
        for task in (keys, screen):
            task.cancel()
        await asyncio.gather(keys, screen, return_exceptions=True)
        if not exited:
            await asyncio.shield(shells.hang_up(opened))
        with contextlib.suppress(Exception):
            await websocket.close()


async def _refuse(websocket: WebSocket, error: HutchError) -> None:
    """The refusal as an HTTP answer in JSend where the server can send one, else a close
    with code 4000 + the status."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        path = websocket.scope["path"]
        await websocket.send_denial_response(error_response(path, error, "req_" + new_ulid()))
        return
    await websocket.close(code=4000 + error.status, reason=error.message[:120])


async def _send_output(websocket: WebSocket, shells: ShellService, opened: Shell) -> bool:
    """The output to the client, then the exit; whether the shell was seen to exit (a lost
    output stream ends this without, and the shell is then hung up)."""
    exited = False
    async for chunk in shells.output(opened):
        if isinstance(chunk, ProcessExit):
            await websocket.send_text(
                json.dumps({"type": "exit", "exit_code": chunk.exit_code, "signal": chunk.signal})
            )
            exited = True
        else:
            await websocket.send_bytes(chunk)
    return exited


async def _take_messages(websocket: WebSocket, shells: ShellService, opened: Shell) -> None:
    while True:
        try:
            message = await websocket.receive()
        except WebSocketDisconnect:
            return
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            # Typed after the shell exited: dropped, as on the raw upgrade; the output side
            # ends the session once the last output and the exit are out.
            with contextlib.suppress(Conflict):
                await shells.write(opened, message["bytes"])
            continue
        try:
            event: Any = json.loads(message.get("text") or "{}")
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        with contextlib.suppress(HutchError, KeyError, TypeError, ValueError):
            match event.get("type"):
                case "resize":
                    await shells.resize(opened, int(event["rows"]), int(event["cols"]))
                case "signal":
                    await shells.signal(opened, str(event["signal"]))
                case "input":
                    await shells.write(opened, str(event["data"]).encode())
                case "eof":
                    await shells.close_input(opened)
