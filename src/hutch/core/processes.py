"""Managed processes: long-lived commands in a sandbox, on a terminal (PTY) or on pipes.

Unlike exec, a process outlives the request that starts it, and the clients that watch
it. The guest agent keeps its output (the last 1 MiB), numbered chunk by chunk, so any
client reads it again from any point (``after``) and follows it as it comes.

Entry points (every one takes the caller and the sandbox id or name, and checks that the
sandbox is the caller's and running):

- :meth:`ProcessService.create` (a :class:`ProcessSpec`; ``pty`` set = a terminal,
  ``cmd`` None on a terminal = the sandbox's login shell) → :class:`ManagedProcess`.
- :meth:`~ProcessService.get`, :meth:`~ProcessService.list`.
- :meth:`~ProcessService.connect` → frames: :class:`OutputData` (``seq``, ``stream``:
  stdout, stderr or pty), :class:`ProcessExit` (then the stream ends),
  :class:`Heartbeat` (every :data:`HEARTBEAT_S` without output), :class:`StreamError`
  (then the stream ends; ``oldest_available_seq`` when ``after`` fell out of the window).
- :meth:`~ProcessService.write` (→ the write's ``input_seq``), :meth:`~ProcessService.
  close_input`, :meth:`~ProcessService.resize`, :meth:`~ProcessService.signal` (to the
  process group, or on a terminal to its foreground job's group).
- :meth:`~ProcessService.wait` (``leader`` or the whole ``tree``), :meth:`~ProcessService.
  kill` (SIGTERM to the tree, SIGKILL after the grace; the process is then forgotten).

Errors: :class:`NotFound` (no such process, code ``process_not_found``), :class:`Conflict`
(the process has exited, or its input is closed), :class:`InvalidInput` (a bad request, a
command or directory that does not exist), :class:`Unavailable` (the agent stopped
answering).
"""

from __future__ import annotations

import base64
import signal as signals
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from hutch.core.errors import Conflict, InvalidInput, NotFound, Unavailable
from hutch.core.identity import Principal
from hutch.core.sandboxes import ExecCommand, SandboxService
from hutch.host.guest import GuestError, GuestUnreachable

__all__ = [
    "HEARTBEAT_S",
    "Foreground",
    "Heartbeat",
    "ManagedProcess",
    "OutputData",
    "OutputWindow",
    "ProcessExit",
    "ProcessFrame",
    "ProcessService",
    "ProcessSpec",
    "StreamError",
    "TerminalSize",
    "signal_number",
]

HEARTBEAT_S = 5.0
MAX_WAIT_MS = 300_000
MAX_GRACE_MS = 60_000
MAX_INPUT_BYTES = 1 << 20
_AGENT_SLACK_S = 15.0  # beyond a long poll's own time, before the agent counts as gone


@dataclass(frozen=True, kw_only=True)
class TerminalSize:
    rows: int = 24
    cols: int = 80


@dataclass(frozen=True, kw_only=True)
class ProcessSpec:
    """What to run. ``pty`` set: on a terminal of that size; then ``cmd`` may be None
    (the sandbox's login shell). ``args`` None: ``cmd`` is a shell command line."""

    cmd: str | None = None
    args: Sequence[str] | None = None
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    pty: TerminalSize | None = None


@dataclass(frozen=True, kw_only=True)
class OutputWindow:
    oldest_seq: int
    newest_seq: int
    bytes: int


@dataclass(frozen=True, kw_only=True)
class Foreground:
    pid: int
    cmd: str
    args: list[str]


@dataclass(frozen=True, kw_only=True)
class ManagedProcess:
    process_id: str
    kind: Literal["process", "pty"]
    pid: int
    state: Literal["starting", "running", "terminating", "exited", "failed"]
    leader_exited: bool
    tree_exited: bool
    created_at: datetime
    finished_at: datetime | None
    exit_code: int | None
    signal: str | None
    cmd: str
    args: list[str]
    cwd: str
    output: OutputWindow
    foreground: Foreground | None = None


@dataclass(frozen=True)
class OutputData:
    seq: int
    stream: str  # stdout, stderr or pty
    data: bytes


@dataclass(frozen=True)
class ProcessExit:
    exit_code: int | None
    signal: str | None


@dataclass(frozen=True)
class Heartbeat:
    pass


@dataclass(frozen=True)
class StreamError:
    error: str
    oldest_available_seq: int | None = None


ProcessFrame = OutputData | ProcessExit | Heartbeat | StreamError


def signal_number(name: str) -> int:
    """``"SIGTERM"`` (or ``"TERM"``, any case) → 15; an unknown name is a 400."""
    text = name.strip().upper() if isinstance(name, str) else ""
    try:
        return int(signals.Signals[text if text.startswith("SIG") else "SIG" + text])
    except KeyError:
        raise InvalidInput(
            f"unknown signal {str(name)[:32]!r}; use a name like SIGTERM, SIGINT, SIGKILL, SIGHUP",
            field="signal",
        ) from None


def _time(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, (int, float)) else None


def _process(view: dict[str, Any]) -> ManagedProcess:
    foreground = view.get("foreground")
    output = view["output"]
    return ManagedProcess(
        process_id=view["process_id"],
        kind=view["kind"],
        pid=view["pid"],
        state=view["state"],
        leader_exited=view["leader_exited"],
        tree_exited=view["tree_exited"],
        created_at=_time(view["created_at"]) or datetime.now(UTC),
        finished_at=_time(view.get("finished_at")),
        exit_code=view.get("exit_code"),
        signal=view.get("signal"),
        cmd=view["cmd"],
        args=list(view["args"]),
        cwd=view["cwd"],
        output=OutputWindow(
            oldest_seq=output["oldest_seq"],
            newest_seq=output["newest_seq"],
            bytes=output["bytes"],
        ),
        foreground=Foreground(
            pid=foreground["pid"], cmd=foreground["cmd"], args=list(foreground["args"])
        )
        if foreground
        else None,
    )


def _milliseconds(value: int, *, name: str, maximum: int) -> float:
    if not 0 <= value <= maximum:
        raise InvalidInput(f"{name} must be from 0 to {maximum}", field=name)
    return value / 1000


class ProcessService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self._sandboxes = sandboxes

    async def _call(
        self, user: Principal, ident: str, request: dict[str, Any], *, wait_s: float = 0.0
    ) -> dict[str, Any]:
        guest = await self._sandboxes.guest(user, ident)
        try:
            return await guest.call(request, timeout_s=wait_s + _AGENT_SLACK_S)
        except GuestUnreachable as exc:
            raise Unavailable("the sandbox's agent does not answer; it may have stopped") from exc
        except GuestError as exc:
            if exc.code == "not_found" and request["op"] != "proc_start":
                raise NotFound(f"{exc.message} in this sandbox", code="process_not_found") from exc
            if exc.code == "not_found":
                where = "cwd" if exc.message.startswith("working directory") else "cmd"
                raise InvalidInput(exc.message, field=where) from exc
            if exc.code == "conflict":
                raise Conflict(exc.message, field="state") from exc
            raise InvalidInput(exc.message) from exc

    async def create(self, user: Principal, ident: str, spec: ProcessSpec) -> ManagedProcess:
        if spec.cmd is None and spec.pty is None:
            raise InvalidInput("cmd is required (it may be left out only with pty)", field="cmd")
        checked = self._sandboxes.check_command(
            ExecCommand(cmd=spec.cmd or "sh", args=spec.args, env=spec.env, cwd=spec.cwd)
        )
        request: dict[str, Any] = {
            "op": "proc_start",
            "argv": checked.argv if spec.cmd is not None else None,
            "cmd": spec.cmd,
            "args": list(spec.args or []),
            "cwd": spec.cwd,
            "env": checked.env,
            "pty": {"rows": spec.pty.rows, "cols": spec.pty.cols} if spec.pty else None,
        }
        if spec.pty and not (1 <= spec.pty.rows <= 1000 and 1 <= spec.pty.cols <= 1000):
            raise InvalidInput("pty rows and cols must be from 1 to 1000", field="pty")
        answer = await self._call(user, ident, request)
        return _process(answer["process"])

    async def list(self, user: Principal, ident: str) -> list[ManagedProcess]:
        answer = await self._call(user, ident, {"op": "proc_list"})
        return [_process(view) for view in answer["processes"]]

    async def get(self, user: Principal, ident: str, process_id: str) -> ManagedProcess:
        answer = await self._call(user, ident, {"op": "proc_get", "id": process_id})
        return _process(answer["process"])

    async def connect(
        self, user: Principal, ident: str, process_id: str, *, after: int = 0
    ) -> AsyncIterator[ProcessFrame]:
        """Check the process exists (raising before any frame), then its frames: output
        after ``after`` (0: all that is kept), then one exit; heartbeats between."""
        if after < 0:
            raise InvalidInput("after must be 0 or more", field="after")
        await self.get(user, ident, process_id)
        return self._follow(user, ident, process_id, after)

    async def _follow(
        self, user: Principal, ident: str, process_id: str, after: int
    ) -> AsyncIterator[ProcessFrame]:
        replay_all = after == 0
        while True:
            try:
                got = await self._call(
                    user,
                    ident,
                    {"op": "proc_read", "id": process_id, "after": after, "wait": HEARTBEAT_S},
                    wait_s=HEARTBEAT_S,
                )
            except (Unavailable, NotFound, Conflict, InvalidInput) as exc:
                yield StreamError(exc.message)
                return
            if not replay_all and after < got["oldest"] - 1:
                yield StreamError(
                    f"output after {after} is no longer kept; the oldest kept is "
                    f"{got['oldest']} (the last 1 MiB is kept)",
                    oldest_available_seq=got["oldest"],
                )
                return
            replay_all = False
            for seq, stream, data in got["chunks"]:
                yield OutputData(seq, stream, base64.b64decode(data))
                after = seq
            if not got["chunks"]:
                if got["leader_exited"]:
                    yield ProcessExit(got["exit_code"], got["signal"])
                    return
                yield Heartbeat()

    async def write(self, user: Principal, ident: str, process_id: str, data: bytes) -> int:
        """Write ``data`` to the process's input (its terminal, for a PTY); its input_seq."""
        if len(data) > MAX_INPUT_BYTES:
            raise InvalidInput(
                f"input is at most {MAX_INPUT_BYTES} bytes a request", field="data_base64"
            )
        answer = await self._call(
            user,
            ident,
            {"op": "proc_write", "id": process_id, "data": base64.b64encode(data).decode()},
        )
        return int(answer["input_seq"])

    async def close_input(self, user: Principal, ident: str, process_id: str) -> None:
        """End the process's input (on a terminal: ^D). Idempotent."""
        await self._call(user, ident, {"op": "proc_close", "id": process_id})

    async def resize(
        self, user: Principal, ident: str, process_id: str, size: TerminalSize
    ) -> None:
        if not (1 <= size.rows <= 1000 and 1 <= size.cols <= 1000):
            raise InvalidInput("rows and cols must be from 1 to 1000", field="rows")
        await self._call(
            user,
            ident,
            {"op": "proc_resize", "id": process_id, "rows": size.rows, "cols": size.cols},
        )

    async def signal(self, user: Principal, ident: str, process_id: str, name: str) -> None:
        number = signal_number(name)
        await self._call(user, ident, {"op": "proc_signal", "id": process_id, "signal": number})

    async def wait(
        self,
        user: Principal,
        ident: str,
        process_id: str,
        *,
        scope: Literal["leader", "tree"] = "leader",
        timeout_ms: int = 30_000,
    ) -> ManagedProcess:
        """Once the leader (or the whole tree) has exited, or ``timeout_ms`` has passed."""
        timeout_s = _milliseconds(timeout_ms, name="timeout_ms", maximum=MAX_WAIT_MS)
        answer = await self._call(
            user,
            ident,
            {"op": "proc_wait", "id": process_id, "scope": scope, "timeout": timeout_s},
            wait_s=timeout_s,
        )
        return _process(answer["process"])

    async def kill(
        self, user: Principal, ident: str, process_id: str, *, grace_ms: int = 1000
    ) -> ManagedProcess:
        """End the whole tree: SIGTERM, then SIGKILL after ``grace_ms``; the final state.
        The process is then forgotten (a later get is a 404)."""
        grace_s = _milliseconds(grace_ms, name="grace_ms", maximum=MAX_GRACE_MS)
        answer = await self._call(
            user, ident, {"op": "proc_kill", "id": process_id, "grace": grace_s},
            wait_s=grace_s + 10,
        )  # fmt: skip
        return _process(answer["process"])
