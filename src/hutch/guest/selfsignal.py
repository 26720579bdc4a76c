"""Self-signal: a sandbox asks, from inside, to be paused or deleted.

Two ways in, both served by the agent (the sandbox's init, in the sandbox's own network
namespace, so only the sandbox itself reaches them):

- HTTP on ``127.0.0.1:1029``: ``POST /self/pause`` or ``POST /self/delete``, with an
  optional ``?reason=`` (at most 128 characters kept) → ``202 Accepted``.
- The FIFO ``/run/self``: a line ``park`` (pause) or ``retire`` (delete).

A signal waits in the agent's inbox until the host takes it with the ``self_watch`` op:
a long poll on the agent's unix socket, answered ``{"ok": true, "action": "pause" |
"delete", "reason": str | null}`` when a signal comes. The waiting costs nothing while
nothing happens: the op blocks in ``select`` on its connection and a wake-up pipe, and
the HTTP and FIFO threads block in ``accept`` and ``read``.
"""

from __future__ import annotations

import _socket
import os
import threading

from .wire import Connection, suppress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .agent import Agent

MAX_REASON = 128
MAX_REQUEST = 8192
REQUEST_TIMEOUT_S = 5.0
ACTIONS = {"/self/pause": "pause", "/self/delete": "delete"}
FIFO_WORDS = {b"park": "pause", b"retire": "delete"}


class Inbox:
    """Signals not yet taken by the host, and the watchers to wake when one comes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: list[tuple[str, str | None]] = []
        self.wakers: set[int] = set()

    def post(self, action: str, reason: str | None) -> None:
        with self.lock:
            self.pending.append((action, reason))
            del self.pending[:-16]  # a sandbox that keeps asking is heard, not hoarded
            for fd in self.wakers:
                with suppress(OSError):
                    os.write(fd, b"!")

    def take(self) -> tuple[str, str | None] | None:
        with self.lock:
            return self.pending.pop(0) if self.pending else None

    def put_back(self, signal: tuple[str, str | None]) -> None:
        with self.lock:
            self.pending.insert(0, signal)


INBOX = Inbox()


def watch(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    """The ``self_watch`` op: answer with the next signal, however long it takes; return
    without answering if the host hangs up first."""
    import select

    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    with INBOX.lock:
        INBOX.wakers.add(wake_write)
    try:
        while True:
            signal = INBOX.take()
            if signal is not None:
                try:
                    conn.send_json({"ok": True, "action": signal[0], "reason": signal[1]})
                except OSError:
                    INBOX.put_back(signal)
                    raise
                return
            host = conn.sock.fileno()
            ready, _, _ = select.select([host, wake_read], [], [])
            if host in ready:
                return  # the host hung up (it sends nothing more on this connection)
            os.read(wake_read, 64)
    finally:
        with INBOX.lock:
            INBOX.wakers.discard(wake_write)
        os.close(wake_read)
        os.close(wake_write)


def clean_reason(text: str) -> str | None:
    """At most 128 characters, anything unprintable as a space; None when blank."""
    kept = "".join(c if c.isprintable() else " " for c in text[:MAX_REASON])
    return kept if kept.strip() else None


def _respond(sock: _socket.socket, status: str, message: dict[str, Any]) -> None:
    import json

    body = json.dumps(message).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    if status.startswith("405"):
        head += "Allow: POST\r\n"
    with suppress(OSError):
        sock.sendall(head.encode() + b"\r\n" + body)


def _read_head(sock: _socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_REQUEST:
            return None
        chunk = sock.recv(4096)
        if not chunk:
            return None
        data += chunk
    return data


def handle_http(sock: _socket.socket) -> None:
    """One request on ``sock``: a self-signal (202) or a clear refusal; then close."""
    try:
        sock.settimeout(REQUEST_TIMEOUT_S)
        head = _read_head(sock)
        if head is None:
            _respond(sock, "400 Bad Request", {"error": "not an HTTP request"})
            return
        line = head.split(b"\r\n", 1)[0].decode("utf-8", errors="replace")
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            _respond(sock, "400 Bad Request", {"error": "not an HTTP request"})
            return
        method, target, _ = parts
        path, _, query = target.partition("?")
        action = ACTIONS.get(path.rstrip("/") or "/")
        if action is None:
            _respond(sock, "404 Not Found",
                     {"error": "no such endpoint; POST /self/pause or /self/delete"})  # fmt: skip
            return
        if method != "POST":
            _respond(sock, "405 Method Not Allowed", {"error": f"{path} takes POST"})
            return
        reason = None
        if query:
            from urllib.parse import parse_qs

            values = parse_qs(query, keep_blank_values=True, errors="replace").get("reason")
            reason = clean_reason(values[0]) if values else None
        INBOX.post(action, reason)
        _respond(sock, "202 Accepted", {"ok": True, "action": action, "reason": reason})
    except (OSError, UnicodeError, ValueError):
        pass
    finally:
        with suppress(OSError):
            sock.close()


def serve_http(address: str) -> None:
    """Serve the self-signal endpoint on ``address`` (``host:port``) until the end."""
    host, _, port = address.rpartition(":")
    listener = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    listener.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(16)
    while True:
        try:
            fd, _ = listener._accept()  # type: ignore[attr-defined]
            sock = _socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            threading.Thread(target=handle_http, args=(sock,), daemon=True).start()
        except RuntimeError:  # no thread to be had: answer here, one at a time
            handle_http(sock)


def serve_fifo(path: str) -> None:
    """Read ``park`` and ``retire`` lines from a FIFO at ``path`` (made afresh)."""
    with suppress(FileNotFoundError):
        os.unlink(path)
    os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    os.mkfifo(path, 0o600)
    os.chmod(path, 0o622)  # anyone in the sandbox may write; only the agent reads
    # Open for writing too, so the FIFO never reads as ended when a writer closes it.
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    pending = b""
    while True:
        data = os.read(fd, 4096)
        lines = (pending + data).split(b"\n")
        pending = lines.pop()[-64:]
        for line in lines:
            action = FIFO_WORDS.get(line.strip())
            if action is not None:
                INBOX.post(action, None)


def start(options: dict[str, str]) -> None:
    """Start the endpoints the agent's options ask for (``--self-http``, ``--self-fifo``)."""
    for target, key in ((serve_http, "--self-http"), (serve_fifo, "--self-fifo")):
        if key in options:
            threading.Thread(target=_logged, args=(target, options[key]), daemon=True).start()


def _logged(target: Any, argument: str) -> None:
    try:
        target(argument)
    except OSError as exc:
        import sys

        print(f"hutch agent: self-signal at {argument} is off: {exc}", file=sys.stderr)
