"""The guest agent: init (PID 1) of every sandbox, serving exec and files to the host.

Standard library only: it runs with the image's own ``python3 -S -E -s``, bind-mounted
read-only at ``/.hutch/guest``. The host creates the listening unix socket and passes it
in as a file descriptor (``--listen-fd``), so nothing inside the sandbox can replace the
socket path the host connects to (say, with a symlink to a host service).

Protocol, one operation per connection. Every message is a frame: one kind byte, a 4-byte
big-endian length, then the payload. The client opens with a JSON frame naming ``op``.

    ping   → J {"ok": true, "pid": …, "version": …}
    exec   {"argv", "env", "cwd", "timeout", "stdin": bool}
           (stdin: D frames, then Z)  → O/E frames as output happens, then
           J {"type": "exit", "exit_code": int|null, "error": str|null}
           A timeout, or the client going away, kills the whole process group.
    put    {"path", "mode"} then D frames, then Z → J {"ok": true, "size": n}
           written to a temp file and renamed, so a failed upload leaves the old file.
    get    {"path"} → J {"ok": true, "size": n}, D frames, Z
    spawn  {"argv", "env", "cwd", "log"} → J {"ok": true, "pid": n}: a background process
           in a session of its own, its output appended to the file ``log``.
    proc_start  {"argv", "env", "cwd", "pty": bool, "rows", "cols"} → J {"ok", "id", "pid"}:
           a process that outlives the connection, on a terminal of its own when ``pty``;
           its output is kept (the last 1 MiB) and numbered, to be read again from any point.
    proc_read   {"id", "after": seq, "wait": s} → J {"ok", "chunks": [[seq, stream, b64]],
           "next", "first", "running", "exit_code"}: output after ``after``, waiting up to
           ``wait`` seconds for some.
    proc_write  {"id", "data": b64, "eof": bool} · proc_resize {"id", "rows", "cols"} ·
    proc_signal {"id", "signal": n} · proc_wait {"id", "timeout"} · proc_list {}
    Errors: J {"error": {"code": "not_found"|"is_directory"|"invalid"|"io", "message"}}

With ``--root DIR`` (the fake driver's mode, never inside a sandbox) paths are taken
relative to DIR.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # (no stub; it is signal without enum)
import _socket
import errno
import os
import stat
import struct
import sys
import threading
import time

# Every sandbox waits for this module to load before it counts as started, so it imports
# only what answering a ping needs: the C halves of socket and signal (their Python halves
# pull in enum, collections and selectors, ~10 ms), no contextlib, no typing. What exec and
# the JSON paths need loads in the background after the first ping (``_preload``).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import Any

VERSION = 1
PING_REQUEST = b'{"op": "ping"}'
FRAME = struct.Struct(">cI")
JSON = b"J"
DATA = b"D"
STDOUT = b"O"
STDERR = b"E"
END = b"Z"
MAX_FRAME = 1 << 20
CHUNK = 64 * 1024
# After the main process exits, how long to keep reading output that its children may
# still hold open (`sleep 100 &` keeps the pipe open; the command is still done).
DRAIN_AFTER_EXIT_S = 0.5
# Children of the agent are killed first when a sandbox runs out of memory.
CHILD_OOM_SCORE_ADJ = "500"


class ProtocolError(Exception):
    pass


class suppress:
    """contextlib.suppress, without importing contextlib."""

    def __init__(self, *exceptions: type[BaseException]) -> None:
        self.exceptions = exceptions

    def __enter__(self) -> None:
        pass

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, self.exceptions)


class Connection:
    """Framed messages over one accepted socket. Sends are serialised across threads."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._send_lock = threading.Lock()

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        with self._send_lock:
            for start in range(0, max(len(payload), 1), MAX_FRAME):
                part = payload[start : start + MAX_FRAME]
                self.sock.sendall(FRAME.pack(kind, len(part)) + part)

    def send_json(self, message: dict[str, Any]) -> None:
        import json

        self.send(JSON, json.dumps(message).encode())

    def send_error(self, code: str, message: str) -> None:
        self.send_json({"error": {"code": code, "message": message}})

    def _read(self, size: int) -> bytes:
        """``size`` bytes, or fewer at the end of the stream."""
        buffer = self._buffer
        while len(buffer) < size:
            chunk = self.sock.recv(max(CHUNK, size - len(buffer)))
            if not chunk:
                break
            buffer += chunk
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    def recv(self) -> tuple[bytes, bytes] | None:
        """The next frame, or None at a clean end of stream."""
        header = self._read(FRAME.size)
        if not header:
            return None
        if len(header) < FRAME.size:
            raise ProtocolError("truncated frame header")
        kind, length = FRAME.unpack(header)
        if length > MAX_FRAME:
            raise ProtocolError("frame too large")
        payload = self._read(length) if length else b""
        if len(payload) < length:
            raise ProtocolError("truncated frame")
        return kind, payload

    def close(self) -> None:
        with suppress(OSError):
            self.sock.close()


_PROCESS_OPS = frozenset(
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


class _NoSuchProcess(Exception):
    pass


class _Session:
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


class _Waiter:
    """Where the reaper leaves one exec's exit status."""

    __slots__ = ("done", "status")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.status = 0

    def deliver(self, status: int) -> None:
        self.status = status
        self.done.set()


class Agent:
    def __init__(self, root: str | None) -> None:
        self.root = root
        # The reaper is the only caller of wait(); it hands each exit status to the exec
        # waiting for that pid. A status that arrives before its exec registered waits in
        # ``unclaimed`` (orphans' statuses too, until they are old enough to drop).
        self.spawn_lock = threading.Lock()
        self.waiters: dict[int, _Waiter] = {}
        self.unclaimed: dict[int, tuple[int, float]] = {}
        self.child_exited = threading.Event()
        self.preloaded = False
        self.sessions: dict[str, _Session] = {}
        self.session_count = 0

    # -- paths ---------------------------------------------------------------------------

    def resolve(self, path: Any) -> str:
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise ValueError("path must be an absolute path")
        if any(part == ".." for part in path.split("/")):
            raise ValueError("path must not contain '..'")
        if self.root is None:
            return path
        return os.path.join(self.root, path.lstrip("/"))

    # -- serving -------------------------------------------------------------------------

    def serve(self, listener: _socket.socket) -> None:
        while True:
            try:
                fd, _ = listener._accept()  # type: ignore[attr-defined]
                sock = _socket.socket(fileno=fd)
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.ECONNABORTED):
                    continue
                raise
            try:
                threading.Thread(target=self.handle, args=(sock,), daemon=True).start()
            except RuntimeError:  # no thread to be had: the sandbox's pids limit is reached
                with suppress(OSError):
                    Connection(sock).send_error("busy", "the sandbox has no free process slots")
                    sock.close()

    def handle(self, sock: _socket.socket) -> None:
        conn = Connection(sock)
        try:
            frame = conn.recv()
            if frame is None or frame[0] != JSON:
                raise ProtocolError("expected a JSON request frame")
            if frame[1] == PING_REQUEST:
                # The host's readiness probe: answered without json, then the rest loads.
                conn.send(JSON, b'{"ok": true, "pid": %d, "version": %d}' % (os.getpid(), VERSION))
                self._preload()
                return
            import json

            request = json.loads(frame[1])
            if not isinstance(request, dict):
                raise ProtocolError("request must be a JSON object")
            op = request.get("op")
            if op == "ping":
                conn.send_json({"ok": True, "pid": os.getpid(), "version": VERSION})
            elif op == "exec":
                self.exec(conn, request)
            elif op == "spawn":
                self.spawn(conn, request)
            elif op == "put":
                self.put(conn, request)
            elif op == "get":
                self.get(conn, request)
            elif isinstance(op, str) and op in _PROCESS_OPS:
                getattr(self, op)(conn, request)
            else:
                conn.send_error("invalid", f"unknown op {op!r}")
        except _NoSuchProcess as exc:
            with suppress(OSError):
                conn.send_error("not_found", str(exc))
        except (ProtocolError, ValueError, UnicodeDecodeError) as exc:
            with suppress(OSError):
                conn.send_error("invalid", str(exc))
        except OSError:
            pass  # the host went away
        finally:
            conn.close()

    def _preload(self) -> None:
        """Import what exec needs in the background, once, while the host gets on."""
        if not self.preloaded:
            self.preloaded = True
            threading.Thread(target=_import_exec_modules, daemon=True).start()

    # -- exec ----------------------------------------------------------------------------

    def _command(self, request: dict[str, Any]) -> tuple[list[str], dict[str, str], str]:
        """An exec or spawn request's argv, environment and working directory, checked.
        The environment is the sandbox's own (its envs), then the request's."""
        argv = request.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError("argv must be a non-empty list of strings")
        env = request.get("env") or {}
        if not isinstance(env, dict):
            raise ValueError("env must be an object")
        cwd = self.resolve(request.get("cwd") or "/")
        return argv, {**os.environ, **{str(k): str(v) for k, v in env.items()}}, cwd

    def exec(self, conn: Connection, request: dict[str, Any]) -> None:
        argv, env, cwd = self._command(request)
        timeout = request.get("timeout")
        wants_stdin = bool(request.get("stdin"))
        import subprocess

        try:
            with self.spawn_lock:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE if wants_stdin else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=cwd,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
                waiter = self._waiter_for(proc.pid)
            self.child_exited.set()  # wake the reaper: it has a child to wait for
        except FileNotFoundError as exc:
            if exc.filename == cwd:
                self._refuse(conn, f"working directory not found: {request.get('cwd') or '/'}")
            else:
                self._refuse(conn, f"command not found: {argv[0]}")
            return
        except OSError as exc:
            self._refuse(conn, f"cannot start {argv[0]}: {exc.strerror or exc}")
            return
        try:
            with open(f"/proc/{proc.pid}/oom_score_adj", "w") as handle:
                handle.write(CHILD_OOM_SCORE_ADJ)
        except OSError:
            pass

        gone = threading.Event()
        pumps = [
            threading.Thread(
                target=self._pump, args=(proc.stdout, conn, STDOUT, gone), daemon=True
            ),
            threading.Thread(
                target=self._pump, args=(proc.stderr, conn, STDERR, gone), daemon=True
            ),
        ]
        feeder = threading.Thread(
            target=self._feed, args=(conn, proc, wants_stdin, gone), daemon=True
        )
        try:
            for thread in (*pumps, feeder):
                thread.start()
        except RuntimeError:
            self._kill_group(proc)
            self._wait(proc, waiter, None)
            self._refuse(conn, "the sandbox has no free process slots")
            return

        error = None
        deadline = None if timeout in (None, 0) else time.monotonic() + float(timeout)
        while not self._wait(proc, waiter, 0.2):
            if gone.is_set():
                self._kill_group(proc)
                self._wait(proc, waiter, None)
                return
            if deadline is not None and time.monotonic() >= deadline:
                self._kill_group(proc)
                self._wait(proc, waiter, None)
                error = f"timeout: killed after {timeout} s"
                break
        drain_until = time.monotonic() + DRAIN_AFTER_EXIT_S
        for pump in pumps:
            pump.join(max(0.0, drain_until - time.monotonic()))
        for stream in (proc.stdout, proc.stderr):
            with suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        code = proc.returncode
        if error is None and code is not None and code < 0:
            error = f"killed by signal {-code}"
            code = 128 - code
        conn.send_json({"type": "exit", "exit_code": code, "error": error})

    def _waiter_for(self, pid: int) -> _Waiter:
        """Where the reaper leaves ``pid``'s exit status (call with ``spawn_lock`` held)."""
        waiter = self.waiters[pid] = _Waiter()
        early = self.unclaimed.pop(pid, None)
        if early is not None:
            waiter.deliver(early[0])
        return waiter

    def spawn(self, conn: Connection, request: dict[str, Any]) -> None:
        """Start a command in the background and answer at once with its pid. Its output
        goes to ``log`` (a path); it runs in a session of its own until it ends."""
        argv, env, cwd = self._command(request)
        log = self.resolve(request.get("log") or "/dev/null")
        import subprocess

        try:
            os.makedirs(os.path.dirname(log), exist_ok=True)
            output = open(log, "ab")  # noqa: SIM115 (closed below, once the child has it)
        except OSError as exc:
            conn.send_error("io", f"cannot open {request.get('log')}: {exc.strerror or exc}")
            return
        try:
            with output, self.spawn_lock:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=output,
                    cwd=cwd,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
        except FileNotFoundError as exc:
            missing = "working directory" if exc.filename == cwd else "command"
            conn.send_error("not_found", f"{missing} not found: {exc.filename}")
            return
        except OSError as exc:
            conn.send_error("io", f"cannot start {argv[0]}: {exc.strerror or exc}")
            return
        # The reaper collects it; Popen must never wait() for it (or list it to be waited).
        proc.returncode = 0
        conn.send_json({"ok": True, "pid": proc.pid})

    # -- processes: long-lived, on a terminal or not, output kept and numbered --------------

    def proc_start(self, conn: Connection, request: dict[str, Any]) -> None:
        argv, env, cwd = self._command(request)
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
            with self.spawn_lock:
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
                waiter = self._waiter_for(proc.pid)
                self.session_count += 1
                session = _Session(f"p{self.session_count}", proc, argv, master, use_pty)
                self._keep(session)
            self.child_exited.set()
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
        threading.Thread(target=self._settle, args=(session, waiter, readers), daemon=True).start()
        conn.send_json({"ok": True, "id": session.id, "pid": proc.pid})

    def _keep(self, session: _Session) -> None:
        """Remember ``session``; beyond 64, the oldest finished ones are forgotten."""
        self.sessions[session.id] = session
        finished = [s for s in self.sessions.values() if not s.running]
        for old in finished[: max(0, len(self.sessions) - 64)]:
            del self.sessions[old.id]

    def _settle(self, session: _Session, waiter: _Waiter, readers: list[threading.Thread]) -> None:
        waiter.done.wait()
        with self.spawn_lock:
            self.waiters.pop(session.proc.pid, None)
        deadline = time.monotonic() + DRAIN_AFTER_EXIT_S
        for reader in readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        session.finish(os.waitstatus_to_exitcode(waiter.status))

    def _session(self, request: dict[str, Any]) -> _Session:
        session = self.sessions.get(request.get("id"))  # type: ignore[arg-type]
        if session is None:
            raise _NoSuchProcess(f"no process {request.get('id')!r}")
        return session

    def proc_read(self, conn: Connection, request: dict[str, Any]) -> None:
        session = self._session(request)
        after, wait = request.get("after") or 0, request.get("wait") or 0
        if not isinstance(after, int) or not isinstance(wait, (int, float)):
            raise ValueError("after must be an integer and wait a number")
        conn.send_json({"ok": True, **session.read(after, min(float(wait), 30.0))})

    def proc_write(self, conn: Connection, request: dict[str, Any]) -> None:
        import binascii

        session = self._session(request)
        data = request.get("data") or ""
        if not isinstance(data, str):
            raise ValueError("data must be base64 text")
        session.write(binascii.a2b_base64(data), eof=bool(request.get("eof")))
        conn.send_json({"ok": True})

    def proc_resize(self, conn: Connection, request: dict[str, Any]) -> None:
        session = self._session(request)
        if session.pty:
            _set_window(session.master, *_window(request))
        conn.send_json({"ok": True})

    def proc_signal(self, conn: Connection, request: dict[str, Any]) -> None:
        session = self._session(request)
        number = request.get("signal")
        if not isinstance(number, int) or not 1 <= number <= 64:
            raise ValueError("signal must be a signal number")
        if session.running:
            with suppress(OSError):
                os.killpg(session.proc.pid, number)
        conn.send_json({"ok": True})

    def proc_wait(self, conn: Connection, request: dict[str, Any]) -> None:
        session = self._session(request)
        timeout = request.get("timeout") or 0
        if not isinstance(timeout, (int, float)):
            raise ValueError("timeout must be a number")
        session.wait(min(float(timeout), 300.0))
        conn.send_json({"ok": True, **session.state()})

    def proc_list(self, conn: Connection, request: dict[str, Any]) -> None:
        conn.send_json(
            {
                "ok": True,
                "processes": [
                    {"id": s.id, "pid": s.proc.pid, "argv": s.argv, "pty": s.pty, **s.state()}
                    for s in self.sessions.values()
                ],
            }
        )

    @staticmethod
    def _refuse(conn: Connection, error: str) -> None:
        """End an exec that never ran: an exit with no code, and why."""
        conn.send_json({"type": "exit", "exit_code": None, "error": error})

    def _wait(self, proc: subprocess.Popen[bytes], waiter: _Waiter, timeout: float | None) -> bool:
        """Wait for the reaper to report ``proc``'s exit; True once it has."""
        if not waiter.done.wait(timeout):
            return False
        with self.spawn_lock:
            self.waiters.pop(proc.pid, None)
        # Popen must not wait() itself: the status is already taken.
        proc.returncode = os.waitstatus_to_exitcode(waiter.status)
        return True

    @staticmethod
    def _kill_group(proc: subprocess.Popen[bytes]) -> None:
        with suppress(OSError):
            os.killpg(proc.pid, _signal.SIGKILL)

    @staticmethod
    def _pump(stream: Any, conn: Connection, kind: bytes, gone: threading.Event) -> None:
        try:
            while True:
                chunk = stream.read1(CHUNK)
                if not chunk:
                    return
                conn.send(kind, chunk)
        except (OSError, ValueError):
            gone.set()

    @staticmethod
    def _feed(
        conn: Connection, proc: subprocess.Popen[bytes], wants_stdin: bool, gone: threading.Event
    ) -> None:
        """Copy stdin frames to the process; then watch for the host hanging up."""
        stdin = proc.stdin
        try:
            while True:
                frame = conn.recv()
                if frame is None:
                    gone.set()
                    return
                kind, payload = frame
                if stdin is None:
                    continue
                if kind == DATA:
                    try:
                        stdin.write(payload)
                        stdin.flush()
                    except (BrokenPipeError, OSError):
                        stdin = None
                elif kind == END:
                    with suppress(OSError):
                        stdin.close()
                    stdin = None
        except (OSError, ProtocolError, ValueError):
            gone.set()
        finally:
            if stdin is not None and wants_stdin:
                with suppress(OSError):
                    stdin.close()

    # -- files ---------------------------------------------------------------------------

    def put(self, conn: Connection, request: dict[str, Any]) -> None:
        path = self.resolve(request.get("path"))
        mode = request.get("mode", 0o644)
        if not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise ValueError("mode must be a permission number")
        if os.path.isdir(path):
            conn.send_error("is_directory", f"{request['path']} is a directory")
            return
        directory = os.path.dirname(path)
        try:
            os.makedirs(directory, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            conn.send_error("invalid", f"a parent of {request['path']} is not a directory")
            return
        except OSError as exc:
            conn.send_error("io", f"cannot create {directory}: {exc.strerror}")
            return
        temp = os.path.join(
            directory, f".{os.path.basename(path)}.hutch-{os.getpid()}-{threading.get_ident()}"
        )
        size = 0
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        except OSError as exc:
            conn.send_error("io", f"cannot write {request['path']}: {exc.strerror}")
            return
        complete = False
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                while True:
                    frame = conn.recv()
                    if frame is None:
                        return  # the upload was cut off: keep the old file
                    kind, payload = frame
                    if kind == END:
                        break
                    if kind != DATA:
                        raise ProtocolError("expected data frames")
                    view = memoryview(payload)
                    while view:
                        written = out.write(view)
                        view = view[written:]
                    size += len(payload)
            os.chmod(temp, mode)
            os.replace(temp, path)
            complete = True
        except OSError as exc:
            conn.send_error("io", f"cannot write {request['path']}: {exc.strerror}")
            return
        finally:
            if not complete:
                with suppress(OSError):
                    os.unlink(temp)
        conn.send_json({"ok": True, "size": size})

    def get(self, conn: Connection, request: dict[str, Any]) -> None:
        path = self.resolve(request.get("path"))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            conn.send_error("not_found", f"{request['path']} does not exist")
            return
        except IsADirectoryError:
            conn.send_error("is_directory", f"{request['path']} is a directory")
            return
        except OSError as exc:
            conn.send_error("io", f"cannot read {request['path']}: {exc.strerror}")
            return
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            kind = "is_directory" if stat.S_ISDIR(info.st_mode) else "invalid"
            conn.send_error(kind, f"{request['path']} is not a regular file")
            return
        with os.fdopen(fd, "rb", buffering=0) as source:
            conn.send_json({"ok": True, "size": info.st_size})
            while True:
                chunk = source.read(CHUNK * 4)
                if not chunk:
                    break
                conn.send(DATA, chunk)
        conn.send(END)

    # -- init duties ---------------------------------------------------------------------

    def reap(self) -> None:
        """Collect every child that exits: an exec's own process (its status goes to the
        exec's waiter) or, as PID 1, any orphan of the sandbox."""
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:  # no children at all: wait for the next exec
                self.child_exited.wait(1.0)
                self.child_exited.clear()
                continue
            except InterruptedError:
                continue
            now = time.monotonic()
            with self.spawn_lock:
                waiter = self.waiters.get(pid)
                if waiter is not None:
                    waiter.deliver(status)
                    continue
                self.unclaimed[pid] = (status, now)
                if len(self.unclaimed) > 256:
                    self.unclaimed = {
                        p: entry for p, entry in self.unclaimed.items() if now - entry[1] < 10
                    }


def _import_exec_modules() -> None:
    import json
    import subprocess

    del json, subprocess


def _options(argv: list[str]) -> dict[str, str]:
    # Not argparse: importing it costs a sandbox ~10 ms of start time.
    usage = "usage: agent.py (--listen-fd N | --socket PATH) [--root DIR]"
    known = {"--listen-fd", "--socket", "--root"}
    if len(argv) % 2 or any(flag not in known for flag in argv[::2]):
        raise SystemExit(usage)
    options = dict(zip(argv[::2], argv[1::2], strict=True))
    if ("--listen-fd" in options) == ("--socket" in options):
        raise SystemExit(usage)
    return options


def main(argv: list[str] | None = None) -> None:
    options = _options(sys.argv[1:] if argv is None else argv)
    if "--listen-fd" in options:
        listener = _socket.socket(fileno=int(options["--listen-fd"]))
    else:
        listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        with suppress(FileNotFoundError):
            os.unlink(options["--socket"])
        listener.bind(options["--socket"])
        listener.listen(64)

    agent = Agent(options.get("--root"))
    # No SIGCHLD handler: the reaper blocks in waitpid() itself. (A handler that touches a
    # lock deadlocks PID 1 when a burst of children die at once.)
    if os.getpid() == 1:
        # PID 1 ignores signals it has no handler for; make a stop request mean stop.
        _signal.signal(_signal.SIGTERM, lambda *_: sys.exit(0))
        _signal.signal(_signal.SIGINT, lambda *_: sys.exit(0))
    threading.Thread(target=agent.reap, daemon=True).start()
    with suppress(KeyboardInterrupt):
        agent.serve(listener)


if __name__ == "__main__":
    main()
