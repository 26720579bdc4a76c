"""The desktop of a ``desktop:1`` sandbox: a supervisor that keeps its screens running.

Standard library only; started by the guest agent as the image's start command (see the
recipe ``desktop_1.toml``), or by the host when it finds none running
(:mod:`hutch.core.computer`). Screen ``n`` (``screen-n``, 0 to 7) is X display ``:n``:

- ``Xvfb :n`` with its framebuffer in ``/dev/shm/hutch-desktop/n/Xvfb_screen0`` (an XWD
  file the host reads for a screenshot: no X round trip, no screenshot program),
- ``openbox``, the window manager; the screen is ready once it manages the screen (the
  root window's ``_NET_SUPPORTING_WM_CHECK``, what wmctrl and xdotool's window commands
  need, asked over X's own protocol: :func:`wm_running`),
- ``x11vnc`` on 127.0.0.1:(5900+n) (loopback only: no other sandbox reaches it) and
  ``websockify`` on 0.0.0.0:(6080+n), serving noVNC and bridging to x11vnc only for a
  connection whose token is the screen's current one and unexpired (:class:`ConnectTokens`;
  the host writes ``connect.json`` for ``…/screens/{id}/connect``). These two start when
  ``connect.json`` first names the screen (a noVNC link was asked for), not before: a
  desktop no person watches never pays for them, in start time or memory.

Files under ``/run/hutch-desktop``: ``screens.json`` (the host's wish: ``{"screens":
{"n": {"width", "height"}}}``; absent, screen 0 at 1280x800), ``status.json`` (this
supervisor's: ``{"pid", "started_at", "screens": {"n": {"width", "height", "state":
"starting" | "ready", "error", "restarts", "vnc": "off" | "starting" | "ready", "at"}}}``,
rewritten on every change; ``at`` holds the wall-clock times a screen's start began and
its X server, window manager and VNC were up, for profiling) and ``connect.json``. The
supervisor checks the wish and its children every 0.1 s (every 0.01 s while something
starts): a child that died is started again (after 0.2 s, doubling to 5 s while it keeps
dying); when the X server dies, the whole screen starts again. A changed size starts the
screen again at that size (its windows close). Only one supervisor runs (a lock); a new
one first ends whatever a previous one left (children are marked with
``HUTCH_DESKTOP_CHILD``).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ConnectTokens", "main"]

STATE_DIR = "/run/hutch-desktop"
WISH = f"{STATE_DIR}/screens.json"
STATUS = f"{STATE_DIR}/status.json"
CONNECT = f"{STATE_DIR}/connect.json"
LOCK = f"{STATE_DIR}/supervisor.lock"
FRAMEBUFFERS = "/dev/shm/hutch-desktop"
DEFAULT_WISH = {"0": {"width": 1280, "height": 800}}
VNC_BASE = 5900
NOVNC_BASE = 6080
NOVNC_WEB = "/usr/share/novnc"
MARK = "HUTCH_DESKTOP_CHILD"
TICK_S = 0.1
BUSY_TICK_S = 0.01
READY_TIMEOUT_S = 20.0
MAX_BACKOFF_S = 5.0
# x11vnc asks every file descriptor up to its limit of open files whether it is open
# (fcntl F_GETFD, one system call each) several times as it starts and again for each new
# viewer: with a sandbox's limit (20,000 and more) that is ~700,000 system calls for a
# start and a first viewer, about a second on runc but 20-70 s of CPU under gVisor's ptrace
# platform, where every system call is a round trip through the sentry (measured with
# strace). It holds a handful of descriptors (the X connection, its listening socket, one
# per viewer), so it runs with this soft limit.
VNC_NOFILE = 256


def framebuffer(n: int) -> str:
    return f"{FRAMEBUFFERS}/{n}/Xvfb_screen0"


class Child:
    """One supervised process of a screen; started again after a backoff when it dies."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log: str, *, nofile: int = 0
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.nofile = nofile  # a lower soft RLIMIT_NOFILE for it (0: the sandbox's)
        self.proc: subprocess.Popen[bytes] | None = None
        self.next_start = 0.0
        self.backoff = 0.2
        self.started_at = 0.0
        self.restarts = 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, now: float) -> None:
        if now < self.next_start:
            return
        if self.proc is not None:
            self.restarts += 1
            # Quick deaths back off; one that ran a while starts again at once.
            self.backoff = 0.2 if now - self.started_at > 30 else min(self.backoff * 2, 5.0)
        self.next_start = now + self.backoff
        self.started_at = now
        with open(self.log, "ab") as out:
            try:
                limit = self._limit if self.nofile else None
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=out, env=self.env, close_fds=True,
                                             start_new_session=True,
                                             preexec_fn=limit)  # fmt: skip
            except OSError as exc:
                out.write(f"hutch-desktop: cannot start {self.argv[0]}: {exc}\n".encode())
                self.proc = None

    def _limit(self) -> None:
        """In the child, before exec: its soft limit of open files (see :data:`VNC_NOFILE`)."""
        import resource

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        soft = self.nofile if hard == resource.RLIM_INFINITY else min(self.nofile, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                with _quiet():
                    os.killpg(self.proc.pid, signal.SIGKILL)
                with _quiet():
                    self.proc.wait(2)
        self.proc = None


class Screen:
    def __init__(self, n: int, width: int, height: int) -> None:
        self.n = n
        self.width = width
        self.height = height
        self.state = "starting"
        self.error = ""
        self.since = time.monotonic()
        self.vnc_wanted = False
        self.vnc = "off"
        self.vnc_since = self.since
        self.at: dict[str, float] = {"start": time.time()}
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": os.environ.get("HOME") or "/root",
            "DISPLAY": f":{n}",
            "LANG": "C.UTF-8",
            MARK: str(n),
        }
        log = f"{STATE_DIR}/screen-{n}.log"
        os.makedirs(f"{FRAMEBUFFERS}/{n}", exist_ok=True)
        self.x = Child("Xvfb", [
            "Xvfb", f":{n}", "-screen", "0", f"{width}x{height}x24",
            "-fbdir", f"{FRAMEBUFFERS}/{n}", "-nolisten", "tcp", "-noreset", "-dpi", "96",
        ], env, log)  # fmt: skip
        self.wm = Child("openbox", ["openbox", "--sm-disable"], env, log)
        vnc = [
            "x11vnc", "-display", f":{n}", "-localhost", "-rfbport", str(VNC_BASE + n),
            "-forever", "-shared", "-nopw", "-quiet", "-noxrecord", "-nobell",
        ]  # fmt: skip
        novnc = [
            "websockify", "--web", NOVNC_WEB, "--token-plugin", "guest.desktop.ConnectTokens",
            "--token-source", str(n), f"0.0.0.0:{NOVNC_BASE + n}",
        ]  # fmt: skip
        self.viewers = [
            Child("x11vnc", vnc, env, log, nofile=VNC_NOFILE),
            Child("websockify", novnc, {**env, "PYTHONPATH": "/.hutch"}, log),
        ]

    @property
    def others(self) -> list[Child]:
        return [self.wm, *self.viewers]

    @property
    def children(self) -> list[Child]:
        return [self.x, *self.others]

    @property
    def busy(self) -> bool:
        """Whether something of it is starting (the supervisor then looks more often), for
        at most :data:`READY_TIMEOUT_S` (one that never starts is looked at as the rest)."""
        now = time.monotonic()
        return (self.state == "starting" and now - self.since < READY_TIMEOUT_S) or (
            self.vnc == "starting" and now - self.vnc_since < READY_TIMEOUT_S
        )

    def step(self, now: float) -> bool:
        """Start what is not running; True if the state changed."""
        before = (self.state, self.error, self.vnc)
        if not self.x.alive():
            if self.state != "starting" or self.x.proc is not None:
                for child in self.others:
                    child.stop()
                self._clean_display()
                self.state, self.since = "starting", now
                self.at = {"start": time.time()}
                self.vnc, self.vnc_since = ("starting" if self.vnc_wanted else "off"), now
            self.x.start(now)
        elif self.state == "starting" and ("x" in self.at or self._x_up()):
            self._keep_wm(now)
            if self.wm.alive() and wm_running(self.n):
                self.state, self.error = "ready", ""
                self.at["wm"] = time.time()
        elif self.state != "starting":
            self._keep_wm(now)
        if "x" in self.at and self.vnc_wanted:
            self._keep_viewers(now)
        if self.state == "starting" and now - self.since > READY_TIMEOUT_S:
            self.error = f"screen-{self.n} did not start in {READY_TIMEOUT_S:g} s"
        return (self.state, self.error, self.vnc) != before

    def _x_up(self) -> bool:
        if _accepts(f"/tmp/.X11-unix/X{self.n}"):
            self.at["x"] = time.time()
            return True
        return False

    def _keep_wm(self, now: float) -> None:
        if not self.wm.alive():
            self.wm.start(now)

    def _keep_viewers(self, now: float) -> None:
        """x11vnc and websockify: started (again) while wanted; ready once both listen."""
        dead = [child for child in self.viewers if not child.alive()]
        for child in dead:
            child.start(now)
        if self.vnc != "starting" and (dead or self.vnc != "ready"):
            self.vnc, self.vnc_since = "starting", now
        listening = not dead and self.vnc == "starting" and _accepts_tcp(VNC_BASE + self.n)
        if listening and _accepts_tcp(NOVNC_BASE + self.n):
            self.vnc = "ready"
            self.at["vnc"] = time.time()

    def _clean_display(self) -> None:
        """A dead X server's lock and socket, so that the next one may take the display."""
        for path in (f"/tmp/.X{self.n}-lock", f"/tmp/.X11-unix/X{self.n}"):
            with _quiet():
                os.unlink(path)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self._clean_display()
        with _quiet():
            os.unlink(framebuffer(self.n))

    def status(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "state": self.state,
            "error": self.error,
            "restarts": sum(child.restarts for child in self.children),
            "vnc": self.vnc,
            "at": self.at,
        }


class _quiet:
    """``contextlib.suppress(OSError)`` without importing contextlib."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, tb: object) -> bool:
        return kind is not None and issubclass(kind, OSError)  # type: ignore[arg-type]


def _accepts(path: str) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def wm_running(n: int) -> bool:
    """Whether a window manager manages display ``:n``: the root window has the EWMH
    property ``_NET_SUPPORTING_WM_CHECK``. Asked over the X protocol itself (no client
    library here, and no program to start: this runs every tick while a screen starts)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect(f"/tmp/.X11-unix/X{n}")
        sock.sendall(struct.pack("<BxHHHHxx", ord("l"), 11, 0, 0, 0))
        head = _read(sock, 8)
        if head[0] != 1:  # refused (0) or more authentication wanted (2)
            return False
        setup = _read(sock, struct.unpack_from("<H", head, 6)[0] * 4)
        vendor, formats = struct.unpack_from("<H", setup, 16)[0], setup[21]
        root = struct.unpack_from("<I", setup, 32 + _pad4(vendor) + 8 * formats)[0]
        name = b"_NET_SUPPORTING_WM_CHECK"
        sock.sendall(struct.pack("<BBHHxx", 16, 1, 2 + _pad4(len(name)) // 4, len(name))
                     + name.ljust(_pad4(len(name)), b"\0"))  # fmt: skip
        atom = struct.unpack_from("<I", _reply(sock), 8)[0]
        if not atom:
            return False
        sock.sendall(struct.pack("<BxHIIIII", 20, 6, root, atom, 0, 0, 1))
        length: int = struct.unpack_from("<I", _reply(sock), 16)[0]  # the value's
        return length > 0
    except (OSError, struct.error, IndexError):
        return False
    finally:
        sock.close()


def _pad4(length: int) -> int:
    return (length + 3) & ~3


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("the X server closed the connection")
        data += chunk
    return data


def _reply(sock: socket.socket) -> bytes:
    """The next reply (events are skipped; an error is an OSError)."""
    while True:
        head = _read(sock, 32)
        if head[0] == 0:
            raise OSError(f"X error {head[1]}")
        if head[0] == 1:
            return head + _read(sock, struct.unpack_from("<I", head, 4)[0] * 4)


def _accepts_tcp(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def read_wish() -> dict[int, tuple[int, int]]:
    try:
        with open(WISH) as handle:
            screens = json.load(handle)["screens"]
        wish = {int(n): (int(s["width"]), int(s["height"])) for n, s in screens.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        wish = {int(n): (s["width"], s["height"]) for n, s in DEFAULT_WISH.items()}
    return {n: size for n, size in wish.items() if 0 <= n <= 7}


def write_json(path: str, data: dict[str, Any]) -> None:
    temp = f"{path}.{os.getpid()}.tmp"
    with open(temp, "w") as handle:
        json.dump(data, handle)
    os.replace(temp, path)


def end_leftovers() -> None:
    """End the desktop processes a previous supervisor left (marked with ``MARK``)."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                marked = f"\0{MARK}=".encode() in b"\0" + handle.read()
        except OSError:
            continue
        if marked:
            with _quiet():
                os.kill(int(entry), signal.SIGKILL)


def _stamp(path: str) -> object:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_ino, info.st_size)


def linked_screens() -> set[int]:
    """The screens ``connect.json`` names (a noVNC link was asked for them)."""
    try:
        with open(CONNECT) as handle:
            links = json.load(handle)
        return {int(n) for n in links if str(n).isdigit()} if isinstance(links, dict) else set()
    except (OSError, ValueError):
        return set()


def main() -> None:
    started_at = time.time()
    os.makedirs(STATE_DIR, exist_ok=True)
    lock = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit(0)  # another supervisor runs
    end_leftovers()
    screens: dict[int, Screen] = {}
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    wish_stamp: object = None
    links_stamp: object = None
    wish: dict[int, tuple[int, int]] = {}
    linked: set[int] = set()
    write_json(STATUS, {"pid": os.getpid(), "started_at": started_at, "screens": {}})
    while not stopping:
        now = time.monotonic()
        stamp = _stamp(WISH)
        changed = stamp != wish_stamp or (not screens and not wish)
        if changed:
            wish_stamp, wish = stamp, read_wish()
            for n in [
                n
                for n in screens
                if n not in wish or (screens[n].width, screens[n].height) != wish[n]
            ]:
                screens.pop(n).stop()
            for n, (width, height) in wish.items():
                if n not in screens:
                    screens[n] = Screen(n, width, height)
        stamp = _stamp(CONNECT)
        if stamp != links_stamp:
            links_stamp, linked = stamp, linked | linked_screens()
        for n, screen in screens.items():
            screen.vnc_wanted = screen.vnc_wanted or n in linked
            changed = screen.step(now) or changed
        if changed:
            write_json(STATUS, {
                "pid": os.getpid(),
                "started_at": started_at,
                "screens": {str(n): s.status() for n, s in sorted(screens.items())},
            })  # fmt: skip
        busy = any(screen.busy for screen in screens.values())
        time.sleep(BUSY_TICK_S if busy else TICK_S)
    for screen in screens.values():
        screen.stop()


class ConnectTokens:
    """websockify's token plugin (``--token-plugin guest.desktop.ConnectTokens
    --token-source N``): a connection to screen N's noVNC goes through to its VNC server
    only with the token the host last wrote for that screen, before it expires."""

    def __init__(self, source: str) -> None:
        self.screen = str(source)

    def lookup(self, token: str) -> tuple[str, str] | None:
        import hmac  # here, not at the top: it costs the supervisor's start ~10 ms

        try:
            with open(CONNECT) as handle:
                entry = json.load(handle)[self.screen]
            expected, expires_at = str(entry["token"]), float(entry["expires_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not token or not hmac.compare_digest(str(token).encode(), expected.encode()):
            return None
        if time.time() >= expires_at:
            return None
        return ("127.0.0.1", str(VNC_BASE + int(self.screen)))


if __name__ == "__main__":
    main()
