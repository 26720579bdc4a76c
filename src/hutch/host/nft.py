"""nftables commands through libnftables in this process, or the ``nft`` command.

Egress changes on every create, PUT and DNS answer of a restricted sandbox; starting an
``nft`` process for each costs about 10 ms, libnftables (the library ``nft`` itself is
built on, Debian's ``libnftables1``) about 0.2 ms. One context, used by one thread at a
time, off the event loop. Without the library, the ``nft`` command is run instead.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import threading
from typing import Any

from hutch.host.proc import CommandFailed, CommandResult, run

__all__ = ["nft", "nft_json"]

_JSON = 1 << 4  # NFT_CTX_OUTPUT_JSON


class _Library:
    def __init__(self, lib: ctypes.CDLL) -> None:
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_char_p
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        self._lib = lib
        self._lock = threading.Lock()
        self._ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)

    def run(self, commands: str, *, json_output: bool) -> tuple[int, bytes, bytes]:
        with self._lock:
            self._lib.nft_ctx_output_set_flags(self._ctx, _JSON if json_output else 0)
            code = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
            out = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
            err = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
        return code, out, err


_library: _Library | None = None
_loaded = False


def _load() -> _Library | None:
    global _library, _loaded
    if not _loaded:
        _loaded = True
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            _library = _Library(ctypes.CDLL(name))
        except (OSError, AttributeError):
            _library = None
    return _library


async def nft(commands: str) -> None:
    """Run ``commands`` (an ``nft -f`` script: one transaction); CommandFailed if refused."""
    library = _load()
    if library is None:
        await run("nft", "-f", "-", input=commands.encode())
        return
    code, _, err = await asyncio.to_thread(library.run, commands, json_output=False)
    if code != 0:
        raise CommandFailed(("nft", "-f", "-"), CommandResult(code or 1, b"", err))


async def nft_json(command: str) -> dict[str, Any] | None:
    """The JSON output of a listing command (``list counter inet t c``); None if it fails
    (say the object does not exist)."""
    library = _load()
    if library is None:
        result = await run("nft", "-j", *command.split(), check=False)
        code, out = result.returncode, result.stdout
    else:
        code, out, _ = await asyncio.to_thread(library.run, command, json_output=True)
    if code != 0 or not out:
        return None
    parsed: dict[str, Any] = json.loads(out)
    return parsed
