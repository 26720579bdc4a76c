"""Two byte streams joined both ways: the heart of a tunnel (server and CLI alike).

Bytes are copied unchanged until both directions have ended. An end of stream from one
side is passed on to the other as a half-close (``shutdown(SHUT_WR)``), and the other
direction keeps flowing until it ends too, as TCP allows; a reset or error on either side
ends both. Standard library only, so the command line can use it without the server.
"""

from __future__ import annotations

import asyncio

__all__ = ["splice"]

CHUNK = 256 * 1024


async def splice(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> None:
    """Copy a→b and b→a until both directions have ended (see the module docstring)."""
    forward = asyncio.create_task(_copy(a_reader, b_writer))
    backward = asyncio.create_task(_copy(b_reader, a_writer))
    try:
        await asyncio.wait({forward, backward}, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in (forward, backward):
            task.cancel()
        await asyncio.gather(forward, backward, return_exceptions=True)


async def _copy(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
    while data := await source.read(CHUNK):
        target.write(data)
        await target.drain()
    if target.can_write_eof() and not target.is_closing():
        target.write_eof()
