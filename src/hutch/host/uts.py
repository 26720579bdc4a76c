"""Setting a running sandbox's hostname from the host, without starting a process.

A sandbox cannot set its own hostname (no CAP_SYS_ADMIN, and seccomp refuses
``sethostname``), so the host does it inside the sandbox's UTS namespace. Spawning
``nsenter`` and a Python for that costs ~20-30 ms; here one short-lived thread joins the
namespace with ``setns(2)`` (a thread may: UTS namespaces are per thread), sets the name
and ends, so no thread of hutch's is ever left in a sandbox's namespace.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from hutch.host.libc import libc as c_library

__all__ = ["in_own_thread", "set_hostname", "set_hostname_here"]

_CLONE_NEWUTS = 0x04000000
_T = TypeVar("_T")


def _libc() -> ctypes.CDLL:
    return c_library()


def set_hostname_here(pid: int, hostname: str) -> None:
    """Join ``pid``'s UTS namespace in this thread and set the hostname there. Call only
    from a thread that ends right after (see :func:`in_own_thread`)."""
    name = hostname.encode()
    if not name or len(name) > 64:
        raise ValueError("a hostname is 1-64 bytes")
    libc = _libc()
    fd = os.open(f"/proc/{pid}/ns/uts", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWUTS) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into the UTS namespace of {pid}: {os.strerror(err)}")
    finally:
        os.close(fd)
    if libc.sethostname(name, len(name)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"sethostname: {os.strerror(err)}")


async def in_own_thread(function: Callable[[], _T]) -> _T:
    """Run ``function`` in a new thread that ends with it (not the executor's: a thread
    that joined a namespace must not run anything else) and return its result."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: _T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result = function()
        except BaseException as exc:  # handed to the awaiting task
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=target, name="hutch-uts", daemon=True).start()
    return await future


async def set_hostname(pid: int, hostname: str) -> None:
    """Set the hostname of the UTS namespace process ``pid`` is in (a sandbox's init).
    Raises :class:`OSError` (nothing changed) if the process is gone or it is refused."""
    await in_own_thread(lambda: set_hostname_here(pid, hostname))
