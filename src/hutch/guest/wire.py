"""The guest agent's framing: one kind byte, a 4-byte big-endian length, then the payload.

Shared by both ends (the host's :mod:`hutch.host.guest` imports the constants). Standard
library only, and only the C half of socket: this module loads before the first ping.
"""

from __future__ import annotations

import _socket
import struct
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
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


class ProtocolError(Exception):
    """The peer broke the framing or sent a request that is not one."""


class NotFound(Exception):
    """The request names something (a process) the agent does not have."""


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
