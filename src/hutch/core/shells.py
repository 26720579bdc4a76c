"""Interactive shells: a login shell on a terminal of its own, joined to one connection.

A shell is a managed process (:mod:`hutch.core.processes`) of kind ``pty`` with no
command, so the sandbox's login shell runs as root (the sandbox's default user) with
``TERM=xterm-256color``. What a connection adds is its lifetime: when the client goes
away the shell is hung up (SIGHUP to its terminal's foreground job, then the whole tree
ended after a grace), and when the shell exits the connection is closed after its last
output. Two ways in share this:

- the raw upgrade (``POST …/shell``, §8 of the reference): the client sends frames
  ``[type: 1 byte][length: 4 bytes, big-endian][payload]``, type 0 input bytes, type 1 a
  resize with payload ``rows: u16, cols: u16`` (big-endian); frames of other types are
  skipped. The server sends the terminal's output as it comes, unframed (:func:`run_framed`);
- the WebSocket (``GET …/shell-ws``), in the messages of the processes WebSocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

from hutch.core.errors import Conflict, HutchError
from hutch.core.identity import Principal
from hutch.core.processes import (
    OutputData,
    ProcessExit,
    ProcessService,
    ProcessSpec,
    StreamError,
    TerminalSize,
)

__all__ = [
    "FRAME_INPUT",
    "FRAME_RESIZE",
    "HANG_UP_GRACE_MS",
    "Shell",
    "ShellService",
    "read_frames",
]

log = logging.getLogger(__name__)

FRAME_INPUT = 0
FRAME_RESIZE = 1
MAX_FRAME = 1 << 20
HANG_UP_GRACE_MS = 1000
_HEADER = struct.Struct(">BI")
_SIZE = struct.Struct(">HH")


class ProtocolError(Exception):
    """The client broke the framing (a frame over :data:`MAX_FRAME`)."""


@dataclass(frozen=True, kw_only=True)
class Shell:
    """A shell started for ``user`` in sandbox ``sandbox`` (as the caller named it)."""

    user: Principal
    sandbox: str
    process_id: str


class ShellService:
    def __init__(self, processes: ProcessService) -> None:
        self._processes = processes

    async def open(self, user: Principal, ident: str, *, rows: int = 24, cols: int = 80) -> Shell:
        """Start the login shell on a terminal of ``rows`` by ``cols`` (404/409 as processes)."""
        made = await self._processes.create(
            user, ident, ProcessSpec(pty=TerminalSize(rows=rows, cols=cols))
        )
        return Shell(user=user, sandbox=ident, process_id=made.process_id)

    async def output(self, shell: Shell) -> AsyncIterator[bytes | ProcessExit]:
        """The terminal's output as it comes, then the exit (nothing after a lost stream)."""
        frames = await self._processes.connect(shell.user, shell.sandbox, shell.process_id)
        async for frame in frames:
            if isinstance(frame, OutputData):
                yield frame.data
            elif isinstance(frame, ProcessExit):
                yield frame
                return
            elif isinstance(frame, StreamError):
                log.info("shell %s lost its output: %s", shell.process_id, frame.error)
                return

    async def write(self, shell: Shell, data: bytes) -> None:
        if data:
            await self._processes.write(shell.user, shell.sandbox, shell.process_id, data)

    async def resize(self, shell: Shell, rows: int, cols: int) -> None:
        size = TerminalSize(rows=rows, cols=cols)
        await self._processes.resize(shell.user, shell.sandbox, shell.process_id, size)

    async def close_input(self, shell: Shell) -> None:
        """^D on the terminal."""
        await self._processes.close_input(shell.user, shell.sandbox, shell.process_id)

    async def signal(self, shell: Shell, name: str) -> None:
        await self._processes.signal(shell.user, shell.sandbox, shell.process_id, name)

    async def hang_up(self, shell: Shell) -> None:
        """SIGHUP, then end the whole tree after :data:`HANG_UP_GRACE_MS`. Never raises."""
        with contextlib.suppress(HutchError):
            await self.signal(shell, "SIGHUP")
        with contextlib.suppress(HutchError):
            await self._processes.kill(
                shell.user, shell.sandbox, shell.process_id, grace_ms=HANG_UP_GRACE_MS
            )

    async def run_framed(
        self, shell: Shell, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve the raw upgrade's protocol until the shell exits or the client goes (then
        the shell is hung up)."""
        keys = asyncio.create_task(self._take_frames(shell, reader))
        screen = asyncio.create_task(self._send_output(shell, writer))
        exited = False
        try:
            await asyncio.wait({keys, screen}, return_when=asyncio.FIRST_COMPLETED)
            exited = screen.done() and not screen.cancelled() and screen.result()
        finally:
            for task in (keys, screen):
                task.cancel()
            await asyncio.gather(keys, screen, return_exceptions=True)
            if not exited:
                await asyncio.shield(self.hang_up(shell))

    async def _send_output(self, shell: Shell, writer: asyncio.StreamWriter) -> bool:
        """The output to the client, then a half-close; whether the shell was seen to exit."""
        exited = False
        async for chunk in self.output(shell):
            if isinstance(chunk, bytes):
                writer.write(chunk)
                await writer.drain()
            else:
                exited = True
        if writer.can_write_eof():
            writer.write_eof()
        return exited

    async def _take_frames(self, shell: Shell, reader: asyncio.StreamReader) -> None:
        async for kind, payload in read_frames(reader):
            if kind == FRAME_INPUT:
                # Typed after the shell exited: dropped; the output side ends the session
                # once the last output is out.
                with contextlib.suppress(Conflict):
                    await self.write(shell, payload)
            elif kind == FRAME_RESIZE and len(payload) == _SIZE.size:
                rows, cols = _SIZE.unpack(payload)
                with contextlib.suppress(HutchError):  # an impossible size is skipped
                    await self.resize(shell, rows, cols)


async def read_frames(reader: asyncio.StreamReader) -> AsyncIterator[tuple[int, bytes]]:
    """``(type, payload)`` of each client frame until the client's end of stream."""
    while True:
        try:
            header = await reader.readexactly(_HEADER.size)
        except asyncio.IncompleteReadError:
            return
        kind, length = _HEADER.unpack(header)
        if length > MAX_FRAME:
            raise ProtocolError(f"a frame of {length} bytes is over the {MAX_FRAME} limit")
        try:
            payload = await reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError:
            return
        yield kind, payload
