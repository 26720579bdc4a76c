"""Files in a sandbox: whole reads and writes, and streams of any size both ways."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from hutch.sdk._http import Transport

__all__ = ["AsyncFiles", "FileSource"]

CHUNK_BYTES = 1024 * 1024

FileSource = (
    bytes | bytearray | memoryview | str | IO[bytes] | Iterable[bytes] | AsyncIterable[bytes]
)
"""What ``files.write`` takes: the whole content, an open binary file, or chunks."""


class AsyncFiles:
    """``sandbox.files``: paths are absolute paths inside the sandbox.

    Writes replace the whole file and create its parent directories. Large files go both
    ways in chunks and are never held in memory whole, unless asked to (``read_bytes``).
    A 404 (:class:`~hutch.sdk.errors.NotFoundError`) means no such file or no such sandbox.
    """

    def __init__(self, transport: Transport, sandbox_id: str) -> None:
        self._transport = transport
        self._sandbox_id = sandbox_id

    def _route(self) -> str:
        return f"/v1/sandboxes/{self._sandbox_id}/files"

    def _subjects(self, path: str) -> dict[str, str]:
        return {"sandbox": self._sandbox_id, "path": path}

    async def write(self, path: str, data: FileSource) -> int:
        """Write ``data`` to ``path``; return the size the server wrote.

        ``str`` is written as UTF-8. An open file or an iterable is streamed, read in
        1 MiB chunks off the event loop. Whole contents are retried on 429/503 and lost
        connections; a stream, once sent, is not.
        """
        content: bytes | AsyncIterator[bytes]
        if isinstance(data, str):
            content = data.encode()
        elif isinstance(data, bytes | bytearray | memoryview):
            content = bytes(data)
        else:
            content = _chunks(data)
        written = await self._transport.data(
            "PUT",
            self._route(),
            idempotent=True,
            params={"path": path},
            content=content,
            subjects=self._subjects(path),
        )
        size = written.get("bytes") if isinstance(written, dict) else None
        return size if isinstance(size, int) else -1

    async def iter_bytes(self, path: str, *, chunk_size: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        """The file's bytes in chunks as they arrive (nothing is requested until iterated)."""
        async with self._transport.stream(
            "GET", self._route(), idempotent=True, params={"path": path},
            subjects=self._subjects(path),
        ) as response:  # fmt: skip
            async for chunk in response.aiter_bytes(chunk_size):
                yield chunk

    async def read_bytes(self, path: str) -> bytes:
        return b"".join([chunk async for chunk in self.iter_bytes(path)])

    async def read_text(self, path: str, *, encoding: str = "utf-8", errors: str = "strict") -> str:
        return (await self.read_bytes(path)).decode(encoding, errors)

    async def download(self, path: str, dest: str | os.PathLike[str] | IO[bytes]) -> int:
        """Stream ``path`` into a local file (a path, or an open binary file); return its size.

        A local path is written whole or not at all: the bytes go to a temporary file
        beside it that is renamed into place at the end.
        """
        if not isinstance(dest, str | os.PathLike):
            return await self._copy_to(path, dest)
        target = Path(dest)
        partial = target.with_name(f".{target.name}.partial")
        handle = await asyncio.to_thread(partial.open, "wb")
        try:
            with handle:
                size = await self._copy_to(path, handle)
            await asyncio.to_thread(os.replace, partial, target)
        except BaseException:
            await asyncio.to_thread(partial.unlink, missing_ok=True)
            raise
        return size

    async def _copy_to(self, path: str, sink: IO[bytes]) -> int:
        size = 0
        async for chunk in self.iter_bytes(path):
            await asyncio.to_thread(sink.write, chunk)
            size += len(chunk)
        return size


async def _chunks(
    source: IO[bytes] | Iterable[bytes] | AsyncIterable[bytes],
) -> AsyncIterator[bytes]:
    """Chunks of ``source``; blocking reads and iterators run in a worker thread."""
    if isinstance(source, AsyncIterable):
        async for chunk in source:
            yield bytes(chunk)
        return
    read: Any = getattr(source, "read", None)
    if read is not None:
        while block := await asyncio.to_thread(read, CHUNK_BYTES):
            yield bytes(block)
        return
    iterator: Iterator[bytes] = iter(source)
    while (piece := await asyncio.to_thread(_pull, iterator)) is not None:
        yield bytes(piece)


def _pull(iterator: Iterator[bytes]) -> bytes | None:
    return next(iterator, None)
