"""The guest agent's managed processes: long-lived commands, on a terminal (PTY) or on
pipes, that outlive the connection that started them. Their output is kept (the last
1 MiB) and numbered chunk by chunk, so it can be read again from any point.

Ops (each answers ``{"ok": true, …}`` or an error with code ``not_found``, ``invalid``,
``conflict`` or ``io``); ``process`` is the view :meth:`Process.view` makes:

    proc_start  {"argv"?, "cmd", "args", "env", "cwd", "pty": {"rows","cols"}|null}
                → {"process"}. Without argv (a terminal only): the sandbox's login shell.
    proc_get    {"id"} → {"process"}          proc_list {} → {"processes": […]}
    proc_read   {"id", "after", "wait"} → {"chunks": [[seq, stream, b64]…], "oldest",
                "newest", "leader_exited", "exit_code", "signal"}: chunks after ``after``,
                waiting up to ``wait`` s for one while the leader runs.
    proc_write  {"id", "data": b64} → {"input_seq"}     proc_close {"id"} (end of input)
    proc_resize {"id", "rows", "cols"}                  proc_signal {"id", "signal": n}
    proc_wait   {"id", "scope": "leader"|"tree", "timeout"} → {"process"}
    proc_kill   {"id", "grace"} → {"process"}: TERM to the whole tree, KILL after
                ``grace`` s, then the process is forgotten.

The *tree* of a process is its session: the leader runs in a session of its own, and
whatever it starts stays in that session (orphans too, once PID 1 adopts them) unless it
calls setsid itself. The tree has exited when no live process of the session is left.
"""

from __future__ import annotations

import os
import struct
import threading
import time

from .commands import DRAIN_AFTER_EXIT_S, command, identity
from .wire import CHUNK, Connection, NotFound, suppress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from .agent import Agent, Waiter

OPS = frozenset(
    ("proc_start", "proc_get", "proc_list", "proc_read", "proc_write", "proc_close",
     "proc_resize", "proc_signal", "proc_wait", "proc_kill")
)  # fmt: skip
KEEP_OUTPUT = 1 << 20  # bytes of a process's output kept to be read again
READ_BYTES = 512 * 1024  # output bytes in one read's answer (base64 fits in a frame)
KEEP_PROCESSES = 64  # beyond this many, the oldest finished processes are forgotten
MAX_WAIT_S = 300.0
KILL_WAIT_S = 5.0  # after SIGKILL, how long to wait for the tree to be gone
TREE_POLL_S = 0.25  # how often a wait for the tree looks again (only while one waits)


class Conflict(Exception):
    """The process is not in a state that allows the operation (it has exited)."""


class Process:
    """A long-lived process: its output, numbered and kept, and how it ended."""

    def __init__(self, ident: str, proc: Any, master: int, meta: dict[str, Any]) -> None:
        self.id = ident
        self.proc = proc
        self.master = master
        self.pty = master >= 0
        self.meta = meta  # cmd, args, cwd as asked
        self.created_at = time.time()
        self.finished_at: float | None = None
        self.cond = threading.Condition()
        self.input_lock = threading.Lock()
        self.chunks: list[tuple[int, str, bytes]] = []
        self.size = 0
        self.newest = 0
        self.input_seq = 0
        self.stdin_open = True
        self.running = True
        self.terminating = False
        self.tree_exited = False
        self.exit_code: int | None = None
        self.signal: int | None = None

    def pump(self, fd: int, stream: str) -> None:
        while True:
            try:
                data = os.read(fd, CHUNK)
            except OSError:  # EIO: every holder of the terminal is gone
                data = b""
            if not data:
                return
            with self.cond:
                self.newest += 1
                self.chunks.append((self.newest, stream, data))
                self.size += len(data)
                while self.size > KEEP_OUTPUT and len(self.chunks) > 1:
                    self.size -= len(self.chunks.pop(0)[2])
                self.cond.notify_all()

    def finish(self, code: int) -> None:
        with self.cond:
            self.running = False
            self.finished_at = time.time()
            self.signal = -code if code < 0 else None
            self.exit_code = 128 - code if code < 0 else code
            self.cond.notify_all()

    def oldest(self) -> int:
        return self.chunks[0][0] if self.chunks else self.newest

    def tree_gone(self, live: set[int] | None = None) -> bool:
        """Whether the leader and everything left in its session have exited."""
        if not self.tree_exited and not self.running:
            self.tree_exited = self.proc.pid not in (live if live is not None else sessions())
            if self.tree_exited and self.master >= 0:
                with suppress(OSError):
                    os.close(self.master)
                self.master = -1
        return self.tree_exited

    def view(self, live: set[int] | None = None) -> dict[str, Any]:
        tree = self.tree_gone(live)
        state = ("terminating" if self.terminating else "running") if self.running else "exited"
        view: dict[str, Any] = {
            "process_id": self.id,
            "kind": "pty" if self.pty else "process",
            "pid": self.proc.pid,
            "state": state,
            "leader_exited": not self.running,
            "tree_exited": tree,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "exit_code": self.exit_code,
            "signal": _signal_name(self.signal),
            **self.meta,
            "output": {"oldest_seq": self.oldest(), "newest_seq": self.newest, "bytes": self.size},
        }
        if self.pty and self.master >= 0:
            view["foreground"] = _foreground(self.master, self.proc.pid)
        return view

    def read(self, after: int, wait: float) -> dict[str, Any]:
        import binascii

        deadline = time.monotonic() + wait
        with self.cond:
            while self.running and self.newest <= after:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            chunks: list[list[Any]] = []
            size = 0
            for seq, stream, data in self.chunks:
                if seq <= after:
                    continue
                if chunks and size + len(data) > READ_BYTES:
                    break  # the rest in the next read: an answer is one frame
                chunks.append([seq, stream, binascii.b2a_base64(data, newline=False).decode()])
                size += len(data)
            return {
                "chunks": chunks,
                "oldest": self.oldest(),
                "newest": self.newest,
                "leader_exited": not self.running,
                "exit_code": self.exit_code,
                "signal": _signal_name(self.signal),
            }

    def write(self, data: bytes) -> int:
        # Not under ``cond``: a process that does not read would block its readers too.
        with self.input_lock:
            if not self.running:
                raise Conflict(f"process {self.id} has exited")
            if not self.stdin_open:
                raise Conflict(f"the input of process {self.id} is closed")
            try:
                if self.pty:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(self.master, view) :]
                    if b"\x03" in data:
                        _interrupt_if_unseen(self.master, self.proc.pid)
                else:
                    self.proc.stdin.write(data)
                    self.proc.stdin.flush()
            except OSError as exc:
                raise Conflict(f"process {self.id} does not read its input: {exc}") from None
            self.input_seq += 1
            return self.input_seq

    def close_input(self) -> None:
        with self.input_lock:
            if not self.stdin_open:
                return
            if self.pty:
                if self.running:
                    with suppress(OSError):
                        os.write(self.master, b"\x04")  # ^D: end of input on a terminal
            else:
                with suppress(OSError):
                    self.proc.stdin.close()
            self.stdin_open = False

    def wait_leader(self, deadline: float) -> None:
        with self.cond:
            while self.running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.cond.wait(left)


def _live_sessions() -> Iterator[tuple[int, int]]:
    """``(pid, session id)`` of every live (not zombie) process this agent can see."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 3 and fields[0] != b"Z":
            yield int(name), int(fields[3])


def sessions() -> set[int]:
    """The session ids of every live (not zombie) process this agent can see."""
    return {sid for _, sid in _live_sessions()}


def _session_members(sid: int) -> list[int]:
    return [pid for pid, session in _live_sessions() if session == sid]


def _signal_name(number: int | None) -> str | None:
    if number is None:
        return None
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def _foreground_group(master: int, leader: int) -> int:
    """The terminal's foreground process group: asked of the terminal, or (gVisor, whose
    terminal master does not answer TIOCGPGRP) read from the session leader's stat."""
    try:
        return os.tcgetpgrp(master)
    except OSError:
        pass
    # gVisor: its /proc has no tpgid either, so the newest job of the leader's session
    # (a process group led by a process of the session other than the leader) stands in.
    newest = leader
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        pid, group, session = int(entry), int(fields[2]), int(fields[3])
        if session == leader and group == pid and fields[0] != b"Z" and pid > newest:
            newest = pid
    return newest


def _interrupt_if_unseen(master: int, leader: int) -> None:
    """^C written to a terminal interrupts its foreground job. gVisor's terminal (whose
    master does not answer TIOCGPGRP) does not signal it: do it here, as a kernel would."""
    try:
        os.tcgetpgrp(master)
        return  # a terminal with job control: its line discipline sent SIGINT
    except OSError:
        pass
    group = _foreground_group(master, leader)
    if group != leader:
        with suppress(OSError):
            os.killpg(group, 2)  # SIGINT


def _foreground(master: int, leader: int) -> dict[str, Any] | None:
    """The terminal's foreground job: its group leader's pid and command line."""
    try:
        pgrp = _foreground_group(master, leader)
        with open(f"/proc/{pgrp}/cmdline", "rb") as handle:
            argv = [part.decode(errors="replace") for part in handle.read().split(b"\0")[:-1]]
    except OSError:
        return None
    if not argv:
        return None
    return {"pid": pgrp, "cmd": argv[0], "args": argv[1:]}


def _window(pty: Any) -> tuple[int, int]:
    if not isinstance(pty, dict):
        raise ValueError("pty must be an object with rows and cols")
    rows, cols = pty.get("rows") or 24, pty.get("cols") or 80
    if not (
        isinstance(rows, int) and isinstance(cols, int) and 1 <= rows <= 1000 and 1 <= cols <= 1000
    ):
        raise ValueError("rows and cols must be whole numbers from 1 to 1000")
    return rows, cols


def _set_window(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _login_shell() -> list[str]:
    """root's shell from the sandbox's passwd file (``-l``), else bash, else sh."""
    candidates = []
    with suppress(OSError, ValueError), open("/etc/passwd") as handle:
        for line in handle:
            fields = line.rstrip("\n").split(":")
            if len(fields) > 6 and fields[2] == "0":
                candidates.append(fields[6])
                break
    for shell in (*candidates, "/bin/bash", "/bin/sh"):
        if shell and os.access(shell, os.X_OK):
            return [shell, "-l"]
    return ["/bin/sh", "-l"]


def _find_program(name: str, env: dict[str, str]) -> bool:
    if "/" in name:
        return os.access(name, os.X_OK)
    return any(
        os.access(os.path.join(part, name), os.X_OK)
        for part in env.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(":")
        if part
    )


def dispatch(agent: Agent, conn: Connection, op: str, request: dict[str, Any]) -> None:
    """Run the ``proc_*`` op ``op`` (one of :data:`OPS`)."""
    try:
        globals()[op](agent, conn, request)
    except Conflict as exc:
        conn.send_error("conflict", str(exc))


def proc_start(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    pty = request.get("pty")
    if request.get("argv") is None and pty is not None:
        request = {**request, "argv": _login_shell()}
    argv, env, cwd = command(agent, request)
    ids = identity(agent, request, env)
    cmd, args, given_cwd = request.get("cmd"), request.get("args"), request.get("cwd")
    meta = {
        "cmd": cmd if isinstance(cmd, str) else argv[0],
        "args": args if isinstance(cmd, str) and isinstance(args, list) else argv[1:],
        "cwd": given_cwd if isinstance(given_cwd, str) else agent.workdir,
    }
    import subprocess

    master = slave = -1
    if pty is not None:
        rows, cols = _window(pty)
        if agent.root is None and not _find_program(argv[0], env):
            conn.send_error("not_found", f"command not found: {argv[0]}")
            return
        master, slave = os.openpty()
        _set_window(master, rows, cols)
        if "TERM" not in (request.get("env") or {}):
            env["TERM"] = "xterm-256color"  # what terminals speak today
        # setsid --ctty: a session of its own with this terminal as its controlling one.
        argv = ["setsid", "--ctty", "--", *argv]
    try:
        with agent.spawn_lock:
            if pty is not None:
                proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                        cwd=cwd, env=env, close_fds=True, **ids)  # fmt: skip
            else:
                proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, cwd=cwd, env=env,
                                        start_new_session=True, close_fds=True,
                                        **ids)  # fmt: skip
            waiter = agent.waiter_for(proc.pid)
            agent.session_count += 1
            process = Process(f"proc_{agent.session_count}", proc, master, meta)
            _keep(agent, process)
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
    if pty is not None:
        sources = [(master, "pty")]
    else:
        assert proc.stdout is not None and proc.stderr is not None
        sources = [(proc.stdout.fileno(), "stdout"), (proc.stderr.fileno(), "stderr")]
    readers = [
        threading.Thread(target=process.pump, args=source, daemon=True) for source in sources
    ]
    for reader in readers:
        reader.start()
    threading.Thread(target=_settle, args=(agent, process, waiter, readers), daemon=True).start()
    conn.send_json({"ok": True, "process": process.view()})


def _keep(agent: Agent, process: Process) -> None:
    """Remember ``process``; beyond the limit, the oldest finished ones are forgotten."""
    agent.sessions[process.id] = process
    finished = [p for p in agent.sessions.values() if not p.running]
    for old in finished[: max(0, len(agent.sessions) - KEEP_PROCESSES)]:
        del agent.sessions[old.id]


def _settle(
    agent: Agent, process: Process, waiter: Waiter, readers: list[threading.Thread]
) -> None:
    waiter.done.wait()
    with agent.spawn_lock:
        agent.waiters.pop(process.proc.pid, None)
    deadline = time.monotonic() + DRAIN_AFTER_EXIT_S
    for reader in readers:
        reader.join(max(0.0, deadline - time.monotonic()))
    process.finish(os.waitstatus_to_exitcode(waiter.status))
    with agent.reaped:
        agent.reaped.notify_all()


def _process(agent: Agent, request: dict[str, Any]) -> Process:
    process: Process | None = agent.sessions.get(request.get("id"))  # type: ignore[arg-type]
    if process is None:
        raise NotFound(f"no process {request.get('id')!r}")
    return process


def _seconds(request: dict[str, Any], key: str) -> float:
    value = request.get(key) or 0
    if not isinstance(value, (int, float)) or value != value or value < 0:
        raise ValueError(f"{key} must be a number of seconds")
    return min(float(value), MAX_WAIT_S)


def proc_get(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    conn.send_json({"ok": True, "process": _process(agent, request).view()})


def proc_list(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    live = sessions()
    processes = [p.view(live) for p in list(agent.sessions.values())]
    conn.send_json({"ok": True, "processes": processes})


def proc_read(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    process = _process(agent, request)
    after = request.get("after") or 0
    if not isinstance(after, int):
        raise ValueError("after must be an integer")
    conn.send_json({"ok": True, **process.read(after, min(_seconds(request, "wait"), 30.0))})


def proc_write(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    import binascii

    process = _process(agent, request)
    data = request.get("data") or ""
    if not isinstance(data, str):
        raise ValueError("data must be base64 text")
    try:
        payload = binascii.a2b_base64(data)
    except binascii.Error:
        raise ValueError("data must be base64 text") from None
    conn.send_json({"ok": True, "input_seq": process.write(payload)})


def proc_close(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    _process(agent, request).close_input()
    conn.send_json({"ok": True})


def proc_resize(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    process = _process(agent, request)
    rows, cols = _window(request)
    if not process.pty:
        raise ValueError(f"process {process.id} is not on a terminal")
    if process.master < 0 or process.tree_gone():
        raise Conflict(f"process {process.id} has exited")
    _set_window(process.master, rows, cols)
    conn.send_json({"ok": True})


def proc_signal(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    """To the process group, or on a terminal to its foreground job's group."""
    process = _process(agent, request)
    number = request.get("signal")
    if not isinstance(number, int) or not 1 <= number <= 64:
        raise ValueError("signal must be a signal number")
    if process.tree_gone():
        raise Conflict(f"process {process.id} has exited")
    group = process.proc.pid
    if process.pty and process.master >= 0:
        with suppress(OSError, ValueError, IndexError):
            group = _foreground_group(process.master, process.proc.pid)
    try:
        os.killpg(group, number)
    except ProcessLookupError:
        raise Conflict(f"process {process.id} has exited") from None
    except OSError as exc:
        raise ValueError(f"cannot signal process {process.id}: {exc.strerror}") from None
    conn.send_json({"ok": True})


def _wait_tree(agent: Agent, process: Process, deadline: float) -> None:
    """Until the whole tree is gone or ``deadline``; woken when the agent reaps a child,
    and looking again every so often (a tree member's parent may be outside the tree)."""
    process.wait_leader(deadline)
    while not process.tree_gone():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        with agent.reaped:
            agent.reaped.wait(min(left, TREE_POLL_S))


def proc_wait(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    process = _process(agent, request)
    scope = request.get("scope") or "leader"
    if scope not in ("leader", "tree"):
        raise ValueError("scope must be leader or tree")
    deadline = time.monotonic() + _seconds(request, "timeout")
    if scope == "leader":
        process.wait_leader(deadline)
    else:
        _wait_tree(agent, process, deadline)
    conn.send_json({"ok": True, "process": process.view()})


def _signal_tree(process: Process, number: int) -> None:
    for pid in _session_members(process.proc.pid):
        with suppress(OSError):
            os.kill(pid, number)


def proc_kill(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    """End the whole tree: SIGTERM, SIGKILL after ``grace`` s; then forget the process."""
    import signal

    process = _process(agent, request)
    grace = _seconds(request, "grace")
    with process.cond:
        process.terminating = process.running
    if not process.tree_gone():
        _signal_tree(process, signal.SIGTERM)
        _wait_tree(agent, process, time.monotonic() + grace)
    if not process.tree_gone():
        _signal_tree(process, signal.SIGKILL)
        _wait_tree(agent, process, time.monotonic() + KILL_WAIT_S)
    with process.cond:
        process.terminating = False
    view = process.view()
    with agent.spawn_lock:
        if view["tree_exited"]:
            agent.sessions.pop(process.id, None)
    conn.send_json({"ok": True, "process": view})
