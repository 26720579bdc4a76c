"""``/v1/sandboxes/{id}/processes``: long-lived commands, on a terminal or not.

HTTP: start, list, get, read output from any sequence number (long poll with ``wait``),
write input, resize, signal, wait. WebSocket (``…/processes/{pid}/ws``): output pushed as
binary frames from ``after`` on, then one text frame ``{"type": "exit", "exit_code"}``;
the client sends binary frames as input and text frames ``{"type": "resize", "rows",
"cols"}``, ``{"type": "signal", "signal"}`` or ``{"type": "eof"}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field

from hutch.api.createos.responses import AUTH_ERRORS
from hutch.api.deps import CurrentUser, ServicesDep, authenticate_connection
from hutch.api.envelopes import JSend, JSendFail
from hutch.core.errors import HutchError, InvalidInput
from hutch.core.identity import Principal
from hutch.core.processes import ProcessService
from hutch.core.sandboxes import ExecCommand

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/sandboxes/{sandbox_id}/processes",
    tags=["processes"],
    responses={
        **AUTH_ERRORS,
        404: {"model": JSendFail, "description": "No such sandbox or process (or not yours)."},
        409: {"model": JSendFail, "description": "The sandbox is not running."},
    },
)


class ProcessStart(BaseModel):
    cmd: str = Field(
        min_length=1,
        max_length=65536,
        description="A shell command line, or the program when args is given.",
    )
    args: list[str] | None = Field(default=None, max_length=4096)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = Field(default=None, max_length=4096)
    pty: bool = Field(default=False, description="Run it on a terminal of its own.")
    rows: int = Field(default=24, ge=1, le=1000)
    cols: int = Field(default=80, ge=1, le=1000)


class SandboxProcess(BaseModel):
    id: str
    pid: int
    pty: bool
    running: bool
    exit_code: int | None
    argv: list[str] | None = None


class OutputChunk(BaseModel):
    seq: int
    stream: str
    data: str = Field(description="The bytes, base64.")


class ProcessOutput(BaseModel):
    chunks: list[OutputChunk]
    next: int = Field(description="Ask with after=next-1 for what comes after these.")
    first: int = Field(description="The oldest chunk still kept (the last 1 MiB is).")
    running: bool
    exit_code: int | None


class ProcessInput(BaseModel):
    text: str | None = Field(default=None, max_length=1 << 20)
    data: str | None = Field(default=None, max_length=1 << 22, description="Bytes, base64.")
    eof: bool = False


class TerminalSize(BaseModel):
    rows: int = Field(ge=1, le=1000)
    cols: int = Field(ge=1, le=1000)


class ProcessSignal(BaseModel):
    signal: str | int = Field(description="A name (INT, TERM, KILL, HUP…) or a number.")


class ProcessWait(BaseModel):
    timeout: float = Field(default=30, ge=0, le=30)


class ProcessState(BaseModel):
    running: bool
    exit_code: int | None


class ProcessDone(BaseModel):
    ok: bool = True


@router.post("", status_code=201, summary="Start a process (optionally on a terminal)")
async def start(
    sandbox_id: str, body: ProcessStart, user: CurrentUser, services: ServicesDep
) -> JSend[SandboxProcess]:
    command = ExecCommand(cmd=body.cmd, args=body.args, env=body.env, cwd=body.cwd)
    made = await services.processes.start(
        user, sandbox_id, command, pty=body.pty, rows=body.rows, cols=body.cols
    )
    return JSend(data=SandboxProcess(**made))


@router.get("", summary="List the sandbox's processes")
async def list_processes(
    sandbox_id: str, user: CurrentUser, services: ServicesDep
) -> JSend[list[SandboxProcess]]:
    return JSend(
        data=[SandboxProcess(**p) for p in await services.processes.list(user, sandbox_id)]
    )


@router.get("/{process_id}", summary="A process and whether it still runs")
async def get_process(
    sandbox_id: str, process_id: str, user: CurrentUser, services: ServicesDep
) -> JSend[SandboxProcess]:
    return JSend(data=SandboxProcess(**await services.processes.get(user, sandbox_id, process_id)))


@router.get("/{process_id}/output", summary="Output after a sequence number (long poll)")
async def output(
    sandbox_id: str,
    process_id: str,
    user: CurrentUser,
    services: ServicesDep,
    after: Annotated[int, Query(ge=0, le=2**62, description="Chunks after this one.")] = 0,
    wait: Annotated[float, Query(ge=0, le=30, description="Seconds to wait for some.")] = 0,
) -> JSend[ProcessOutput]:
    got = await services.processes.output(user, sandbox_id, process_id, after=after, wait_s=wait)
    return JSend(
        data=ProcessOutput(
            chunks=[
                OutputChunk(seq=c.seq, stream=c.stream, data=base64.b64encode(c.data).decode())
                for c in got.chunks
            ],
            next=got.next,
            first=got.first,
            running=got.running,
            exit_code=got.exit_code,
        )
    )


def _input_bytes(body: ProcessInput) -> bytes:
    if body.data is not None:
        try:
            return base64.b64decode(body.data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("data must be base64", field="data") from None
    return (body.text or "").encode()


@router.post("/{process_id}/input", summary="Write to the process's input")
async def write_input(
    sandbox_id: str, process_id: str, body: ProcessInput, user: CurrentUser, services: ServicesDep
) -> JSend[ProcessDone]:
    await services.processes.write(user, sandbox_id, process_id, _input_bytes(body), eof=body.eof)
    return JSend(data=ProcessDone())


@router.post("/{process_id}/resize", summary="Resize the process's terminal")
async def resize(
    sandbox_id: str, process_id: str, body: TerminalSize, user: CurrentUser, services: ServicesDep
) -> JSend[ProcessDone]:
    await services.processes.resize(user, sandbox_id, process_id, body.rows, body.cols)
    return JSend(data=ProcessDone())


@router.post("/{process_id}/signal", summary="Send a signal to the process's group")
async def send_signal(
    sandbox_id: str, process_id: str, body: ProcessSignal, user: CurrentUser, services: ServicesDep
) -> JSend[ProcessDone]:
    await services.processes.signal(user, sandbox_id, process_id, body.signal)
    return JSend(data=ProcessDone())


@router.post("/{process_id}/wait", summary="Wait (up to 30 s) for the process to end")
async def wait_for(
    sandbox_id: str, process_id: str, body: ProcessWait, user: CurrentUser, services: ServicesDep
) -> JSend[ProcessState]:
    return JSend(
        data=ProcessState(
            **await services.processes.wait(user, sandbox_id, process_id, body.timeout)
        )
    )


@router.websocket("/{process_id}/ws")
async def attach(websocket: WebSocket, sandbox_id: str, process_id: str, after: int = 0) -> None:
    """Output pushed, input taken, until the process ends or the client goes."""
    services = websocket.app.state.services
    try:
        user = await authenticate_connection(websocket)
        await services.processes.get(user, sandbox_id, process_id)
    except HutchError as exc:
        await websocket.close(code=4000 + exc.status, reason=exc.message[:120])
        return
    await websocket.accept()
    processes: ProcessService = services.processes
    reader = asyncio.create_task(_take_input(websocket, processes, user, sandbox_id, process_id))
    try:
        seq = max(0, after)
        while True:
            got = await processes.output(user, sandbox_id, process_id, after=seq, wait_s=20)
            for chunk in got.chunks:
                await websocket.send_bytes(chunk.data)
            seq = got.next - 1
            if not got.running and not got.chunks:
                await websocket.send_text(json.dumps({"type": "exit", "exit_code": got.exit_code}))
                await websocket.close()
                return
            if reader.done():
                return
    except (WebSocketDisconnect, HutchError, RuntimeError):
        return
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


async def _take_input(
    websocket: WebSocket,
    processes: ProcessService,
    user: Principal,
    sandbox_id: str,
    process_id: str,
) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes"):
            await processes.write(user, sandbox_id, process_id, message["bytes"])
            continue
        try:
            event: dict[str, Any] = json.loads(message.get("text") or "{}")
        except ValueError:
            continue
        kind = event.get("type")
        with contextlib.suppress(HutchError):
            if kind == "resize":
                await processes.resize(
                    user, sandbox_id, process_id, int(event["rows"]), int(event["cols"])
                )
            elif kind == "signal":
                await processes.signal(user, sandbox_id, process_id, event["signal"])
            elif kind == "eof":
                await processes.write(user, sandbox_id, process_id, b"", eof=True)
            elif kind == "input":
                await processes.write(
                    user, sandbox_id, process_id, str(event.get("data", "")).encode()
                )
