"""The guest agent's long-lived processes: on a terminal or not, their output kept and
numbered so it can be read again from any point, outliving the connection that started
them. The ``proc_*`` ops."""

from __future__ import annotations

import os
import struct
import threading
import time

from .commands import DRAIN_AFTER_EXIT_S, command
from .wire import CHUNK, STDERR, STDOUT, Connection, NotFound, suppress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .agent import Agent, Waiter

OPS = frozenset(
    (
        "proc_start",
        "proc_read",
        "proc_write",
        "proc_resize",
        "proc_signal",
        "proc_wait",
        "proc_list",
    )
)
KEEP_OUTPUT = 1 << 20  # bytes of a process's output kept to be read again


class Session:
    """A long-lived process: its output, numbered and kept, and how it ended."""

    def __init__(self, ident: str, proc: Any, argv: list[str], master: int, pty: bool) -> None:
        self.id = ident
        self.proc = proc
        self.argv = argv
        self.master = master
        self.pty = pty
        self.cond = threading.Condition()
        self.chunks: list[tuple[int, bytes, bytes]] = []
        self.size = 0
        self.next = 1
        self.running = True
        self.exit_code: int | None = None

    def pump(self, fd: int, stream: bytes) -> None:
        while True:
            try:
                data = os.read(fd, CHUNK)
            except OSError:  # EIO: every holder of the terminal is gone
                data = b""
            if not data:
                return
            with self.cond:
                self.chunks.append((self.next, stream, data))
                self.next += 1
                self.size += len(data)
                while self.size > KEEP_OUTPUT and len(self.chunks) > 1:
                    self.size -= len(self.chunks.pop(0)[2])
                self.cond.notify_all()

    def finish(self, code: int) -> None:
        with self.cond:
            self.running = False
            self.exit_code = 128 - code if code < 0 else code
            self.cond.notify_all()
        if self.master >= 0:
            with suppress(OSError):
                os.close(self.master)

    def state(self) -> dict[str, Any]:
        return {"running": self.running, "exit_code": self.exit_code}

    def read(self, after: int, wait: float) -> dict[str, Any]:
        import binascii

        deadline = time.monotonic() + wait
        with self.cond:
            while self.running and self.next - 1 <= after:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            chunks = [
                [
                    seq,
                    "stdout" if stream == STDOUT else "stderr",
                    binascii.b2a_base64(data, newline=False).decode(),
                ]
                for seq, stream, data in self.chunks
                if seq > after
            ]
            first = self.chunks[0][0] if self.chunks else self.next
            return {"chunks": chunks, "next": self.next, "first": first, **self.state()}

    def write(self, data: bytes, *, eof: bool) -> None:
        if self.pty:
            if data:
                os.write(self.master, data)
            if eof:
                os.write(self.master, b"\x04")  # ^D: end of input on a terminal
            return
        stdin = self.proc.stdin
        if stdin is None:
            raise ValueError("the process's input is closed")
        try:
            if data:
                stdin.write(data)
                stdin.flush()
            if eof:
                stdin.close()
                self.proc.stdin = None
        except OSError as exc:
            raise ValueError(f"the process does not read its input: {exc}") from None

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.cond.wait(left)


def _window(request: dict[str, Any]) -> tuple[int, int]:
    rows, cols = request.get("rows") or 24, request.get("cols") or 80
    if not (
        isinstance(rows, int) and isinstance(cols, int) and 1 <= rows <= 1000 and 1 <= cols <= 1000
    ):
        raise ValueError("rows and cols must be whole numbers from 1 to 1000")
    return rows, cols


def _set_window(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def dispatch(agent: Agent, conn: Connection, op: str, request: dict[str, Any]) -> None:
    """Run the ``proc_*`` op ``op`` (one of :data:`OPS`)."""
    globals()[op](agent, conn, request)


def proc_start(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    argv, env, cwd = command(agent, request)
    use_pty = bool(request.get("pty"))
    rows, cols = _window(request)
    import subprocess

    master = slave = -1
    if use_pty:
        master, slave = os.openpty()
        _set_window(master, rows, cols)
        if "TERM" not in (request.get("env") or {}):
            env["TERM"] = "xterm-256color"  # what terminals speak today
        # setsid --ctty: a session of its own with this terminal as its controlling one.
        argv = ["setsid", "--ctty", "--", *argv]
    try:
        with agent.spawn_lock:
            if use_pty:
                proc = subprocess.Popen(
                    argv,
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    cwd=cwd,
                    env=env,
                    close_fds=True,
                )
            else:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=cwd,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
            waiter = agent.waiter_for(proc.pid)
            agent.session_count += 1
            session = Session(f"p{agent.session_count}", proc, argv, master, use_pty)
            _keep(agent, session)
        agent.child_exited.set()
    except OSError as exc:
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)
        missing = isinstance(exc, FileNotFoundError)
        what = "working directory" if missing and exc.filename == cwd else "command"
        conn.send_error(
            "not_found" if missing else "io",
            f"{what} not found: {exc.filename}"
            if missing
            else f"cannot start {argv[0]}: {exc.strerror or exc}",
        )
        return
    if slave >= 0:
        os.close(slave)  # the child holds its own; EIO on the master once all are gone
    if use_pty:
        sources = [(master, STDOUT)]
    else:
        assert proc.stdout is not None and proc.stderr is not None
        sources = [(proc.stdout.fileno(), STDOUT), (proc.stderr.fileno(), STDERR)]
    readers = [
        threading.Thread(target=session.pump, args=source, daemon=True) for source in sources
    ]
    for reader in readers:
        reader.start()
    threading.Thread(target=_settle, args=(agent, session, waiter, readers), daemon=True).start()
    conn.send_json({"ok": True, "id": session.id, "pid": proc.pid})


def _keep(agent: Agent, session: Session) -> None:
    """Remember ``session``; beyond 64, the oldest finished ones are forgotten."""
    agent.sessions[session.id] = session
    finished = [s for s in agent.sessions.values() if not s.running]
    for old in finished[: max(0, len(agent.sessions) - 64)]:
        del agent.sessions[old.id]


def _settle(
    agent: Agent, session: Session, waiter: Waiter, readers: list[threading.Thread]
) -> None:
    waiter.done.wait()
    with agent.spawn_lock:
        agent.waiters.pop(session.proc.pid, None)
    deadline = time.monotonic() + DRAIN_AFTER_EXIT_S
    for reader in readers:
        reader.join(max(0.0, deadline - time.monotonic()))
    session.finish(os.waitstatus_to_exitcode(waiter.status))


def _session(agent: Agent, request: dict[str, Any]) -> Session:
    session: Session | None = agent.sessions.get(request.get("id"))  # type: ignore[arg-type]
    if session is None:
        raise NotFound(f"no process {request.get('id')!r}")
    return session


def proc_read(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    session = _session(agent, request)
    after, wait = request.get("after") or 0, request.get("wait") or 0
    if not isinstance(after, int) or not isinstance(wait, (int, float)):
        raise ValueError("after must be an integer and wait a number")
    conn.send_json({"ok": True, **session.read(after, min(float(wait), 30.0))})


def proc_write(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    import binascii

    session = _session(agent, request)
    data = request.get("data") or ""
    if not isinstance(data, str):
        raise ValueError("data must be base64 text")
    session.write(binascii.a2b_base64(data), eof=bool(request.get("eof")))
    conn.send_json({"ok": True})


def proc_resize(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    session = _session(agent, request)
    if session.pty:
        _set_window(session.master, *_window(request))
    conn.send_json({"ok": True})


def proc_signal(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    session = _session(agent, request)
    number = request.get("signal")
    if not isinstance(number, int) or not 1 <= number <= 64:
        raise ValueError("signal must be a signal number")
    if session.running:
        with suppress(OSError):
            os.killpg(session.proc.pid, number)
    conn.send_json({"ok": True})


def proc_wait(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    session = _session(agent, request)
    timeout = request.get("timeout") or 0
    if not isinstance(timeout, (int, float)):
        raise ValueError("timeout must be a number")
    session.wait(min(float(timeout), 300.0))
    conn.send_json({"ok": True, **session.state()})


def proc_list(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    conn.send_json(
        {
            "ok": True,
            "processes": [
                {"id": s.id, "pid": s.proc.pid, "argv": s.argv, "pty": s.pty, **s.state()}
                for s in agent.sessions.values()
            ],
        }
    )
