"""Tunnels: a client's byte stream spliced to a TCP port inside a sandbox.

:meth:`TunnelService.open` checks everything a client can get wrong before anything is
switched (the sandbox is theirs and running, the port is a port and something listens on
it; for port 22 it starts sshd if nothing does), so the route can still refuse in JSend.
:func:`~hutch.core.splice.splice` then copies bytes both ways until both are done.
A tunnel is closed when its sandbox pauses or stops, and while it is open the sandbox
counts as in use (auto-pause waits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import defaultdict
from dataclasses import dataclass

from hutch.core.errors import Conflict, InvalidInput
from hutch.core.identity import Principal
from hutch.core.sandboxes import SandboxService
from hutch.core.splice import splice
from hutch.core.ssh import SSH_PORT, SshService
from hutch.host.agent import HostAgent
from hutch.host.drivers.base import SandboxMissing
from hutch.host.ports import PortClosed

__all__ = ["OpenPort", "TunnelService"]

log = logging.getLogger(__name__)

CHUNK = 256 * 1024  # also the stream buffer of the sandbox's side
KEEP_ALIVE_S = 30.0


@dataclass(frozen=True, kw_only=True)
class OpenPort:
    """A connection to a port inside a sandbox, made for ``user``; not yet spliced."""

    user: Principal
    sandbox_id: str
    port: int
    sock: socket.socket


class TunnelService:
    def __init__(self, sandboxes: SandboxService, host: HostAgent, ssh: SshService) -> None:
        self._sandboxes = sandboxes
        self._host = host
        self._ssh = ssh
        self._open: defaultdict[str, set[asyncio.StreamWriter]] = defaultdict(set)

    async def open(self, user: Principal, ident: str, port: int) -> OpenPort:
        """Connect to ``port`` inside the user's running sandbox.

        404 for a sandbox that is missing or not theirs, 409 when it is not running or
        nothing listens on the port (port 22: sshd is started first if it can be).
        """
        if not 1 <= port <= 65535:
            raise InvalidInput("port must be from 1 to 65535", field="port")
        record = await self._sandboxes.get(user, ident)
        await self._sandboxes.guest(user, record.id)  # 409 unless running
        driver = self._host.driver
        # Servers bound only to the sandbox's link address are found there too.
        own = record.ip if driver.capabilities.isolated else None
        try:
            try:
                sock = await driver.open_port(record.id, port, own_address=own)
            except PortClosed:
                if port != SSH_PORT:
                    raise
                await self._ssh.start_sshd(record.id)
                sock = await driver.open_port(record.id, port, own_address=own)
        except PortClosed as exc:
            raise Conflict(
                f"nothing listens on port {port} inside the sandbox ({exc})", field="port"
            ) from None
        except (SandboxMissing, OSError) as exc:
            raise Conflict(f"the sandbox is not running ({exc})", field="status") from None
        return OpenPort(user=user, sandbox_id=record.id, port=port, sock=sock)

    async def run(
        self, opened: OpenPort, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Splice the client's stream to the opened port until both sides are done."""
        inner_reader, inner_writer = await asyncio.open_connection(sock=opened.sock, limit=CHUNK)
        writers = self._open[opened.sandbox_id]
        writers.update((writer, inner_writer))
        keep_alive = asyncio.create_task(self._keep_alive(opened))
        try:
            await splice(reader, writer, inner_reader, inner_writer)
        finally:
            keep_alive.cancel()
            writers.difference_update((writer, inner_writer))
            if not writers:
                self._open.pop(opened.sandbox_id, None)
            inner_writer.close()
            with contextlib.suppress(Exception):
                await inner_writer.wait_closed()

    async def _keep_alive(self, opened: OpenPort) -> None:
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(KEEP_ALIVE_S)
                await self._sandboxes.guest(opened.user, opened.sandbox_id)

    async def close_sandbox(self, sandbox_id: str) -> None:
        """Close every tunnel into the sandbox (a stop listener: it paused or stopped)."""
        for writer in list(self._open.pop(sandbox_id, ())):
            writer.close()
