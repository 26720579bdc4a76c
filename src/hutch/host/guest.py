"""The host's side of the guest agent protocol (see :mod:`hutch.guest.agent`; framing in
:mod:`hutch.guest.wire`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hutch.guest.wire import (
    CHUNK,
    DATA,
    END,
    FRAME,
    JSON,
    MAX_FRAME,
    PING_REQUEST,
    STDERR,
    STDOUT,
)

__all__ = [
    "ExecExit",
    "ExecOutput",
    "ExecRequest",
    "FileDownload",
    "GuestClient",
    "GuestError",
    "GuestUnreachable",
    "SelfSignal",
]


class GuestError(Exception):
    """The guest agent refused an operation; ``code`` is its reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class GuestUnreachable(Exception):
    """The guest agent did not answer: the sandbox is stopped, frozen or broken."""


@dataclass(frozen=True, kw_only=True)
class ExecRequest:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout_s: float | None = None
    stdin: bytes | None = None
    user: str | None = None
    """``name|uid[:group|gid]`` inside the sandbox; None: the image's USER (root if none)."""


@dataclass(frozen=True)
class ExecOutput:
    stream: str  # "stdout" or "stderr"
    data: bytes


@dataclass(frozen=True)
class ExecExit:
    exit_code: int | None
    error: str | None


@dataclass(frozen=True)
class SelfSignal:
    """A sandbox asked, from inside, to be paused or deleted."""

    action: str  # "pause" or "delete"
    reason: str | None


@dataclass
class FileDownload:
    size: int
    chunks: AsyncIterator[bytes]


class _Channel:
    """One connection to a guest agent: a non-blocking socket driven by the event loop's
    ``sock_*`` calls (no transport, protocol or stream objects: an exec is a few small
    frames each way, and building those was a good part of its round trip)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()

    async def send(self, kind: bytes, payload: bytes = b"") -> None:
        parts = (payload[i : i + MAX_FRAME] for i in range(0, max(len(payload), 1), MAX_FRAME))
        frames = b"".join(FRAME.pack(kind, len(part)) + part for part in parts)
        try:
            sent = self.sock.send(frames)  # most often all of it, with no wait
            if sent < len(frames):
                await self._loop.sock_sendall(self.sock, memoryview(frames)[sent:])
        except BlockingIOError:
            await self._loop.sock_sendall(self.sock, frames)

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.send(JSON, json.dumps(message).encode())

    async def _fill(self, size: int) -> None:
        buffer = self._buffer
        while len(buffer) < size:
            try:
                chunk = self.sock.recv(max(CHUNK, size - len(buffer)))
            except BlockingIOError:
                chunk = await self._loop.sock_recv(self.sock, max(CHUNK, size - len(buffer)))
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(buffer), size)
            buffer += chunk

    async def recv(self) -> tuple[bytes, bytes]:
        try:
            await self._fill(FRAME.size)
            kind, length = FRAME.unpack_from(self._buffer)
            if length > MAX_FRAME:
                raise GuestUnreachable("the guest agent sent an oversized frame")
            await self._fill(FRAME.size + length)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise GuestUnreachable("the guest agent closed the connection") from exc
        payload = bytes(self._buffer[FRAME.size : FRAME.size + length])
        del self._buffer[: FRAME.size + length]
        return kind, payload

    async def recv_json(self) -> dict[str, Any]:
        kind, payload = await self.recv()
        if kind != JSON:
            raise GuestUnreachable(f"expected a JSON frame from the guest agent, got {kind!r}")
        message: dict[str, Any] = json.loads(payload)
        if "error" in message:
            error = message["error"]
            raise GuestError(str(error.get("code", "io")), str(error.get("message", "")))
        return message

    async def close(self) -> None:
        self.sock.close()


class GuestClient:
    """Talks to one sandbox's guest agent over its unix socket; a connection per operation
    (connecting to a unix socket costs a few microseconds)."""

    def __init__(
        self, socket_path: Path, *, connect_timeout_s: float = 5.0, nofollow: bool = False
    ) -> None:
        self.socket_path = socket_path
        self.connect_timeout_s = connect_timeout_s
        self.nofollow = nofollow
        """The socket's directory is writable from inside the sandbox (gvisor): connect
        only to a socket that is there itself, never through a link the sandbox made."""

    async def _open(self) -> _Channel:
        fd = -1
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            target = str(self.socket_path)
            if self.nofollow:
                fd = os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
                if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                    raise GuestUnreachable("the guest agent's socket was replaced")
                target = f"/proc/self/fd/{fd}"
            try:
                sock.connect(target)  # a unix socket: done at once, or refused
            except BlockingIOError:  # its backlog is full: wait for room
                async with asyncio.timeout(self.connect_timeout_s):
                    await asyncio.get_running_loop().sock_connect(sock, target)
        except (OSError, TimeoutError) as exc:
            sock.close()
            raise GuestUnreachable(f"the guest agent does not answer: {exc}") from exc
        except BaseException:
            sock.close()
            raise
        finally:
            if fd >= 0:
                os.close(fd)
        return _Channel(sock)

    async def ping(self, *, timeout_s: float = 5.0) -> dict[str, Any]:
        channel = await self._open()
        try:
            async with asyncio.timeout(timeout_s):
                await channel.send(JSON, PING_REQUEST)
                return await channel.recv_json()
        except TimeoutError as exc:
            raise GuestUnreachable("the guest agent did not answer a ping") from exc
        except ConnectionError as exc:  # a socket whose agent is gone
            raise GuestUnreachable(f"the guest agent does not answer: {exc}") from exc
        finally:
            await channel.close()

    async def spawn(self, request: ExecRequest, *, log: str) -> int:
        """Start ``request`` in the background (output appended to ``log`` inside); its pid."""
        channel = await self._open()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await channel.send_json({"op": "spawn", "argv": request.argv, "env": request.env,
                                         "cwd": request.cwd, "log": log})  # fmt: skip
                answer = await channel.recv_json()
        except TimeoutError as exc:
            raise GuestUnreachable("the guest agent did not answer") from exc
        finally:
            await channel.close()
        if "error" in answer:
            raise GuestError(answer["error"]["code"], answer["error"]["message"])
        return int(answer["pid"])

    async def call(
        self, request: dict[str, Any], *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """One request, one JSON answer (the process operations); GuestError if refused."""
        channel = await self._open()
        try:
            async with asyncio.timeout(timeout_s or self.connect_timeout_s):
                await channel.send_json(request)
                answer: dict[str, Any] = await channel.recv_json()
        except TimeoutError as exc:
            raise GuestUnreachable("the guest agent did not answer") from exc
        finally:
            await channel.close()
        if "error" in answer:
            raise GuestError(answer["error"]["code"], answer["error"]["message"])
        return answer

    async def watch_self(self) -> SelfSignal:
        """Wait, however long it takes, for the sandbox to ask to be paused or deleted
        (:mod:`hutch.guest.selfsignal`). One connection that stays quiet until then;
        cancelling hangs up, and a signal not yet handed over stays with the agent."""
        channel = await self._open()
        try:
            await channel.send_json({"op": "self_watch"})
            answer = await channel.recv_json()
        finally:
            await channel.close()
        action = answer.get("action")
        if action not in ("pause", "delete"):
            raise GuestUnreachable(f"the guest agent sent an unknown self-signal {action!r}")
        reason = answer.get("reason")
        return SelfSignal(action, reason if isinstance(reason, str) else None)

    async def exec(self, request: ExecRequest) -> AsyncIterator[ExecOutput | ExecExit]:
        """Run a command; yields its output as it comes, then exactly one :class:`ExecExit`.

        Closing the iterator early hangs up, and the agent then kills the process group.
        """
        channel = await self._open()
        try:
            await channel.send_json(
                {
                    "op": "exec",
                    "argv": request.argv,
                    "env": request.env,
                    "cwd": request.cwd,
                    "timeout": request.timeout_s,
                    "stdin": request.stdin is not None,
                    **({"user": request.user} if request.user is not None else {}),
                }
            )
            if request.stdin is not None:
                if request.stdin:
                    await channel.send(DATA, request.stdin)
                await channel.send(END)
            while True:
                kind, payload = await channel.recv()
                if kind == STDOUT:
                    yield ExecOutput("stdout", payload)
                elif kind == STDERR:
                    yield ExecOutput("stderr", payload)
                elif kind == JSON:
                    message = json.loads(payload)
                    if "error" in message and isinstance(message["error"], dict):
                        error = message["error"]
                        raise GuestError(str(error.get("code")), str(error.get("message")))
                    yield ExecExit(message.get("exit_code"), message.get("error"))
                    return
        finally:
            await channel.close()

    async def write_file(
        self, path: str, chunks: AsyncIterable[bytes], *, mode: int = 0o644
    ) -> int:
        """Stream ``chunks`` into ``path``; the old file stays whole if this fails midway."""
        channel = await self._open()
        try:
            await channel.send_json({"op": "put", "path": path, "mode": mode})
            async for chunk in chunks:
                if chunk:
                    await channel.send(DATA, chunk)
            await channel.send(END)
            reply = await channel.recv_json()
            return int(reply["size"])
        except ConnectionError as exc:
            # The agent refused early (say, the path is a directory) and hung up while we
            # were still sending; its reason is waiting in the stream.
            with contextlib.suppress(GuestUnreachable):
                await channel.recv_json()
            raise GuestUnreachable("the guest agent closed the connection") from exc
        finally:
            await channel.close()

    async def read_file(self, path: str) -> FileDownload:
        """Open ``path`` for reading; raises :class:`GuestError` before any byte is sent."""
        channel = await self._open()
        try:
            await channel.send_json({"op": "get", "path": path})
            header = await channel.recv_json()
        except BaseException:
            await channel.close()
            raise

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while True:
                    kind, payload = await channel.recv()
                    if kind == END:
                        return
                    yield payload
            finally:
                await channel.close()

        return FileDownload(size=int(header["size"]), chunks=chunks())
