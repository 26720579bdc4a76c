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
    proc_*  managed processes: started, read from any point, written to, resized,
           signalled, waited for and killed; see ``processes`` for each op.
    self_watch  {} → J {"ok", "action": "pause"|"delete", "reason"} once the sandbox asks
           (a long poll; see ``selfsignal``: 127.0.0.1:1029 and /run/self inside).
    hibernate  {"wake": name} → J {"ok": true, "connections": [...], "deleted": [...]}:
           with no open TCP connection in the sandbox and no deleted file of its disk held
           open, the agent then closes every connection and its socket (removing the
           socket file last) so that the sandbox can be checkpointed, and binds the socket
           again once a file ``name`` appears beside it (after the restore). With either,
           it lists them and carries on serving.
    Errors: J {"error": {"code": "not_found"|"is_directory"|"invalid"|"conflict"|"io",
           "message"}}

The agent is the package :mod:`hutch.guest` (``guest`` inside a sandbox, where it is started
with ``/.hutch`` on its path; see :func:`hutch.guest.bootstrap`): this module serves and
reaps; ``wire`` frames; ``commands`` runs exec and spawn; ``files`` puts and gets;
``processes`` keeps the long-lived processes; ``hibernating`` finds what a checkpoint
cannot save; ``selfsignal`` hears a sandbox ask to be
paused or deleted. Only this module and ``wire`` load before the
first ping; the others load in the background after it.

With ``--root DIR`` (the fake driver's mode, never inside a sandbox) paths are taken
relative to DIR.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # (no stub; it is signal without enum)
import _socket
import errno
import os
import select
import sys
import threading
import time

# Every sandbox waits for this module to load before it counts as started, so it imports
# only what answering a ping needs: the C halves of socket and signal (their Python halves
# pull in enum, collections and selectors, ~10 ms), no contextlib, no typing. What exec and
# the JSON paths need loads in the background after the first ping (``_preload``).
from .wire import (
    JSON,
    PING_REQUEST,
    VERSION,
    Connection,
    NotFound,
    ProtocolError,
    suppress,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .processes import Process

__all__ = ["VERSION", "Agent", "Waiter", "main"]

IDLE_REAP_CHECK_S = 30.0
# Threads kept waiting for the next connection beyond the one that always waits.
SPARE_ACCEPTORS = 2
# Where a template's start command (CMD/ENTRYPOINT) writes its output, and its process id
# once started (for whoever waits on it: a deploy's health check).
START_LOG = "/var/log/hutch-start.log"
_AGENT_SETTINGS = ("HUTCH_GUEST_WORKDIR", "HUTCH_GUEST_USER", "HUTCH_GUEST_START")
START_PID = "/var/log/hutch-start.pid"


class Waiter:
    """Where the reaper leaves one child's exit status (and, given ``wake``, a byte on that
    descriptor, so that a poll loop hears of it with its pipes)."""

    __slots__ = ("done", "status", "wake")

    def __init__(self, wake: int = -1) -> None:
        self.done = threading.Event()
        self.status = 0
        self.wake = wake

    def deliver(self, status: int) -> None:
        self.status = status
        self.done.set()
        if self.wake >= 0:
            with suppress(OSError):
                os.write(self.wake, b"x")


class Agent:
    def __init__(self, root: str | None) -> None:
        self.root = root
        # The reaper is the only caller of wait(); it hands each exit status to the exec
        # waiting for that pid. A status that arrives before its exec registered waits in
        # ``unclaimed`` (orphans' statuses too, until they are old enough to drop).
        self.spawn_lock = threading.Lock()
        self.waiters: dict[int, Waiter] = {}
        self.unclaimed: dict[int, tuple[int, float]] = {}
        self.child_exited = threading.Event()
        # Notified at every child reaped: a wait for a process's whole tree listens.
        self.reaped = threading.Condition()
        self.preloaded = False
        self.sessions: dict[str, Process] = {}
        self.session_count = 0
        # The image's WORKDIR and USER (a template's): every command's defaults.
        self.workdir = "/"
        self.user = ""
        # Open connections, so that a hibernate can close them all (only with --socket).
        self.connections: set[_socket.socket] = set()
        self.connections_lock = threading.Lock()
        # Threads waiting in accept() (see _accepting).
        self.idle_lock = threading.Lock()
        self.idle = 0
        # Threads waiting for a connection to serve (with --socket; see _hand_off).
        self.workers: list[list[Any]] = []
        self.socket_path: str | None = None
        self.hibernating: str | None = None
        self.wakeup = os.pipe()
        # Requests served beyond pings, and whether a configure came: a warm sandbox (one
        # prepared before anyone asked) is handed out only if nothing else ever ran here.
        self.served = 0
        self.configured = False

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
        if self.socket_path is None:
            self._accepting(listener, main=True)
            return
        while True:
            if self.socket_path is not None:
                # A hibernate request wakes this loop through the pipe (see _hibernate).
                ready, _, _ = select.select([listener.fileno(), self.wakeup[0]], [], [])
                if self.wakeup[0] in ready:
                    os.read(self.wakeup[0], 64)
                    if self.hibernating is not None:
                        listener = self._hibernate(listener)
                    continue
            try:
                fd, _ = listener._accept()  # type: ignore[attr-defined]
                sock = _socket.socket(fileno=fd)
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.ECONNABORTED):
                    continue
                raise
            with self.connections_lock:
                self.connections.add(sock)
            self._hand_off(sock)

    def _hand_off(self, sock: _socket.socket) -> None:
        """Serve ``sock`` in a thread that waits for work (:meth:`_work`), or in a new one
        when none waits: making a thread costs ~2 ms under gVisor's ptrace platform,
        waking one a fraction of that."""
        with self.idle_lock:
            slot = self.workers.pop() if self.workers else None
        if slot is not None:
            slot[0] = sock
            slot[1].release()
            return
        try:
            threading.Thread(target=self._work, args=(sock,), daemon=True).start()
        except RuntimeError:  # no thread to be had: the sandbox's pids limit is reached
            self._refuse(sock)

    def _work(self, sock: _socket.socket) -> None:
        """Serve ``sock``, then each connection :meth:`_hand_off` gives this thread; with
        ``SPARE_ACCEPTORS`` others waiting, end (threads count against the sandbox's pids
        limit)."""
        slot: list[Any] = [None, threading.Lock()]
        slot[1].acquire()
        while True:
            self.handle(sock)
            with self.idle_lock:
                if len(self.workers) >= SPARE_ACCEPTORS:
                    return
                self.workers.append(slot)
            slot[1].acquire()  # released with the next connection in slot[0]
            sock, slot[0] = slot[0], None

    def _refuse(self, sock: _socket.socket) -> None:
        with suppress(OSError):
            Connection(sock).send_error("busy", "the sandbox has no free process slots")
            sock.close()
        with self.connections_lock:
            self.connections.discard(sock)

    def _accepting(self, listener: _socket.socket, *, main: bool = False) -> None:
        """Accept a connection and serve it, again and again, in this thread. One thread
        always waits in ``accept`` (a thread that takes a connection when none other waits
        starts one), so a request never waits for a thread to be made; past
        ``SPARE_ACCEPTORS`` waiting, a thread that is done ends (threads count against the
        sandbox's pids limit). The main thread never ends."""
        while True:
            with self.idle_lock:
                self.idle += 1
            try:
                fd, _ = listener._accept()  # type: ignore[attr-defined]
            except OSError as exc:
                with self.idle_lock:
                    self.idle -= 1
                if exc.errno in (errno.EINTR, errno.ECONNABORTED):
                    continue
                raise
            with self.idle_lock:
                self.idle -= 1
                alone = self.idle == 0
            sock = _socket.socket(fileno=fd)
            with self.connections_lock:
                self.connections.add(sock)
            if alone:
                try:
                    threading.Thread(target=self._accepting, args=(listener,), daemon=True).start()
                except RuntimeError:  # no thread to be had: the sandbox's pids limit is reached
                    self._refuse(sock)
                    continue
            self.handle(sock)
            if not main:
                with self.idle_lock:
                    if self.idle >= SPARE_ACCEPTORS:
                        return

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
            if request.get("op") not in ("ping", "configure"):
                self.served += 1
            self.dispatch(conn, request)
        except NotFound as exc:
            with suppress(OSError):
                conn.send_error("not_found", str(exc))
        except (ProtocolError, ValueError, UnicodeDecodeError) as exc:
            with suppress(OSError):
                conn.send_error("invalid", str(exc))
        except OSError:
            pass  # the host went away
        finally:
            conn.close()
            with self.connections_lock:
                self.connections.discard(sock)

    def dispatch(self, conn: Connection, request: dict[str, Any]) -> None:
        """Run ``request`` (a JSON object naming ``op``) on ``conn``."""
        op = request.get("op")
        if op == "ping":
            conn.send_json({"ok": True, "pid": os.getpid(), "version": VERSION})
        elif op in ("exec", "spawn"):
            from . import commands

            (commands.run if op == "exec" else commands.spawn)(self, conn, request)
        elif op in ("put", "get"):
            from . import files

            (files.put if op == "put" else files.get)(self, conn, request)
        elif op == "hibernate":
            self.prepare_hibernate(conn, request)
        elif op == "configure":
            self.configure(conn, request)
        elif op == "self_watch":
            from . import selfsignal

            selfsignal.watch(self, conn, request)
        elif isinstance(op, str) and op.startswith("proc_"):
            from . import processes

            if op not in processes.OPS:
                raise ValueError(f"unknown op {op!r}")
            processes.dispatch(self, conn, op, request)
        else:
            conn.send_error("invalid", f"unknown op {op!r}")

    def configure(self, conn: Connection, request: dict[str, Any]) -> None:
        """Give a warm sandbox its owner's environment (``env``: what every command starts
        with, as the init's own would be had it started for them). Refused, with nothing
        changed, once anything but pings was served here or a configure came before: a
        sandbox that ran something is never handed out."""
        env = request.get("env")
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in v
            for k, v in env.items()
        ):
            raise ValueError("env must be an object of strings")
        if self.configured or self.served or self.sessions:
            conn.send_error("used", "this sandbox has run something already")
            return
        # ``alone``: where the host cannot see the sandbox's processes and memory (gVisor's
        # live in its own kernel), the agent checks them: nothing runs that it started or
        # that was left to it (an orphan's parent becomes the init: this agent), and
        # /dev/shm is empty.
        if request.get("alone") and (busy := _not_alone()):
            conn.send_error("used", f"this sandbox is not as prepared: {busy}")
            return
        self.configured = True
        # The image's start command (desktop:1's desktop), which a warm sandbox was
        # prepared without (hutch.host.warm_pool): it starts now that it has an owner.
        start = env.get("HUTCH_GUEST_START", "")
        for key in _AGENT_SETTINGS:
            env.pop(key, None)
        os.environ.clear()
        os.environ.update(env)
        conn.send_json({"ok": True})
        if start:
            threading.Thread(target=_start_command, args=(self, start), daemon=True).start()

    # -- hibernate -----------------------------------------------------------------------

    def prepare_hibernate(self, conn: Connection, request: dict[str, Any]) -> None:
        wake = request.get("wake")
        if self.socket_path is None or not isinstance(wake, str) or "/" in wake or not wake:
            raise ValueError("hibernate needs the agent's own socket (--socket) and a wake name")
        from .hibernating import open_deleted_files, open_tcp_connections

        busy, deleted = open_tcp_connections(), open_deleted_files()
        if not busy and not deleted:
            self.hibernating = wake
        conn.send_json({"ok": True, "connections": busy, "deleted": deleted})
        if not busy and not deleted:
            os.write(self.wakeup[1], b"h")  # the accept loop closes everything

    def _hibernate(self, listener: _socket.socket) -> _socket.socket:
        """Close the socket and every connection; once a file named by the hibernate
        request appears beside the socket, bind the socket again and return it."""
        assert self.socket_path is not None and self.hibernating is not None
        wake = os.path.join(os.path.dirname(self.socket_path), self.hibernating)
        listener.close()
        with self.connections_lock:
            open_now = list(self.connections)
        for sock in open_now:
            with suppress(OSError):
                sock.shutdown(_socket.SHUT_RDWR)
        deadline = time.monotonic() + 5
        while self.connections and time.monotonic() < deadline:
            time.sleep(0.002)
        # The host waits for this file; it removes the socket itself (gVisor's gofer
        # refuses to unlink a socket bound on the host).
        with open(wake + ".closed", "w"):
            pass
        while not os.path.exists(wake):
            time.sleep(0.005)
        self.hibernating = None
        return listen_unix(self.socket_path)

    def _preload(self) -> None:
        """Import what exec needs in the background, once, while the host gets on."""
        if not self.preloaded:
            self.preloaded = True
            threading.Thread(target=_import_exec_modules, daemon=True).start()

    # -- children ------------------------------------------------------------------------

    def waiter_for(self, pid: int, wake: int = -1) -> Waiter:
        """Where the reaper leaves ``pid``'s exit status (call with ``spawn_lock`` held)."""
        waiter = self.waiters[pid] = Waiter(wake)
        early = self.unclaimed.pop(pid, None)
        if early is not None:
            waiter.deliver(early[0])
        return waiter

    # -- init duties ---------------------------------------------------------------------

    def reap(self) -> None:
        """Collect every child that exits: an exec's own process (its status goes to the
        exec's waiter) or, as PID 1, any orphan of the sandbox."""
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                # No children at all: every start sets the event. (The timeout is a safety
                # net, long enough that an idle sandbox costs its host nothing.)
                self.child_exited.wait(IDLE_REAP_CHECK_S)
                self.child_exited.clear()
                continue
            except InterruptedError:
                continue
            now = time.monotonic()
            with self.spawn_lock:
                waiter = self.waiters.get(pid)
                if waiter is not None:
                    waiter.deliver(status)
                else:
                    self.unclaimed[pid] = (status, now)
                    if len(self.unclaimed) > 256:
                        self.unclaimed = {
                            p: entry for p, entry in self.unclaimed.items() if now - entry[1] < 10
                        }
            with self.reaped:
                self.reaped.notify_all()


def listen_unix(path: str) -> _socket.socket:
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    with suppress(OSError):
        os.unlink(path)
    listener.bind(path)
    listener.listen(64)
    return listener


def _not_alone() -> str:
    """What runs beside this agent that it started or was left (a process whose parent is
    the agent, or the init when the agent is not it), and what is in /dev/shm; empty when
    nothing. Processes the host started with ``runsc exec`` have no parent inside."""
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if parent in (me, 1):
            found.append(name)
    shm = os.listdir("/dev/shm") if os.path.isdir("/dev/shm") else []
    return ", ".join(
        ([f"processes {', '.join(found)}"] if found else [])
        + ([f"{len(shm)} file(s) in /dev/shm"] if shm else [])
    )


def _import_exec_modules() -> None:
    import json
    import subprocess

    from . import commands, files, processes

    del json, subprocess, commands, files, processes


def _start_command(agent: Agent, start: str) -> None:
    """Run the image's start command (its output in ``START_LOG``), after the first ping
    so that it adds nothing to a sandbox's start."""
    import json

    from . import commands

    argv = json.loads(start)
    if isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv):
        commands.start(agent, argv, START_LOG)


def _options(argv: list[str]) -> dict[str, str]:
    # Not argparse: importing it costs a sandbox ~10 ms of start time.
    usage = (
        "usage: agent (--listen-fd N | --socket PATH) [--root DIR]"
        " [--self-http HOST:PORT] [--self-fifo PATH]"
    )
    known = {"--listen-fd", "--socket", "--root", "--self-http", "--self-fifo"}
    if len(argv) % 2 or any(flag not in known for flag in argv[::2]):
        raise SystemExit(usage)
    options = dict(zip(argv[::2], argv[1::2], strict=True))
    if ("--listen-fd" in options) == ("--socket" in options):
        raise SystemExit(usage)
    return options


def _default_dispositions() -> None:
    """Signals the agent's launcher ignored are not ignored here. An ignored signal stays
    ignored across fork and exec, so every command of the sandbox would inherit it: with
    ``hutch serve`` started by ``nohup … &`` (or any background job of a script) ^C in a
    terminal interrupted nothing, since a shell keeps for its jobs what it found ignored."""
    for name in ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTSTP", "SIGTTIN", "SIGTTOU"):
        number = getattr(_signal, name, None)
        if number is not None and _signal.getsignal(number) == _signal.SIG_IGN:
            default = _signal.default_int_handler if name == "SIGINT" else _signal.SIG_DFL
            _signal.signal(number, default)


def main(argv: list[str] | None = None) -> None:
    options = _options(sys.argv[1:] if argv is None else argv)
    _default_dispositions()
    if "--listen-fd" in options:
        listener = _socket.socket(fileno=int(options["--listen-fd"]))
        # Passed on by runc, it is inheritable: no command may inherit it (an exec started
        # by posix_spawn closes only what is close-on-exec; see commands._spawned).
        os.set_inheritable(listener.fileno(), False)
    else:
        listener = listen_unix(options["--socket"])

    agent = Agent(options.get("--root"))
    agent.socket_path = options.get("--socket")
    # A template's settings come in the environment; they are the agent's, not the
    # commands' (hutch.host.layers names them).
    # (hutch.host.layers names them; _AGENT_SETTINGS lists them.)
    agent.workdir = os.environ.pop("HUTCH_GUEST_WORKDIR", "") or "/"
    agent.user = os.environ.pop("HUTCH_GUEST_USER", "")
    start = os.environ.pop("HUTCH_GUEST_START", "")
    # No SIGCHLD handler: the reaper blocks in waitpid() itself. (A handler that touches a
    # lock deadlocks PID 1 when a burst of children die at once.)
    if os.getpid() == 1:
        # PID 1 ignores signals it has no handler for; make a stop request mean stop.
        _signal.signal(_signal.SIGTERM, lambda *_: sys.exit(0))
        _signal.signal(_signal.SIGINT, lambda *_: sys.exit(0))
    threading.Thread(target=agent.reap, daemon=True).start()
    if "--self-http" in options or "--self-fifo" in options:
        from . import selfsignal

        selfsignal.start(options)
    if start:
        threading.Thread(target=_start_command, args=(agent, start), daemon=True).start()
    with suppress(KeyboardInterrupt):
        agent.serve(listener)


if __name__ == "__main__":
    main()
