"""Reaching a TCP port inside a sandbox from the host (tunnels, ``hutch ssh``).

The socket is made inside the sandbox's network namespace, so it connects the way a
program in the sandbox would: to its loopback, where servers that listen only on
``127.0.0.1`` are found too, and none of the host's firewall rules or addresses are
involved. Only making the socket needs the namespace (a socket stays in the namespace it
was made in); that happens on a thread of its own, which switches namespace and ends, so
no other thread ever runs in the sandbox's namespace.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

__all__ = ["PortClosed", "connect_port", "socket_in_netns"]

CLONE_NEWNET = 0x40000000
CONNECT_TIMEOUT_S = 5.0


class PortClosed(Exception):
    """Nothing accepts connections on that port (refused, or no answer in time)."""


def _make_socket(netns: Path, family: int) -> socket.socket:
    libc = ctypes.CDLL(None, use_errno=True)
    target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"cannot enter {netns}: {os.strerror(error)}")
        return socket.socket(family, socket.SOCK_STREAM)
    finally:
        os.close(target)
        # The thread ends here, and its namespace with it: nothing to switch back.


async def socket_in_netns(netns: Path, family: int = socket.AF_INET) -> socket.socket:
    """A new TCP socket in the network namespace at ``netns``."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[socket.socket] = loop.create_future()

    def work() -> None:
        try:
            made = _make_socket(netns, family)
        except BaseException as exc:  # handed to the waiting coroutine
            loop.call_soon_threadsafe(_settle, done, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, done, made, None)

    threading.Thread(target=work, name="hutch-netns-socket", daemon=True).start()
    return await done


def _settle(
    future: asyncio.Future[socket.socket], made: socket.socket | None, exc: BaseException | None
) -> None:
    if future.cancelled():
        if made is not None:
            made.close()
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        assert made is not None
        future.set_result(made)


async def connect_port(
    netns: Path | None,
    addresses: Sequence[str],
    port: int,
    *,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> socket.socket:
    """A connected, non-blocking socket to ``port`` on the first of ``addresses`` that
    accepts, from inside ``netns`` (None: the host's own namespace).

    Raises :class:`PortClosed` when none accepts; OSError when the namespace is gone.
    """
    loop = asyncio.get_running_loop()
    reasons: list[str] = []
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = (
            await socket_in_netns(netns, family)
            if netns is not None
            else socket.socket(family, socket.SOCK_STREAM)
        )
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout_s):
                await loop.sock_connect(sock, (address, port))
        except (OSError, TimeoutError) as exc:
            sock.close()
            why = "no answer" if isinstance(exc, TimeoutError) else "connection refused"
            if isinstance(exc, OSError) and exc.errno not in (None, errno.ECONNREFUSED):
                why = os.strerror(exc.errno)
            reasons.append(f"{address}: {why}")
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise PortClosed("; ".join(reasons))
