"""Managed processes in a sandbox: long-lived, on a terminal or on pipes, their output kept
by the server and read again from any point (``sandbox.processes``)."""

from __future__ import annotations

import base64
import builtins
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import httpx

from hutch.sdk import errors
from hutch.sdk._http import Transport, parse_time

__all__ = [
    "AsyncProcesses",
    "ProcessEvent",
    "ProcessExited",
    "ProcessInfo",
    "ProcessOutput",
    "ProcessOutputLost",
]


@dataclass(frozen=True, kw_only=True)
class ProcessInfo:
    """A process as the server reports it (CreateOS's ManagedProcess)."""

    process_id: str
    kind: Literal["process", "pty"]
    pid: int
    state: str  # starting, running, terminating, exited, failed
    leader_exited: bool
    tree_exited: bool
    created_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    signal: str | None
    cmd: str
    args: list[str]
    cwd: str
    oldest_seq: int
    newest_seq: int
    output_bytes: int
    foreground: dict[str, Any] | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessInfo:
        output = data.get("output") or {}
        return cls(
            process_id=data["process_id"],
            kind=data["kind"],
            pid=data["pid"],
            state=data["state"],
            leader_exited=data["leader_exited"],
            tree_exited=data["tree_exited"],
            created_at=parse_time(data.get("created_at")),
            finished_at=parse_time(data.get("finished_at")),
            exit_code=data.get("exit_code"),
            signal=data.get("signal"),
            cmd=data["cmd"],
            args=list(data.get("args") or []),
            cwd=data.get("cwd") or "/",
            oldest_seq=int(output.get("oldest_seq", 0)),
            newest_seq=int(output.get("newest_seq", 0)),
            output_bytes=int(output.get("bytes", 0)),
            foreground=data.get("foreground"),
        )


@dataclass(frozen=True)
class ProcessOutput:
    seq: int
    stream: str  # stdout, stderr or pty
    data: bytes


@dataclass(frozen=True)
class ProcessExited:
    exit_code: int | None
    signal: str | None


@dataclass(frozen=True)
class ProcessOutputLost:
    """``after`` was before the output the server keeps; reconnect from
    ``oldest_available_seq - 1`` (or 0 for all that is kept)."""

    error: str
    oldest_available_seq: int | None


ProcessEvent = ProcessOutput | ProcessExited | ProcessOutputLost


class AsyncProcesses:
    """``sandbox.processes``. A missing process is a
    :class:`~hutch.sdk.errors.NotFoundError`; input to one that has exited a
    :class:`~hutch.sdk.errors.ConflictError`."""

    def __init__(self, transport: Transport, sandbox_id: str) -> None:
        self._transport = transport
        self._sandbox_id = sandbox_id

    def _route(self, process_id: str | None = None, tail: str = "") -> str:
        base = f"/v1/sandboxes/{self._sandbox_id}/processes"
        return base if process_id is None else f"{base}/{process_id}{tail}"

    def _subjects(self, process_id: str | None = None) -> dict[str, str]:
        subjects = {"sandbox": self._sandbox_id}
        if process_id is not None:
            subjects["process"] = process_id
        return subjects

    async def start(
        self,
        cmd: str | None = None,
        args: Sequence[str] | None = None,
        *,
        pty: tuple[int, int] | bool = False,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ProcessInfo:
        """Start ``cmd`` (a shell command line, or the program when ``args`` is given).
        ``pty``: True or ``(rows, cols)`` for a terminal; then ``cmd`` may be None (the
        sandbox's login shell)."""
        body: dict[str, Any] = {}
        if cmd is not None:
            body["cmd"] = cmd
        if args is not None:
            body["args"] = list(args)
        if cwd is not None:
            body["cwd"] = cwd
        if env:
            body["env"] = dict(env)
        if pty is True:
            body["pty"] = {}
        elif pty:
            body["pty"] = {"rows": pty[0], "cols": pty[1]}
        made = await self._transport.data(
            "POST", self._route(), idempotent=False, json=body, subjects=self._subjects()
        )
        return ProcessInfo.from_json(made)

    async def list(self) -> builtins.list[ProcessInfo]:
        found = await self._transport.data(
            "GET", self._route(), idempotent=True, subjects=self._subjects()
        )
        return [ProcessInfo.from_json(p) for p in found["processes"]]

    async def get(self, process_id: str) -> ProcessInfo:
        found = await self._transport.data(
            "GET", self._route(process_id), idempotent=True, subjects=self._subjects(process_id)
        )
        return ProcessInfo.from_json(found)

    async def connect(self, process_id: str, *, after: int = 0) -> AsyncIterator[ProcessEvent]:
        """Output after ``after`` (0: all the server keeps), then the exit, as it comes.
        Ends after :class:`ProcessExited` or :class:`ProcessOutputLost`."""
        params = {"after": after} if after else None
        async with self._transport.stream(
            "GET", self._route(process_id, "/connect"), idempotent=True, params=params,
            subjects=self._subjects(process_id),
            http_timeout=httpx.Timeout(self._transport.config.timeout_s, read=None),
        ) as response:  # fmt: skip
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                try:
                    frame = json.loads(line)
                except ValueError as exc:
                    raise errors.StreamError(f"the process stream sent {line[:200]!r}") from exc
                kind = frame.get("type")
                if kind == "data":
                    data = base64.b64decode(frame.get("data_base64", ""))
                    yield ProcessOutput(int(frame["seq"]), str(frame["stream"]), data)
                elif kind == "exit":
                    yield ProcessExited(frame.get("exit_code"), frame.get("signal"))
                    return
                elif kind == "error":
                    yield ProcessOutputLost(
                        str(frame.get("error")), frame.get("oldest_available_seq")
                    )
                    return
        raise errors.StreamError(
            f"the output stream of process {process_id} ended before it exited; "
            "connect again with after= the last seq seen"
        )

    async def send_input(self, process_id: str, data: bytes | str) -> int:
        """Write to the process's input (its terminal for a PTY); the write's number."""
        raw = data.encode() if isinstance(data, str) else data
        answer = await self._transport.data(
            "POST", self._route(process_id, "/input"), idempotent=False,
            json={"data_base64": base64.b64encode(raw).decode()},
            subjects=self._subjects(process_id),
        )  # fmt: skip
        return int(answer["input_seq"])

    async def close_stdin(self, process_id: str) -> None:
        await self._transport.data(
            "POST", self._route(process_id, "/stdin/close"), idempotent=True,
            subjects=self._subjects(process_id),
        )  # fmt: skip

    async def resize(self, process_id: str, rows: int, cols: int) -> None:
        await self._transport.data(
            "POST", self._route(process_id, "/resize"), idempotent=True,
            json={"rows": rows, "cols": cols}, subjects=self._subjects(process_id),
        )  # fmt: skip

    async def signal(self, process_id: str, signal: str) -> None:
        """Send ``signal`` ("SIGTERM", "SIGINT", …) to the process group (on a terminal,
        to its foreground job)."""
        await self._transport.data(
            "POST", self._route(process_id, "/signal"), idempotent=False,
            json={"signal": signal}, subjects=self._subjects(process_id),
        )  # fmt: skip

    async def wait(
        self,
        process_id: str,
        *,
        scope: Literal["leader", "tree"] = "leader",
        timeout_ms: int = 30_000,
    ) -> ProcessInfo:
        """The process once it (``leader``) or everything it started (``tree``) has
        exited, or when ``timeout_ms`` has passed (then it may still run)."""
        answer = await self._transport.data(
            "GET", self._route(process_id, "/wait"), idempotent=True,
            params={"scope": scope, "timeout_ms": timeout_ms},
            subjects=self._subjects(process_id),
            http_timeout=httpx.Timeout(self._transport.config.timeout_s + timeout_ms / 1000),
        )  # fmt: skip
        return ProcessInfo.from_json(answer)

    async def kill(self, process_id: str, *, grace_ms: int = 1000) -> ProcessInfo:
        """End the whole tree (SIGTERM, SIGKILL after ``grace_ms``); its final state."""
        answer = await self._transport.data(
            "DELETE", self._route(process_id), idempotent=True,
            params={"grace_ms": grace_ms}, subjects=self._subjects(process_id),
            http_timeout=httpx.Timeout(self._transport.config.timeout_s + grace_ms / 1000),
        )  # fmt: skip
        return ProcessInfo.from_json(answer)
