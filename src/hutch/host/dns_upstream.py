"""The upstream side of hutch's DNS server: asking the host's resolvers for sandboxes.

:class:`Forwarder` sends a query to the upstream resolvers in order, over UDP, and again
over TCP to the same resolver when the UDP answer is truncated and the asker wants the
whole answer (it asked over TCP itself). One connected UDP socket per upstream serves every
query: the kernel drops datagrams from anywhere else, each query gets a random ID, and an
answer counts only if its question is the one asked. Every query has one time budget,
``timeout_s``, shared by the resolvers and the TCP retry; when it runs out, or every
resolver failed, :class:`UpstreamError` is raised (the server answers SERVFAIL). An
answer of SERVFAIL or REFUSED moves on to the next resolver, if there is one.

Upstreams are ``ip`` or ``ip:port`` (``[v6]:port`` for IPv6), comma-separated
(``HUTCH_DNS_UPSTREAM``); without any, the host's own nameservers from /etc/resolv.conf.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from dnslib import RCODE, DNSError, DNSRecord

__all__ = [
    "Answer",
    "Forwarder",
    "Upstream",
    "UpstreamError",
    "configured_forwarder",
    "parse_upstreams",
    "system_upstreams",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int = 53

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Answer:
    """An upstream's answer: parsed, and the bytes it sent (its ID is the forwarder's)."""

    record: DNSRecord
    wire: bytes


class UpstreamError(Exception):
    """No upstream answered in time (or none is configured)."""


def parse_upstreams(text: str) -> list[Upstream]:
    """``"198.18.0.53, 10.0.0.2:5353, [2001:db8::1]:53"`` as upstreams; ValueError if bad."""
    upstreams = []
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        host, port = part, "53"
        if part.startswith("["):
            host, _, rest = part[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"{part!r}: expected [ipv6]:port")
                port = rest[1:]
        elif part.count(":") == 1:
            host, _, port = part.partition(":")
        try:
            address = ip_address(host)
        except ValueError:
            raise ValueError(
                f"{part!r}: an upstream is an IP address, with an optional port"
            ) from None
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{part!r}: the port must be a number from 1 to 65535")
        upstreams.append(Upstream(str(address), int(port)))
    return upstreams


def system_upstreams(path: Path = Path("/etc/resolv.conf")) -> list[Upstream]:
    """The ``nameserver`` lines of the host's resolv.conf (blocking: call in a thread)."""
    upstreams = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "nameserver":
                with contextlib.suppress(ValueError):
                    address = ip_address(fields[1].split("%")[0])
                    upstreams.append(Upstream(str(address)))
    return upstreams


async def configured_forwarder(setting: str, *, timeout_s: float) -> Forwarder | None:
    """The forwarder ``HUTCH_DNS_UPSTREAM`` asks for: None for ``none``; the host's
    resolv.conf nameservers when it is empty."""
    if setting.strip() == "none":
        return None
    upstreams = parse_upstreams(setting) or await asyncio.to_thread(system_upstreams)
    if not upstreams:
        log.warning("no upstream resolver (HUTCH_DNS_UPSTREAM, /etc/resolv.conf): "
                    "sandboxes' lookups of internet names will get SERVFAIL")  # fmt: skip
    return Forwarder(upstreams, timeout_s=timeout_s)


class _Channel(asyncio.DatagramProtocol):
    """One connected UDP socket to one upstream, shared by every query in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, tuple[DNSRecord, asyncio.Future[Answer]]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 2:
            return
        waiting = self.pending.get(struct.unpack("!H", data[:2])[0])
        if waiting is None or waiting[1].done():
            return
        request, future = waiting
        answer = _matching(data, request)
        if answer is not None:  # else spoofed or garbled: the real answer may follow
            future.set_result(answer)

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable and the like: nobody is listening; fail what is waiting now.
        for _, future in self.pending.values():
            if not future.done():
                future.set_exception(UpstreamError(str(exc)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.error_received(exc or ConnectionError("the upstream socket closed"))


class Forwarder:
    def __init__(self, upstreams: Sequence[Upstream], *, timeout_s: float) -> None:
        self.upstreams = tuple(upstreams)
        self.timeout_s = timeout_s
        self._channels: dict[Upstream, _Channel] = {}

    async def _channel(self, upstream: Upstream) -> _Channel:
        channel = self._channels.get(upstream)
        if channel is None or channel.transport is None:
            loop = asyncio.get_running_loop()
            _, channel = await loop.create_datagram_endpoint(
                _Channel, remote_addr=(upstream.host, upstream.port)
            )
            self._channels[upstream] = channel
        return channel

    def close(self) -> None:
        for channel in self._channels.values():
            if channel.transport is not None:
                channel.transport.close()
        self._channels.clear()

    async def query(self, request: DNSRecord, *, whole: bool) -> Answer:
        """Ask the upstreams ``request`` (its ID is replaced); ``whole``: retry a truncated
        UDP answer over TCP. Raises UpstreamError when no answer came within the budget."""
        if not self.upstreams:
            raise UpstreamError("no upstream resolver is configured")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        last: Answer | None = None
        for index, upstream in enumerate(self.upstreams):
            left = len(self.upstreams) - index
            budget = (deadline - loop.time()) / left
            if budget <= 0:
                break
            try:
                answer = await self._udp(upstream, request, budget)
                if whole and answer.record.header.tc:
                    answer = await self._tcp(upstream, request, deadline - loop.time())
            except (UpstreamError, OSError, TimeoutError):
                continue
            if answer.record.header.rcode in (RCODE.SERVFAIL, RCODE.REFUSED):
                last = answer
                continue
            return answer
        if last is not None:
            return last
        raise UpstreamError("no upstream resolver answered in time")

    async def _udp(self, upstream: Upstream, request: DNSRecord, budget: float) -> Answer:
        channel = await self._channel(upstream)
        query_id = secrets.randbelow(65536)
        while query_id in channel.pending:
            query_id = secrets.randbelow(65536)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        channel.pending[query_id] = (request, future)
        try:
            if channel.transport is None:
                raise UpstreamError("the upstream socket is closed")
            channel.transport.sendto(_with_id(request, query_id))
            return await asyncio.wait_for(future, budget)
        finally:
            channel.pending.pop(query_id, None)

    async def _tcp(self, upstream: Upstream, request: DNSRecord, budget: float) -> Answer:
        if budget <= 0:
            raise UpstreamError("no time left for TCP")
        async with asyncio.timeout(budget):
            reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
            try:
                wire = _with_id(request, secrets.randbelow(65536))
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                answer = _matching(await reader.readexactly(length), request)
            finally:
                writer.close()
        if answer is None:
            raise UpstreamError(f"{upstream} answered another question over TCP")
        return answer


def _with_id(request: DNSRecord, query_id: int) -> bytes:
    wire: bytes = request.pack()
    return struct.pack("!H", query_id) + wire[2:]


def _matching(data: bytes, request: DNSRecord) -> Answer | None:
    """``data`` parsed if it answers ``request``'s question (a truncated answer may come
    without its question: it carries nothing but the TC flag then)."""
    try:
        record = DNSRecord.parse(data)
    except (DNSError, ValueError, IndexError, struct.error):
        return None
    if not record.header.qr:
        return None
    if not record.questions and record.header.tc and not record.rr:
        return Answer(record, data)
    if len(record.questions) != 1 or record.q != request.q:
        return None
    return Answer(record, data)
