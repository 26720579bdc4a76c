"""``/v1/sandboxes/{id}/processes``: managed processes, as CreateOS has them (§7).

Create (on a terminal with ``pty``), list (``{"processes": […]}``), get, ``connect``
(NDJSON: ``data`` frames from ``after`` on, then ``exit``; ``heartbeat`` while quiet;
``error`` when ``after`` fell out of the kept window), ``input`` (→ ``input_seq``),
``stdin/close``, ``resize``, ``signal``, ``wait`` (long poll, ``scope=leader|tree``) and
``DELETE`` (SIGTERM, SIGKILL after ``grace_ms``).

An extra of hutch's own, ``…/processes/{pid}/ws`` (WebSocket): output pushed as binary
frames from ``after`` on, then one text frame ``{"type": "exit", "exit_code", "signal"}``;
the client sends binary frames as input and text frames ``{"type": "resize", "rows",
"cols"}``, ``{"type": "signal", "signal": "SIGINT"}`` or ``{"type": "eof"}``. The key
comes as a header, or (from a browser, whose WebSocket cannot send headers) as the
subprotocol ``hutch.key.<key>`` offered beside ``hutch`` (``deps.subprotocol_key``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from hutch.api.createos.responses import AUTH_ERRORS
from hutch.api.deps import (
    CurrentUser,
    ServicesDep,
    accepted_subprotocol,
    authenticate_connection,
)
from hutch.api.envelopes import JSend, JSendFail
from hutch.core.errors import HutchError, InvalidInput
from hutch.core.identity import Principal
from hutch.core.processes import (
    MAX_GRACE_MS,
    MAX_WAIT_MS,
    Heartbeat,
    ManagedProcess,
    OutputData,
    ProcessExit,
    ProcessFrame,
    ProcessService,
    ProcessSpec,
    StreamError,
    TerminalSize,
)

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/sandboxes/{sandbox_id}/processes",
    tags=["processes"],
    responses={
        **AUTH_ERRORS,
        404: {"model": JSendFail, "description": "No such sandbox or process (or not yours)."},
        409: {
            "model": JSendFail,
            "description": "The sandbox is not running, or the process has exited.",
        },
    },
)


class PtySize(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: int = Field(default=24, ge=1, le=1000)
    cols: int = Field(default=80, ge=1, le=1000)


class ProcessCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cmd: str | None = Field(
        default=None,
        min_length=1,
        max_length=65536,
        description="The program (with args), or a shell command line (without). "
        "May be left out with pty: the sandbox's login shell.",
    )
    args: list[Annotated[str, Field(max_length=65536)]] | None = Field(
        default=None, max_length=4096
    )
    cwd: str | None = Field(default=None, max_length=4096)
    env: dict[str, str] = Field(default_factory=dict)
    pty: PtySize | None = Field(
        default=None, description="Present: a terminal of this size ({} = 24 rows, 80 columns)."
    )


class OutputWindowOut(BaseModel):
    oldest_seq: int
    newest_seq: int
    bytes: int = Field(description="Output bytes kept (the last 1 MiB is).")


class ForegroundOut(BaseModel):
    pid: int
    cmd: str
    args: list[str]


class ManagedProcessOut(BaseModel):
    process_id: str
    kind: Literal["process", "pty"]
    pid: int
    state: Literal["starting", "running", "terminating", "exited", "failed"]
    leader_exited: bool
    tree_exited: bool
    created_at: datetime
    finished_at: datetime | None
    exit_code: int | None = Field(description="128 + n when a signal ended it.")
    signal: str | None = Field(description='The signal that ended it, e.g. "SIGKILL".')
    cmd: str
    args: list[str]
    cwd: str
    output: OutputWindowOut
    foreground: ForegroundOut | None = Field(
        default=None, description="A terminal's foreground job."
    )

    @classmethod
    def of(cls, process: ManagedProcess) -> ManagedProcessOut:
        return cls.model_validate(process, from_attributes=True)


class ProcessList(BaseModel):
    processes: list[ManagedProcessOut]


class ProcessInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data_base64: str = Field(max_length=(1 << 20) * 4 // 3 + 4, description="Bytes, base64.")


class InputAccepted(BaseModel):
    input_seq: int = Field(description="This write's number, in order.")


class TerminalResize(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: int = Field(ge=1, le=1000)
    cols: int = Field(ge=1, le=1000)


class ProcessSignal(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signal: str = Field(max_length=32, description="SIGTERM, SIGINT, SIGKILL, SIGHUP, …")


class Ok(BaseModel):
    ok: bool = True


@router.post("", status_code=201, summary="Start a process (on a terminal with pty)")
async def create(
    sandbox_id: str, body: ProcessCreate, user: CurrentUser, services: ServicesDep
) -> JSend[ManagedProcessOut]:
    spec = ProcessSpec(
        cmd=body.cmd,
        args=body.args,
        cwd=body.cwd,
        env=body.env,
        pty=TerminalSize(rows=body.pty.rows, cols=body.pty.cols) if body.pty else None,
    )
    return JSend(data=ManagedProcessOut.of(await services.processes.create(user, sandbox_id, spec)))


@router.get("", summary="The sandbox's processes, running and finished")
async def list_processes(
    sandbox_id: str, user: CurrentUser, services: ServicesDep
) -> JSend[ProcessList]:
    found = await services.processes.list(user, sandbox_id)
    return JSend(data=ProcessList(processes=[ManagedProcessOut.of(p) for p in found]))


@router.get("/{process_id}", summary="A process")
async def get_process(
    sandbox_id: str, process_id: str, user: CurrentUser, services: ServicesDep
) -> JSend[ManagedProcessOut]:
    return JSend(
        data=ManagedProcessOut.of(await services.processes.get(user, sandbox_id, process_id))
    )


@router.get(
    "/{process_id}/connect",
    summary="Replay and follow the output (NDJSON)",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "application/x-ndjson": {
                    "schema": {
                        "type": "string",
                        "description": 'One frame per line: {"type":"data","seq","stream",'
                        '"data_base64"}, {"type":"exit","exit_code","signal"} (last), '
                        '{"type":"heartbeat"}, {"type":"error","error","oldest_available_seq"}.',
                    }
                }
            }
        }
    },
)
async def connect(
    sandbox_id: str,
    process_id: str,
    user: CurrentUser,
    services: ServicesDep,
    after: Annotated[
        int, Query(ge=0, le=2**62, description="Output after this seq; 0 = all that is kept.")
    ] = 0,
) -> StreamingResponse:
    frames = await services.processes.connect(user, sandbox_id, process_id, after=after)
    return StreamingResponse(_ndjson(frames), media_type="application/x-ndjson")


def frame_json(frame: ProcessFrame) -> dict[str, Any]:
    """A frame as CreateOS puts it on the wire."""
    if isinstance(frame, OutputData):
        return {
            "type": "data",
            "seq": frame.seq,
            "stream": frame.stream,
            "data_base64": base64.b64encode(frame.data).decode(),
        }
    if isinstance(frame, ProcessExit):
        end: dict[str, Any] = {"type": "exit", "exit_code": frame.exit_code}
        if frame.signal:
            end["signal"] = frame.signal
        return end
    if isinstance(frame, Heartbeat):
        return {"type": "heartbeat"}
    error: dict[str, Any] = {"type": "error", "error": frame.error}
    if frame.oldest_available_seq is not None:
        error["oldest_available_seq"] = frame.oldest_available_seq
    return error


async def _ndjson(frames: AsyncIterator[ProcessFrame]) -> AsyncIterator[bytes]:
    try:
        async for frame in frames:
            yield json.dumps(frame_json(frame)).encode() + b"\n"
    finally:
        await frames.aclose()  # type: ignore[attr-defined]


@router.post("/{process_id}/input", summary="Write to the process's input (or terminal)")
async def write_input(
    sandbox_id: str, process_id: str, body: ProcessInput, user: CurrentUser, services: ServicesDep
) -> JSend[InputAccepted]:
    try:
        data = base64.b64decode(body.data_base64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("data_base64 must be base64", field="data_base64") from None
    seq = await services.processes.write(user, sandbox_id, process_id, data)
    return JSend(data=InputAccepted(input_seq=seq))


@router.post("/{process_id}/stdin/close", summary="End the process's input")
async def close_input(
    sandbox_id: str, process_id: str, user: CurrentUser, services: ServicesDep
) -> JSend[Ok]:
    await services.processes.close_input(user, sandbox_id, process_id)
    return JSend(data=Ok())


@router.post("/{process_id}/resize", summary="Resize the process's terminal")
async def resize(
    sandbox_id: str,
    process_id: str,
    body: TerminalResize,
    user: CurrentUser,
    services: ServicesDep,
) -> JSend[Ok]:
    size = TerminalSize(rows=body.rows, cols=body.cols)
    await services.processes.resize(user, sandbox_id, process_id, size)
    return JSend(data=Ok())


@router.post(
    "/{process_id}/signal", summary="Signal the process group (a terminal's foreground job)"
)
async def send_signal(
    sandbox_id: str, process_id: str, body: ProcessSignal, user: CurrentUser, services: ServicesDep
) -> JSend[Ok]:
    await services.processes.signal(user, sandbox_id, process_id, body.signal)
    return JSend(data=Ok())


@router.get("/{process_id}/wait", summary="Wait for the leader or the whole tree to exit")
async def wait_for(
    sandbox_id: str,
    process_id: str,
    user: CurrentUser,
    services: ServicesDep,
    scope: Annotated[Literal["leader", "tree"], Query()] = "leader",
    timeout_ms: Annotated[int, Query(ge=0, le=MAX_WAIT_MS)] = 30_000,
) -> JSend[ManagedProcessOut]:
    """Answers once the leader (``scope=leader``) or every process of its tree
    (``scope=tree``) has exited, or when ``timeout_ms`` has passed: the process either way."""
    process = await services.processes.wait(
        user, sandbox_id, process_id, scope=scope, timeout_ms=timeout_ms
    )
    return JSend(data=ManagedProcessOut.of(process))


@router.delete("/{process_id}", summary="End the process's whole tree")
async def kill(
    sandbox_id: str,
    process_id: str,
    user: CurrentUser,
    services: ServicesDep,
    grace_ms: Annotated[int, Query(ge=0, le=MAX_GRACE_MS)] = 1000,
) -> JSend[ManagedProcessOut]:
    """SIGTERM to every process of the tree, SIGKILL to what is left after ``grace_ms``;
    the final state. The process is then forgotten."""
    process = await services.processes.kill(user, sandbox_id, process_id, grace_ms=grace_ms)
    return JSend(data=ManagedProcessOut.of(process))


@router.websocket("/{process_id}/ws")
async def attach(websocket: WebSocket, sandbox_id: str, process_id: str, after: int = 0) -> None:
    """Output pushed, input taken, until the process ends or the client goes."""
    services = websocket.app.state.services
    processes: ProcessService = services.processes
    try:
        user = await authenticate_connection(websocket)
        frames = await processes.connect(user, sandbox_id, process_id, after=max(0, after))
    except HutchError as exc:
        await websocket.close(code=4000 + exc.status, reason=exc.message[:120])
        return
    await websocket.accept(subprotocol=accepted_subprotocol(websocket))
    reader = asyncio.create_task(_take_input(websocket, processes, user, sandbox_id, process_id))
    try:
        async for frame in frames:
            if isinstance(frame, OutputData):
                await websocket.send_bytes(frame.data)
            elif isinstance(frame, ProcessExit | StreamError):
                await websocket.send_text(json.dumps(frame_json(frame)))
                await websocket.close()
                return
            if reader.done():
                return
    except (WebSocketDisconnect, HutchError, RuntimeError):
        return
    finally:
        await frames.aclose()  # type: ignore[attr-defined]
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
            with contextlib.suppress(HutchError):
                await processes.write(user, sandbox_id, process_id, message["bytes"])
            continue
        try:
            event: Any = json.loads(message.get("text") or "{}")
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        kind = event.get("type")
        with contextlib.suppress(HutchError, KeyError, TypeError, ValueError):
            if kind == "resize":
                size = TerminalSize(rows=int(event["rows"]), cols=int(event["cols"]))
                await processes.resize(user, sandbox_id, process_id, size)
            elif kind == "signal":
                await processes.signal(user, sandbox_id, process_id, str(event["signal"]))
            elif kind == "eof":
                await processes.close_input(user, sandbox_id, process_id)
            elif kind == "input":
                data = str(event.get("data", "")).encode()
                await processes.write(user, sandbox_id, process_id, data)
