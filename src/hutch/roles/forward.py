"""Passing a request through to the host agent's unix socket, unbuffered.

The control plane answers what it can from the store and hands everything else to the host
agent (:mod:`hutch.roles`): the request line and headers go as they came (plus
:data:`CLIENT_HEADER`), the body is copied chunk by chunk as the client sends it, and the
answer is copied back the same way as the agent writes it, so an exec stream, a file
download or an upload never sits in a buffer here. An upgrade (WebSocket, ``tcp-tunnel``)
that the agent accepts is answered to the client with the agent's own ``101`` and the two
sockets are spliced until either side is done.

Failure contract (what a client sees when the agent is away):

- the agent cannot be reached (restarting, not started yet): the request waits up to
  ``wait_s`` for it, then gets a 503 in its dialect's envelope with ``Retry-After``; nothing
  reached the agent, so retrying is safe;
- the agent went away after the request reached it and before it answered: a 502 saying
  the outcome is unknown (never a 2xx);
- after the answer started: the client's connection is closed mid-answer, as the agent's was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import h11
from starlette.types import Message, Receive, Scope, Send

from hutch.api.dialects import error_response
from hutch.api.upgrade import PASS_THROUGH
from hutch.core.errors import HutchError, Unavailable

__all__ = ["CLIENT_HEADER", "AgentForwarder", "AgentRefused", "AgentUnreachable", "replaying"]

log = logging.getLogger(__name__)

CLIENT_HEADER = b"x-hutch-client"
"""``host:port`` of the client as the control plane saw it; the agent trusts it because
only processes that can open its socket (in a 0700 directory) can send it."""

_CHUNK = 1 << 16
_IDLE_KEPT = 64
# Hop-by-hop headers (RFC 9110 §7.6.1) are this hop's business; an upgrade keeps its own.
_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade",
     b"transfer-encoding", CLIENT_HEADER, b"x-hutch-agent-token"}
)  # fmt: skip


class AgentUnreachable(Exception):
    """Nothing answers on the agent's socket."""


class AgentRefused(AgentUnreachable):
    """The agent cannot be reached for a reason worth telling the client (a cluster's TLS
    failing); said in the 503, not retried."""


class _BadGateway(HutchError):
    status = 502
    default_code = "bad_gateway"


class _Upstream:
    """One HTTP/1.1 connection to the agent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.http = h11.Connection(h11.CLIENT)

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    async def send(self, event: h11.Event) -> None:
        data = self.http.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                self.http.receive_data(await self.reader.read(_CHUNK))
                continue
            return event  # type: ignore[return-value]

    def close(self) -> None:
        self.writer.close()


Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
"""Opens a new connection to an agent (a cluster agent's is TCP: :mod:`hutch.cluster.routing`)."""


class AgentForwarder:
    """An ASGI app that passes every HTTP request to the agent at ``socket_path`` (or the
    one ``opener`` connects to, adding ``headers`` to each request)."""

    def __init__(
        self,
        socket_path: Path | None,
        *,
        wait_s: float = 15.0,
        opener: Opener | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        self._path = socket_path
        self._wait_s = wait_s
        self._idle: deque[_Upstream] = deque()
        self._opener = opener or self._open_unix
        self._headers = list(headers)

    async def _open_unix(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(str(self._path), limit=_CHUNK * 4)

    async def _connect(self) -> _Upstream:
        while self._idle:
            upstream = self._idle.pop()
            if upstream.usable():
                return upstream
            upstream.close()
        deadline = time.monotonic() + self._wait_s
        delay = 0.02
        while True:
            try:
                reader, writer = await self._opener()
            except OSError as exc:  # no socket yet, refused, unreachable, timed out
                if time.monotonic() >= deadline:
                    raise AgentUnreachable(str(exc)) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            return _Upstream(reader, writer)

    def _keep(self, upstream: _Upstream) -> None:
        http = upstream.http
        if http.our_state is h11.DONE and http.their_state is h11.DONE and upstream.usable():
            http.start_next_cycle()
            if len(self._idle) < _IDLE_KEPT:
                self._idle.append(upstream)
                return
        upstream.close()

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        request_id = uuid.uuid4().hex
        head = _request_head(scope, self._headers)
        try:
            upstream = await self._connect()
            try:
                await upstream.send(head)
            except ConnectionError:
                # A kept connection the agent closed (it restarted): nothing was read.
                upstream.close()
                upstream = await self._connect()
                await upstream.send(head)
        except (AgentUnreachable, ConnectionError) as exc:
            log.warning("the host agent is unreachable (%s); answering 503", exc)
            error = Unavailable(
                f"{exc}; nothing was done" if isinstance(exc, AgentRefused) else
                "the host agent is not answering (restarting?); nothing was done, try again",
                headers={"Retry-After": "1"},
            )  # fmt: skip
            await error_response(scope["path"], error, request_id)(scope, receive, send)
            return
        await self._exchange(upstream, scope, receive, send, request_id)

    async def _exchange(
        self, upstream: _Upstream, scope: Scope, receive: Receive, send: Send, request_id: str
    ) -> None:
        client_gone = asyncio.Event()
        body = asyncio.create_task(_pump_body(upstream, receive, client_gone))
        started = False
        try:
            event = await _response_head(upstream, body, client_gone)
            if isinstance(event, h11.InformationalResponse):  # 101: the agent switched
                await _splice(upstream, scope, event, body)
                return
            await send(
                {"type": "http.response.start", "status": event.status_code,
                 "headers": [(k, v) for k, v in event.headers if k not in _HOP]}
            )  # fmt: skip
            started = True
            while True:
                part = await _next_or_gone(upstream, client_gone)
                if isinstance(part, h11.Data):
                    await send({"type": "http.response.body", "body": bytes(part.data),
                                "more_body": True})  # fmt: skip
                elif isinstance(part, h11.EndOfMessage):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    break
        except _ClientGone:
            upstream.close()
            return
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError) as exc:
            upstream.close()
            if started:
                raise  # the client sees its connection close mid-answer, as the agent's did
            log.warning("the host agent went away during %s %s: %s",
                        scope["method"], scope["path"], exc)  # fmt: skip
            error = _BadGateway(
                "the host agent went away before answering (it restarts by itself); "
                "whether the request took effect is unknown: check, then retry"
            )
            await error_response(scope["path"], error, request_id)(scope, receive, send)
            return
        finally:
            if not body.done():
                body.cancel()
                with contextlib.suppress(BaseException):
                    await body
        if body.cancelled() or body.exception() is None:
            self._keep(upstream)
        else:
            upstream.close()


def replaying(body: bytes, receive: Receive, *, more: bool = False) -> Receive:
    """A receive that gives ``body`` (read already, to decide where the request goes)
    first, then what ``receive`` gives."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay


class _ClientGone(Exception):
    pass


def _request_head(scope: Scope, extra: Sequence[tuple[bytes, bytes]] = ()) -> h11.Request:
    headers: list[tuple[bytes, bytes]] = []
    upgrade = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"upgrade":
            upgrade = value
        elif name == b"transfer-encoding":
            chunked = True
        if name not in _HOP:
            headers.append((name, value))
    if upgrade is not None and PASS_THROUGH in scope.get("extensions", {}):
        headers += [(b"connection", b"Upgrade"), (b"upgrade", upgrade)]
    if chunked:
        headers.append((b"transfer-encoding", b"chunked"))
    client = scope.get("client")
    if client:
        headers.append((CLIENT_HEADER, f"{client[0]}:{client[1]}".encode()))
    headers.extend(extra)
    target = scope.get("raw_path") or scope["path"].encode()
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    return h11.Request(method=scope["method"], target=target, headers=headers)


async def _pump_body(upstream: _Upstream, receive: Receive, gone: asyncio.Event) -> None:
    """Copy the client's body to the agent as it comes, then watch for the client leaving."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return
        chunk = message.get("body", b"")
        if chunk:
            await upstream.send(h11.Data(data=chunk))
        if not message.get("more_body", False):
            break
    await upstream.send(h11.EndOfMessage())
    if (await receive())["type"] == "http.disconnect":
        gone.set()


async def _next_or_gone(upstream: _Upstream, gone: asyncio.Event) -> Any:
    """The agent's next event, or :class:`_ClientGone` as soon as the client has left (a
    stream the client stopped reading is ended at the agent too)."""
    if gone.is_set():
        raise _ClientGone
    step = asyncio.ensure_future(upstream.next_event())
    waiter = asyncio.ensure_future(gone.wait())
    try:
        await asyncio.wait({step, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not step.done():
        step.cancel()
        with contextlib.suppress(BaseException):
            await step
        raise _ClientGone
    return step.result()


async def _response_head(
    upstream: _Upstream, body: asyncio.Task[None], gone: asyncio.Event
) -> h11.Response | h11.InformationalResponse:
    while True:
        event = await _next_or_gone(upstream, gone)
        if isinstance(event, h11.Response):
            return event
        if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
            return event
        if event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
            raise ConnectionResetError("the agent closed the connection")
        if body.done() and body.exception() is not None:
            raise ConnectionResetError(str(body.exception()))


async def _splice(
    upstream: _Upstream, scope: Scope, switch: h11.InformationalResponse, body: asyncio.Task[None]
) -> None:
    take_over: Callable[
        [list[tuple[bytes, bytes]]], tuple[asyncio.StreamReader, asyncio.StreamWriter]
    ] = scope["extensions"][PASS_THROUGH]
    body.cancel()
    with contextlib.suppress(BaseException):
        await body
    try:
        reader, writer = take_over([(k, v) for k, v in switch.headers])
    except (ConnectionError, RuntimeError):
        upstream.close()
        return
    leftover, _ = upstream.http.trailing_data
    try:
        if leftover:
            writer.write(bytes(leftover))
        await asyncio.gather(
            _copy(reader, upstream.writer), _copy(upstream.reader, writer), return_exceptions=True
        )
    finally:
        upstream.close()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()
