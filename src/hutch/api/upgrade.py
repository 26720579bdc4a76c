"""Raw HTTP/1.1 upgrades (``Upgrade: tcp-tunnel``): the tunnel and shell routes.

ASGI can hand a connection over to a WebSocket, but to no other protocol, and CreateOS
clients ask for ``Connection: Upgrade`` / ``Upgrade: tcp-tunnel`` and then speak raw bytes
(§8 of the reference). So hutch serves with :class:`UpgradingH11Protocol`, uvicorn's h11
protocol with one addition: a request that asks for one of :data:`RAW_PROTOCOLS` goes to
the app as an ordinary HTTP request, with a callable in ``scope["extensions"]``
(:data:`EXTENSION`) that can take the connection over. The route therefore authenticates
and checks everything the usual way and answers any refusal (401, 404, 409…) as an
ordinary JSend response on a connection that stays HTTP. Only when it accepts does it
return an :class:`UpgradeResponse`, which writes ``101 Switching Protocols``, hands the
socket to the route's handler as an ``asyncio`` stream pair, and runs the handler until it
is done. Bytes the client sent right behind its request are kept and read first.

Served any other way (another server, HTTP/2, a test client), the route answers 400 and
says the upgrade needs HTTP/1.1 to ``hutch serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import h11
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from hutch.core.errors import InvalidInput

__all__ = [
    "EXTENSION",
    "PASS_THROUGH",
    "RAW_PROTOCOLS",
    "PassThroughH11Protocol",
    "RawHandler",
    "UpgradeResponse",
    "UpgradingH11Protocol",
    "require_upgrade",
]

log = logging.getLogger(__name__)

EXTENSION = "hutch.raw_upgrade"
PASS_THROUGH = "hutch.pass_through_upgrade"
"""The scope extension of :class:`PassThroughH11Protocol`: a callable taking the 101's
headers (as another server answered them) and returning the client's stream pair."""
RAW_PROTOCOLS = frozenset({b"tcp-tunnel"})
STREAM_LIMIT = 1 << 20

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Takeover = Callable[[bytes], tuple[asyncio.StreamReader, asyncio.StreamWriter]]


class _RawProtocol(asyncio.StreamReaderProtocol):
    """The protocol of a connection after its 101: a stream pair, and shut down with the
    server (uvicorn calls ``shutdown`` on every connection it knows)."""

    def __init__(self, reader: asyncio.StreamReader, connections: set[Any]) -> None:
        super().__init__(reader)
        self._connections = connections
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._transport = transport
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        super().connection_lost(exc)

    def shutdown(self) -> None:
        if self._transport is not None:
            self._transport.close()


class UpgradingH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus raw upgrades the app can accept (see the module)."""

    def _should_upgrade(self) -> bool:
        upgrade = self._get_upgrade()
        if upgrade in RAW_PROTOCOLS and self.scope["http_version"] == "1.1":
            scope = cast(dict[str, Any], self.scope)
            scope.setdefault("extensions", {})[EXTENSION] = self._take_over
            return False
        return super()._should_upgrade()

    def _take_over(self, protocol: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Answer 101 and give the socket to a stream pair; the ASGI side of this request
        may send nothing more (whatever it sends is dropped)."""
        return self._switch([(b"connection", b"Upgrade"), (b"upgrade", protocol)])

    def _switch(
        self, headers: list[tuple[bytes, bytes]]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Answer 101 with ``headers`` and give the socket to a stream pair."""
        cycle = self.cycle
        if cycle is None or cycle.response_started:
            raise RuntimeError("the response has already started; too late to upgrade")
        if cycle.disconnected or self.transport.is_closing():
            raise ConnectionResetError("the client went away before the switch")
        switch = h11.InformationalResponse(
            status_code=101, headers=headers, reason=b"Switching Protocols"
        )
        self.transport.write(self.conn.send(switch))
        trailing, closed = self.conn.trailing_data
        cycle.response_started = cycle.response_complete = cycle.disconnected = True
        self.connections.discard(self)
        self._unset_keepalive_if_required()

        reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=self.loop)
        raw = _RawProtocol(reader, self.connections)
        self.transport.set_protocol(raw)
        raw.connection_made(self.transport)
        if trailing:
            reader.feed_data(bytes(trailing))
        if closed:
            reader.feed_eof()
        self.transport.resume_reading()
        return reader, asyncio.StreamWriter(self.transport, raw, reader, self.loop)


class PassThroughH11Protocol(UpgradingH11Protocol):
    """The control plane's protocol: *every* HTTP/1.1 upgrade (WebSocket included) reaches
    the app as an ordinary request carrying :data:`PASS_THROUGH`, so the app can forward it
    to the host agent and, if the agent switches, answer the client with the agent's own 101
    and splice the two sockets (:mod:`hutch.roles.forward`). Nothing is terminated here."""

    def _should_upgrade(self) -> bool:
        if self._get_upgrade() is not None and self.scope["http_version"] == "1.1":
            scope = cast(dict[str, Any], self.scope)
            scope.setdefault("extensions", {})[PASS_THROUGH] = self._switch
            return False
        return super()._should_upgrade()


def require_upgrade(request: Request, protocol: str = "tcp-tunnel") -> None:
    """Refuse (400) a request that did not ask to upgrade to ``protocol``, or that this
    server cannot upgrade (not HTTP/1.1 to ``hutch serve``)."""
    headers = Headers(scope=request.scope)
    connection = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    asked = headers.get("upgrade", "").strip().lower()
    if "upgrade" not in connection or asked != protocol:
        raise InvalidInput(
            f"this route switches protocols: send 'Connection: Upgrade' and "
            f"'Upgrade: {protocol}' (HTTP/1.1), then speak {protocol} on the socket",
            field="Upgrade",
        )
    if EXTENSION not in request.scope.get("extensions", {}):
        raise InvalidInput(
            "this server cannot switch protocols on this connection; use HTTP/1.1 to "
            "`hutch serve` directly (a proxy in between must pass Upgrade through)",
            field="Upgrade",
        )


class UpgradeResponse(Response):
    """Switches the connection to ``protocol`` and runs ``handler`` on the raw socket.

    The handler owns the stream pair until it returns; the connection is closed after it.
    Errors in the handler are logged, not answered: the HTTP exchange is over by then.
    """

    def __init__(
        self,
        handler: RawHandler,
        *,
        abandon: Callable[[], Awaitable[None]] | None = None,
        protocol: str = "tcp-tunnel",
    ) -> None:
        super().__init__(status_code=101)
        self.handler = handler
        self.abandon = abandon
        """Called instead of ``handler`` when the client went away before the switch, to
        release what the route opened for it."""
        self.protocol = protocol.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        takeover: Takeover = scope["extensions"][EXTENSION]
        # h11 can switch only once the request is complete: read the (empty) body first.
        while (await receive()).get("more_body"):
            pass
        try:
            reader, writer = takeover(self.protocol)
        except ConnectionError:
            if self.abandon is not None:
                await self.abandon()
            return
        try:
            await self.handler(reader, writer)
        except Exception:
            log.exception("the %s session on %s failed", self.protocol.decode(), scope["path"])
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
