"""Processes: long-lived commands in a sandbox, on a terminal (PTY) or not.

Unlike exec, a process outlives the request that starts it. Its output is kept by the
guest agent (the last 1 MiB), numbered chunk by chunk, so a client reads it from any
point again (``after``), waits for more (long poll), writes input, resizes the terminal,
signals the process group, and waits for the exit. The WebSocket route is the same
operations, pushed.
"""

from __future__ import annotations

import base64
import signal
from dataclasses import dataclass
from typing import Any

from hutch.core.errors import InvalidInput, NotFound, Unavailable
from hutch.core.identity import Principal
from hutch.core.sandboxes import ExecCommand, SandboxService
from hutch.host.guest import GuestError, GuestUnreachable

__all__ = ["Chunk", "Output", "ProcessService", "signal_number"]

MAX_WAIT_S = 30.0


@dataclass(frozen=True, kw_only=True)
class Chunk:
    seq: int
    stream: str
    data: bytes


@dataclass(frozen=True, kw_only=True)
class Output:
    chunks: list[Chunk]
    next: int
    first: int
    running: bool
    exit_code: int | None


def signal_number(name: str | int) -> int:
    """``"INT"``, ``"SIGINT"``, ``2`` → 2; anything else is a 400."""
    if isinstance(name, int) and 1 <= name <= 64:
        return name
    if isinstance(name, str):
        text = name.upper().removeprefix("SIG")
        if text.isdigit() and 1 <= int(text) <= 64:
            return int(text)
        try:
            return int(signal.Signals["SIG" + text])
        except KeyError:
            pass
    raise InvalidInput(
        f"unknown signal {name!r}; use a name like INT, TERM, KILL, HUP", field="signal"
    )


class ProcessService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self._sandboxes = sandboxes

    async def _call(
        self,
        user: Principal,
        ident: str,
        request: dict[str, Any],
        *,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        guest = await self._sandboxes.guest(user, ident)
        try:
            return await guest.call(request, timeout_s=timeout_s)
        except GuestUnreachable as exc:
            raise Unavailable("the sandbox's agent does not answer; it may have stopped") from exc
        except GuestError as exc:
            if exc.code == "not_found" and request["op"] != "proc_start":
                raise NotFound(f"{exc.message} in this sandbox", code="process_not_found") from exc
            if exc.code == "not_found":
                raise InvalidInput(exc.message, field="cmd") from exc
            raise InvalidInput(exc.message) from exc

    async def start(
        self, user: Principal, ident: str, command: ExecCommand, *, pty: bool, rows: int, cols: int
    ) -> dict[str, Any]:
        request = self._sandboxes.check_command(command)
        answer = await self._call(
            user,
            ident,
            {
                "op": "proc_start",
                "argv": request.argv,
                "env": request.env,
                "cwd": request.cwd,
                "pty": pty,
                "rows": rows,
                "cols": cols,
            },
        )
        return {
            "id": answer["id"],
            "pid": answer["pid"],
            "pty": pty,
            "running": True,
            "exit_code": None,
        }

    async def list(self, user: Principal, ident: str) -> list[dict[str, Any]]:
        answer = await self._call(user, ident, {"op": "proc_list"})
        return list(answer["processes"])

    async def get(self, user: Principal, ident: str, process_id: str) -> dict[str, Any]:
        for process in await self.list(user, ident):
            if process["id"] == process_id:
                return process
        raise NotFound(f"no process {process_id!r} in this sandbox", code="process_not_found")

    async def output(
        self, user: Principal, ident: str, process_id: str, *, after: int, wait_s: float
    ) -> Output:
        wait_s = max(0.0, min(wait_s, MAX_WAIT_S))
        answer = await self._call(
            user,
            ident,
            {"op": "proc_read", "id": process_id, "after": after, "wait": wait_s},
            timeout_s=wait_s + 10,
        )
        return Output(
            chunks=[
                Chunk(seq=seq, stream=stream, data=base64.b64decode(data))
                for seq, stream, data in answer["chunks"]
            ],
            next=answer["next"],
            first=answer["first"],
            running=answer["running"],
            exit_code=answer["exit_code"],
        )

    async def write(
        self, user: Principal, ident: str, process_id: str, data: bytes, *, eof: bool = False
    ) -> None:
        await self._call(
            user,
            ident,
            {
                "op": "proc_write",
                "id": process_id,
                "data": base64.b64encode(data).decode(),
                "eof": eof,
            },
        )

    async def resize(
        self, user: Principal, ident: str, process_id: str, rows: int, cols: int
    ) -> None:
        if not (1 <= rows <= 1000 and 1 <= cols <= 1000):
            raise InvalidInput("rows and cols must be from 1 to 1000", field="rows")
        await self._call(
            user, ident, {"op": "proc_resize", "id": process_id, "rows": rows, "cols": cols}
        )

    async def signal(self, user: Principal, ident: str, process_id: str, sig: str | int) -> None:
        await self._call(
            user, ident, {"op": "proc_signal", "id": process_id, "signal": signal_number(sig)}
        )

    async def wait(
        self, user: Principal, ident: str, process_id: str, timeout_s: float
    ) -> dict[str, Any]:
        timeout_s = max(0.0, min(timeout_s, MAX_WAIT_S))
        answer = await self._call(
            user,
            ident,
            {"op": "proc_wait", "id": process_id, "timeout": timeout_s},
            timeout_s=timeout_s + 10,
        )
        return {"running": answer["running"], "exit_code": answer["exit_code"]}
