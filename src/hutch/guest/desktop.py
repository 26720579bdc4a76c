"""The desktop of a ``desktop:1`` sandbox: a supervisor that keeps its screens running.

Standard library only; started by the guest agent as the image's start command (see the
recipe ``desktop_1.toml``), or by the host when it finds none running
(:mod:`hutch.core.computer`). Screen ``n`` (``screen-n``, 0 to 7) is X display ``:n``:

- ``Xvfb :n`` with its framebuffer in ``/dev/shm/hutch-desktop/n/Xvfb_screen0`` (an XWD
  file the host reads for a screenshot: no X round trip, no screenshot program),
- ``openbox``, the window manager,
- ``x11vnc`` on 127.0.0.1:(5900+n) (loopback only: no other sandbox reaches it),
- ``websockify`` on 0.0.0.0:(6080+n), serving noVNC and bridging to x11vnc only for a
  connection whose token is the screen's current one and unexpired (:class:`ConnectTokens`;
  the host writes ``connect.json`` for ``…/screens/{id}/connect``).

Files under ``/run/hutch-desktop``: ``screens.json`` (the host's wish: ``{"screens":
{"n": {"width", "height"}}}``; absent, screen 0 at 1280x800), ``status.json`` (this
supervisor's: ``{"pid", "screens": {"n": {"width", "height", "state": "starting" |
"ready" | "failed", "error", "restarts"}}}``, rewritten on every change) and
``connect.json``. The supervisor checks the wish and its children every 0.1 s: a child
that died is started again (after 0.2 s, doubling to 5 s while it keeps dying); when the
X server dies, the whole screen starts again. A changed size starts the screen again at
that size (its windows close). Only one supervisor runs (a lock); a new one first ends
whatever a previous one left (children are marked with ``HUTCH_DESKTOP_CHILD``).
"""

from __future__ import annotations

import fcntl
import hmac
import json
import os
import signal
import socket
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
READY_TIMEOUT_S = 20.0
MAX_BACKOFF_S = 5.0


def framebuffer(n: int) -> str:
    return f"{FRAMEBUFFERS}/{n}/Xvfb_screen0"


class Child:
    """One supervised process of a screen; started again after a backoff when it dies."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: str) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
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
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=out, env=self.env, close_fds=True,
                                             start_new_session=True)  # fmt: skip
            except OSError as exc:
                out.write(f"hutch-desktop: cannot start {self.argv[0]}: {exc}\n".encode())
                self.proc = None

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
        vnc = [
            "x11vnc", "-display", f":{n}", "-localhost", "-rfbport", str(VNC_BASE + n),
            "-forever", "-shared", "-nopw", "-quiet", "-noxrecord", "-nobell",
        ]  # fmt: skip
        novnc = [
            "websockify", "--web", NOVNC_WEB, "--token-plugin", "guest.desktop.ConnectTokens",
            "--token-source", str(n), f"0.0.0.0:{NOVNC_BASE + n}",
        ]  # fmt: skip
        self.others = [
            Child("openbox", ["openbox", "--sm-disable"], env, log),
            Child("x11vnc", vnc, env, log),
            Child("websockify", novnc, {**env, "PYTHONPATH": "/.hutch"}, log),
        ]

    @property
    def children(self) -> list[Child]:
        return [self.x, *self.others]

    def step(self, now: float) -> bool:
        """Start what is not running; True if the state changed."""
        before = (self.state, self.error)
        if not self.x.alive():
            if self.state != "starting" or self.x.proc is not None:
                for child in self.others:
                    child.stop()
                self._clean_display()
                self.state, self.since = "starting", now
            self.x.start(now)
        elif self.state == "starting" and _accepts(f"/tmp/.X11-unix/X{self.n}"):
            for child in self.others:
                if not child.alive():
                    child.start(now)
            if _accepts_tcp(VNC_BASE + self.n) and _accepts_tcp(NOVNC_BASE + self.n):
                self.state, self.error = "ready", ""
        elif self.state != "starting":
            for child in self.others:
                if not child.alive():
                    child.start(now)
        if self.state == "starting" and now - self.since > READY_TIMEOUT_S:
            self.error = f"screen-{self.n} did not start in {READY_TIMEOUT_S:g} s"
        return (self.state, self.error) != before

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


def main() -> None:
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
    wish: dict[int, tuple[int, int]] = {}
    write_json(STATUS, {"pid": os.getpid(), "screens": {}})
    while not stopping:
        now = time.monotonic()
        try:
            info = os.stat(WISH)
            stamp: object = (info.st_mtime_ns, info.st_ino, info.st_size)
        except OSError:
            stamp = None
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
        for screen in screens.values():
            changed = screen.step(now) or changed
        if changed:
            write_json(STATUS, {
                "pid": os.getpid(),
                "screens": {str(n): s.status() for n, s in sorted(screens.items())},
            })  # fmt: skip
        time.sleep(TICK_S)
    for screen in screens.values():
        screen.stop()


class ConnectTokens:
    """websockify's token plugin (``--token-plugin guest.desktop.ConnectTokens
    --token-source N``): a connection to screen N's noVNC goes through to its VNC server
    only with the token the host last wrote for that screen, before it expires."""

    def __init__(self, source: str) -> None:
        self.screen = str(source)

    def lookup(self, token: str) -> tuple[str, str] | None:
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
