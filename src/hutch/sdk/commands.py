"""Running commands in a sandbox: buffered, with output callbacks, or as a stream of events."""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, Unpack

import httpx

from hutch.sdk._http import Transport
from hutch.sdk.errors import CommandError, StreamError

__all__ = [
    "AsyncCommands",
    "CommandEvent",
    "CommandResult",
    "ErrorEvent",
    "ExecOptions",
    "ExitEvent",
    "OutputCallback",
    "OutputEvent",
]

OutputCallback = Callable[[str], object]
"""Called with each piece of output as it arrives; if it returns an awaitable, that is
awaited (async API). Pieces are whole UTF-8 characters, not whole lines."""


class ExecOptions(TypedDict, total=False):
    env: Mapping[str, str]
    """Variables added to the sandbox's own for this command."""
    cwd: str
    """Working directory inside the sandbox (default ``/``)."""
    timeout: float
    """Seconds before the command is killed (default: the server's, 300 s)."""
    stdin: str
    """Text fed to the command's standard input."""


@dataclass(frozen=True, kw_only=True)
class CommandResult:
    stdout: str
    stderr: str
    exit_code: int | None
    """None when the command never exited on its own (a timeout, or it could not start)."""
    error: str | None = None
    """Why it did not run to the end, if it did not (the server's words)."""
    exec_ms: int | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None


@dataclass(frozen=True, kw_only=True)
class OutputEvent:
    stream: Literal["stdout", "stderr"]
    data: str


@dataclass(frozen=True, kw_only=True)
class ErrorEvent:
    """The command could not run or finish (a timeout, say); an ExitEvent may follow."""

    message: str


@dataclass(frozen=True, kw_only=True)
class ExitEvent:
    """Always the last event of a command that ran to the end."""

    exit_code: int | None


CommandEvent = OutputEvent | ErrorEvent | ExitEvent


class AsyncCommands:
    """``sandbox.commands``: run programs inside one sandbox.

    ``cmd`` is a shell command line (run with ``/bin/sh -c``), or a sequence that is run as
    an argv without a shell. ``timeout`` is in seconds (default: the server's, 300 s), and
    a command that runs past it is killed and reported in ``error``. Nothing here is
    retried once sent: a command runs at most once per call.
    """

    def __init__(self, transport: Transport, sandbox_id: str) -> None:
        self._transport = transport
        self._sandbox_id = sandbox_id

    async def run(
        self,
        cmd: str | Sequence[str],
        *,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        check: bool = False,
        **options: Unpack[ExecOptions],
    ) -> CommandResult:
        """Run ``cmd`` to the end and return its output and exit code.

        With a callback, output is streamed to it as it happens (and still collected in
        the result, uncut); without, the server buffers it (10 MiB per stream at most).
        ``check=True`` raises :class:`~hutch.sdk.errors.CommandError`, carrying the result,
        unless the command exited 0.
        """
        body = _body(cmd, options)
        if on_stdout is None and on_stderr is None:
            result = await self._buffered(body, limit_s=options.get("timeout"))
        else:
            result = await self._collect(body, on_stdout, on_stderr)
        if check and not result.ok:
            raise _failed(cmd, result)
        return result

    async def stream(
        self, cmd: str | Sequence[str], **options: Unpack[ExecOptions]
    ) -> AsyncIterator[CommandEvent]:
        """Yield output events as they happen, ending with an :class:`ExitEvent`.

        Closing the iterator early (``break``) disconnects; the command itself runs on
        until it ends or times out. Raises :class:`~hutch.sdk.errors.StreamError` if the
        stream breaks off with neither an exit nor an error.
        """
        body = _body(cmd, options)
        async for event in self._events(body):
            yield event

    async def _buffered(self, body: dict[str, Any], *, limit_s: float | None) -> CommandResult:
        grace = self._transport.config.timeout_s
        data = await self._transport.data(
            "POST",
            f"/v1/sandboxes/{self._sandbox_id}/exec",
            idempotent=False,
            json=body,
            subjects={"sandbox": self._sandbox_id},
            # The answer comes when the command ends; the server enforces its timeout.
            http_timeout=httpx.Timeout(grace, read=None if limit_s is None else limit_s + grace),
        )
        result = data.get("result", data)
        return CommandResult(
            stdout=result.get("stdout", ""),
            stderr=result.get("stderr", ""),
            exit_code=result.get("exit_code"),
            error=result.get("error"),
            exec_ms=data.get("exec_ms"),
        )

    async def _collect(
        self,
        body: dict[str, Any],
        on_stdout: OutputCallback | None,
        on_stderr: OutputCallback | None,
    ) -> CommandResult:
        started = time.monotonic()
        output: dict[str, list[str]] = {"stdout": [], "stderr": []}
        callbacks = {"stdout": on_stdout, "stderr": on_stderr}
        errors: list[str] = []
        exit_code: int | None = None
        async for event in self._events(body):
            match event:
                case OutputEvent(stream=stream, data=data):
                    output[stream].append(data)
                    if (callback := callbacks[stream]) is not None:
                        returned = callback(data)
                        if inspect.isawaitable(returned):
                            await returned
                case ErrorEvent(message=message):
                    errors.append(message)
                case ExitEvent(exit_code=code):
                    exit_code = code
        return CommandResult(
            stdout="".join(output["stdout"]),
            stderr="".join(output["stderr"]),
            exit_code=exit_code,
            error="; ".join(errors) or None,
            exec_ms=round((time.monotonic() - started) * 1000),
        )

    async def _events(self, body: dict[str, Any]) -> AsyncIterator[CommandEvent]:
        errored = False
        async with self._transport.stream(
            "POST",
            f"/v1/sandboxes/{self._sandbox_id}/exec",
            idempotent=False,
            json=body,
            params={"stream": "true"},
            subjects={"sandbox": self._sandbox_id},
        ) as response:
            async for line in response.aiter_lines():
                for event in _events_of(line):
                    yield event
                    if isinstance(event, ExitEvent):
                        return
                    errored = errored or isinstance(event, ErrorEvent)
        if not errored:
            raise StreamError(
                "the command's output stream ended before the command exited; the command "
                "may still be running: check with another command before running it again"
            )


def _body(cmd: str | Sequence[str], options: ExecOptions) -> dict[str, Any]:
    body: dict[str, Any]
    if isinstance(cmd, str):
        body = {"cmd": cmd}
    else:
        argv = list(cmd)
        if not argv:
            raise ValueError("cmd must not be an empty sequence")
        body = {"cmd": argv[0], "args": argv[1:]}
    if "env" in options:
        body["env"] = dict(options["env"])
    if "cwd" in options:
        body["cwd"] = options["cwd"]
    if "timeout" in options:
        body["timeout_secs"] = options["timeout"]
    if "stdin" in options:
        body["stdin"] = options["stdin"]
    return body


def _events_of(line: str) -> list[CommandEvent]:
    """The events of one NDJSON frame, in the order output, error, exit.

    A frame is an object with any of ``stdout``, ``stderr`` (text), ``error`` (text),
    ``exit_code`` (the last frame; null when the command never exited by itself) and ``hb``
    (a heartbeat, no event). Blank lines and SSE control lines are skipped, a ``data:``
    prefix is removed."""
    text = line.strip()
    if not text or text.startswith((":", "event:", "id:", "retry:")):
        return []
    if text.startswith("data:"):
        text = text[5:].strip()
        if not text:
            return []
    try:
        frame = json.loads(text)
    except ValueError as exc:
        raise StreamError(f"the exec stream sent a line that is not JSON: {line[:200]!r}") from exc
    if not isinstance(frame, dict):
        raise StreamError(f"the exec stream sent a line that is not an object: {line[:200]!r}")
    events: list[CommandEvent] = []
    for stream in ("stdout", "stderr"):
        if isinstance(data := frame.get(stream), str) and data:
            events.append(OutputEvent(stream=stream, data=data))
    if frame.get("error"):
        events.append(ErrorEvent(message=str(frame["error"])))
    if "exit_code" in frame:
        code = frame["exit_code"]
        events.append(ExitEvent(exit_code=code if isinstance(code, int) else None))
    return events


def _failed(cmd: str | Sequence[str], result: CommandResult) -> CommandError:
    shown = cmd if isinstance(cmd, str) else " ".join(cmd)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    how = f"exited with {result.exit_code}" if result.exit_code is not None else "did not exit"
    if result.error:
        how += f" ({result.error})"
    tail = result.stderr.strip()[-500:]
    detail = f"; stderr ends: {tail}" if tail else ""
    return CommandError(
        f"command {shown!r} {how}{detail}; the result is on this error's .result",
        result=result,
    )
