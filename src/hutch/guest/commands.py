"""The guest agent's ``exec`` (a command whose output streams back on the connection) and
``spawn`` (a command in the background, its output to a file).

Loaded on the first exec (or in the background after the first ping), never before.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # (no stub; it is signal without enum)
import os
import threading
import time

from .wire import CHUNK, DATA, END, STDERR, STDOUT, Connection, ProtocolError, suppress

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import Any

    from .agent import Agent, Waiter

# After the main process exits, how long to keep reading output that its children may
# still hold open (`sleep 100 &` keeps the pipe open; the command is still done).
DRAIN_AFTER_EXIT_S = 0.5
# Children of the agent are killed first when a sandbox runs out of memory.
CHILD_OOM_SCORE_ADJ = "500"


def command(agent: Agent, request: dict[str, Any]) -> tuple[list[str], dict[str, str], str]:
    """An exec or spawn request's argv, environment and working directory, checked.
    The environment is the sandbox's own (its envs), then the request's."""
    argv = request.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("argv must be a non-empty list of strings")
    env = request.get("env") or {}
    if not isinstance(env, dict):
        raise ValueError("env must be an object")
    cwd = agent.resolve(request.get("cwd") or agent.workdir)
    return argv, {**os.environ, **{str(k): str(v) for k, v in env.items()}}, cwd


def identity(agent: Agent, request: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Popen's ``user``, ``group`` and ``extra_groups`` for the request's ``user`` (or the
    image's USER; root when neither), as ``name|uid[:group|gid]`` looked up in the
    sandbox's own /etc/passwd. HOME, USER and LOGNAME follow, unless the request sets them."""
    spec = request.get("user")
    if spec is None:
        spec = agent.user
    if not isinstance(spec, str):
        raise ValueError("user must be a string")
    name, _, group = spec.partition(":")
    if name in ("", "root", "0") and group in ("", "root", "0"):
        return {}
    import grp
    import pwd

    try:
        entry: Any = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError):
        if not name.isdigit():
            raise ValueError(f"unknown user {name!r} in this sandbox") from None
        entry = None
    uid = int(name) if entry is None else entry.pw_uid
    gid = entry.pw_gid if entry is not None else 0
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"unknown group {group!r} in this sandbox") from None
    groups = os.getgrouplist(entry.pw_name, gid) if entry is not None else [gid]
    given = request.get("env") or {}
    if entry is not None:
        for key, value in (("HOME", entry.pw_dir), ("USER", entry.pw_name),
                           ("LOGNAME", entry.pw_name)):  # fmt: skip
            if key not in given:
                env[key] = value
    return {"user": uid, "group": gid, "extra_groups": groups}


def start(agent: Agent, argv: list[str], log: str) -> None:
    """Start the image's start command (CMD/ENTRYPOINT) in the background, as the image's
    user in its working directory (made if missing, as a container runtime does); its
    output and any failure to start go to ``log``."""
    import subprocess

    env = dict(os.environ)
    try:
        os.makedirs(agent.resolve(agent.workdir), exist_ok=True)
        os.makedirs(os.path.dirname(agent.resolve(log)), exist_ok=True)
        output = open(agent.resolve(log), "ab")  # noqa: SIM115 (closed below)
    except OSError:
        return
    with output:
        try:
            ids = identity(agent, {}, env)
            with agent.spawn_lock:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output,
                                        stderr=output, cwd=agent.resolve(agent.workdir),
                                        env=env, start_new_session=True, close_fds=True,
                                        **ids)  # fmt: skip
        except (OSError, ValueError) as exc:
            output.write(f"hutch: cannot start {argv[0]}: {exc}\n".encode())
            return
    agent.child_exited.set()
    proc.returncode = 0  # the reaper collects it
    # Its pid beside the log: a deploy watches whether it still runs.
    pid_path = agent.resolve(os.path.splitext(log)[0] + ".pid")
    with suppress(OSError), open(pid_path, "w") as pid_file:
        pid_file.write(f"{proc.pid}\n")


def run(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    """The ``exec`` op: run a command, stream its output, then report how it ended."""
    argv, env, cwd = command(agent, request)
    ids = identity(agent, request, env)
    timeout = request.get("timeout")
    wants_stdin = bool(request.get("stdin"))
    import subprocess

    # Without stdin, this thread alone serves the command (a poll of its two pipes, the
    # host's socket and ``wake``, where the reaper reports the exit): no thread is started
    # per exec. With stdin, a feeder and two pumps (below).
    wake, woken = (-1, -1) if wants_stdin else os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        try:
            with agent.spawn_lock:
                proc = None if wants_stdin or ids else _spawned(argv, env, cwd)
                if proc is None:
                    proc = subprocess.Popen(
                        argv,
                        stdin=subprocess.PIPE if wants_stdin else subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        cwd=cwd,
                        env=env,
                        start_new_session=True,
                        close_fds=True,
                        **ids,
                    )
                waiter = agent.waiter_for(proc.pid, woken)
            agent.child_exited.set()  # wake the reaper: it has a child to wait for
        except FileNotFoundError as exc:
            if exc.filename == cwd:
                _refuse(conn, f"working directory not found: {request.get('cwd') or '/'}")
            else:
                _refuse(conn, f"command not found: {argv[0]}")
            return
        except OSError as exc:
            _refuse(conn, f"cannot start {argv[0]}: {exc.strerror or exc}")
            return
        try:
            with open(f"/proc/{proc.pid}/oom_score_adj", "w") as handle:
                handle.write(CHILD_OOM_SCORE_ADJ)
        except OSError:
            pass
        if wants_stdin:
            _threaded(agent, conn, proc, waiter, timeout)
        else:
            _polled(agent, conn, proc, waiter, timeout, wake)
    finally:
        for fd in (wake, woken):
            if fd >= 0:
                os.close(fd)


class _Spawned:
    """What an exec uses of a ``Popen``: its pid, output pipes and exit code."""

    __slots__ = ("pid", "returncode", "stderr", "stdin", "stdout")

    def __init__(self, pid: int, stdout: Any, stderr: Any) -> None:
        self.pid = pid
        self.stdin = None
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None


# Reset in the child as Popen's restore_signals does (Python ignores SIGPIPE and SIGXFSZ,
# and an ignored signal stays ignored across exec).
_RESTORED = tuple(
    getattr(_signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(_signal, name)
)


def _spawned(argv: list[str], env: dict[str, str], cwd: str) -> Any:
    """Start an exec without stdin, as the user the agent runs as, by ``posix_spawn``
    (the C library's vfork and exec, without Popen's Python around it): None where that
    would not do exactly what Popen does (no ``posix_spawn``; another working directory:
    it has no chdir here; a command not found on the request's PATH: Popen says why).
    Every descriptor of the agent is close-on-exec (see :func:`main`), as Popen's
    ``close_fds`` would close them."""
    spawn = getattr(os, "posix_spawn", None)
    if spawn is None or os.path.normpath(cwd) != os.getcwd():  # (--root: "<root>/")
        return None
    path = _which(argv[0], env)
    if path is None:
        return None
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = spawn(
            path,
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2),
            ],
            setsid=True,
            setsigdef=_RESTORED,
        )
    except BaseException as exc:  # (a ValueError too: an argument with a NUL byte)
        for fd in (out_r, err_r):
            os.close(fd)
        if isinstance(exc, OSError):
            return None  # (Popen tries again, and says why it cannot)
        raise
    finally:
        for fd in (out_w, err_w):
            os.close(fd)
    return _Spawned(pid, open(out_r, "rb"), open(err_r, "rb"))  # (the exec closes them)


def _which(name: str, env: dict[str, str]) -> str | None:
    """Where ``name`` is found as Popen finds it (on the request's PATH), or None."""
    if "/" in name:
        return name if os.access(name, os.X_OK) and os.path.isfile(name) else None
    for directory in os.get_exec_path(env):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK) and os.path.isfile(path):
            return path
    return None


def _polled(
    agent: Agent,
    conn: Connection,
    proc: subprocess.Popen[bytes],
    waiter: Waiter,
    timeout: Any,
    wake: int,
) -> None:
    """Run an exec without stdin to its end in this thread (see :func:`run`)."""
    import select

    assert proc.stdout is not None and proc.stderr is not None
    streams = {
        proc.stdout.fileno(): (proc.stdout, STDOUT),
        proc.stderr.fileno(): (proc.stderr, STDERR),
    }
    host = conn.sock.fileno()
    poller = select.poll()
    for fd in (*streams, host, wake):
        poller.register(fd, select.POLLIN)
    error = None
    exited = False
    deadline = None if timeout in (None, 0) else time.monotonic() + float(timeout)
    until = deadline
    # Until the command has exited and its pipes are read (or their drain time is up): a
    # command that closed its output early is still timed out, and killed on a hang-up.
    while streams or not exited:
        now = time.monotonic()
        if until is not None and now >= until:
            if exited:
                break  # output a background child still holds: see below
            _kill_group(proc)
            _wait(agent, proc, waiter, None)
            error = f"timeout: killed after {timeout} s"
            exited, until = True, time.monotonic() + DRAIN_AFTER_EXIT_S
            poller.unregister(wake)
            continue
        ready = poller.poll(None if until is None else max(0, (until - now) * 1000))
        for fd, _ in ready:
            if fd == wake:
                _wait(agent, proc, waiter, None)  # (delivered: this takes its status)
                exited, until = True, time.monotonic() + DRAIN_AFTER_EXIT_S
                poller.unregister(wake)
            elif fd == host:
                try:
                    hung_up = not conn.sock.recv(CHUNK)  # (nothing is sent without stdin)
                except OSError:
                    hung_up = True
                if hung_up:
                    _kill_group(proc)
                    _wait(agent, proc, waiter, None)
                    return
            elif fd in streams:
                stream, kind = streams[fd]
                try:
                    chunk = os.read(fd, CHUNK)
                except OSError:
                    chunk = b""
                if not chunk:
                    poller.unregister(fd)
                    del streams[fd]
                    stream.close()
                    continue
                try:
                    conn.send(kind, chunk)
                except OSError:  # the host went away
                    _kill_group(proc)
                    _wait(agent, proc, waiter, None)
                    return
    if not exited:
        _wait(agent, proc, waiter, None)
    for stream, _ in streams.values():
        # A pipe a background child still holds (`sleep 100 &`): as with the threaded
        # path, one more read of it is left running, then it is closed.
        threading.Thread(target=_linger, args=(stream,), daemon=True).start()
    _exit(conn, proc, error)


def _linger(stream: Any) -> None:
    with suppress(OSError, ValueError):
        stream.read1(CHUNK)
    with suppress(OSError):
        stream.close()


def _exit(conn: Connection, proc: subprocess.Popen[bytes], error: str | None) -> None:
    code = proc.returncode
    if error is None and code is not None and code < 0:
        error = f"killed by signal {-code}"
        code = 128 - code
    conn.send_json({"type": "exit", "exit_code": code, "error": error})


def _threaded(
    agent: Agent, conn: Connection, proc: subprocess.Popen[bytes], waiter: Waiter, timeout: Any
) -> None:
    """Run an exec with stdin to its end: a feeder and two pumps beside this thread."""
    wants_stdin = True
    gone = threading.Event()
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, conn, STDOUT, gone), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, conn, STDERR, gone), daemon=True),
    ]
    feeder = threading.Thread(target=_feed, args=(conn, proc, wants_stdin, gone), daemon=True)
    try:
        for thread in (*pumps, feeder):
            thread.start()
    except RuntimeError:
        _kill_group(proc)
        _wait(agent, proc, waiter, None)
        _refuse(conn, "the sandbox has no free process slots")
        return

    error = None
    deadline = None if timeout in (None, 0) else time.monotonic() + float(timeout)
    while not _wait(agent, proc, waiter, 0.2):
        if gone.is_set():
            _kill_group(proc)
            _wait(agent, proc, waiter, None)
            return
        if deadline is not None and time.monotonic() >= deadline:
            _kill_group(proc)
            _wait(agent, proc, waiter, None)
            error = f"timeout: killed after {timeout} s"
            break
    drain_until = time.monotonic() + DRAIN_AFTER_EXIT_S
    for pump in pumps:
        pump.join(max(0.0, drain_until - time.monotonic()))
    for pump, stream in zip(pumps, (proc.stdout, proc.stderr), strict=True):
        # A pipe a background child still holds is left to its pump: closing it would wait
        # for the pump's read, that is for the child to end (`sleep 100 &`: 100 s).
        if not pump.is_alive():
            with suppress(OSError):
                stream.close()  # type: ignore[union-attr]
    _exit(conn, proc, error)


def spawn(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    """Start a command in the background and answer at once with its pid. Its output
    goes to ``log`` (a path); it runs in a session of its own until it ends."""
    argv, env, cwd = command(agent, request)
    ids = identity(agent, request, env)
    log = agent.resolve(request.get("log") or "/dev/null")
    import subprocess

    try:
        os.makedirs(os.path.dirname(log), exist_ok=True)
        output = open(log, "ab")  # noqa: SIM115 (closed below, once the child has it)
    except OSError as exc:
        conn.send_error("io", f"cannot open {request.get('log')}: {exc.strerror or exc}")
        return
    try:
        with output, agent.spawn_lock:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                cwd=cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
                **ids,
            )
    except FileNotFoundError as exc:
        missing = "working directory" if exc.filename == cwd else "command"
        conn.send_error("not_found", f"{missing} not found: {exc.filename}")
        return
    except OSError as exc:
        conn.send_error("io", f"cannot start {argv[0]}: {exc.strerror or exc}")
        return
    agent.child_exited.set()  # wake the reaper: it has a child to collect
    # The reaper collects it; Popen must never wait() for it (or list it to be waited).
    proc.returncode = 0
    conn.send_json({"ok": True, "pid": proc.pid})


def _refuse(conn: Connection, error: str) -> None:
    """End an exec that never ran: an exit with no code, and why."""
    conn.send_json({"type": "exit", "exit_code": None, "error": error})


def _wait(
    agent: Agent, proc: subprocess.Popen[bytes], waiter: Waiter, timeout: float | None
) -> bool:
    """Wait for the reaper to report ``proc``'s exit; True once it has."""
    if not waiter.done.wait(timeout):
        return False
    with agent.spawn_lock:
        agent.waiters.pop(proc.pid, None)
    # Popen must not wait() itself: the status is already taken.
    proc.returncode = os.waitstatus_to_exitcode(waiter.status)
    return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with suppress(OSError):
        os.killpg(proc.pid, _signal.SIGKILL)


def _pump(stream: Any, conn: Connection, kind: bytes, gone: threading.Event) -> None:
    try:
        while True:
            chunk = stream.read1(CHUNK)
            if not chunk:
                return
            conn.send(kind, chunk)
    except (OSError, ValueError):
        gone.set()


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
