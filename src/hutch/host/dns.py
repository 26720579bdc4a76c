"""The DNS server of private networks: each sandbox asks it for its peers by name.

One UDP server per hutch instance, on a port of its own. A sandbox's resolver points at
the host end of its link (port 53); the firewall redirects that to this server, keeping
the sandbox's address as the source, and that address is how the asker is known. It
answers A queries for the names of the sandboxes the asker shares a network with, with
TTL 0 so nothing goes stale; everything else is NXDOMAIN, and anyone who is not a sandbox
of this host is REFUSED. There is no recursion: sandboxes have no internet to resolve for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from dnslib import QTYPE, RCODE, RR, A, DNSError, DNSRecord

__all__ = ["DnsServer", "Resolver"]

log = logging.getLogger(__name__)

Resolver = Callable[[str, str], Awaitable[list[str] | None]]
"""``(asker_ip, name) -> addresses``; None when the asker is not a sandbox of this host."""


class DnsServer(asyncio.DatagramProtocol):
    def __init__(self, resolve: Resolver) -> None:
        self._resolve = resolve
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str = "0.0.0.0", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self.port

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(data, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            request = DNSRecord.parse(data)
        except (DNSError, ValueError, IndexError):
            return  # not DNS: say nothing
        reply = request.reply(ra=0)
        try:
            reply.header.rcode = await self._rcode(request, reply, addr[0])
        except Exception:
            log.warning("answering a DNS query failed", exc_info=True)
            reply.header.rcode = RCODE.SERVFAIL
        if self._transport is not None:
            self._transport.sendto(reply.pack(), addr)

    async def _rcode(self, request: DNSRecord, reply: DNSRecord, asker: str) -> int:
        if request.header.opcode != 0 or len(request.questions) != 1:
            return int(RCODE.NOTIMP)
        question = request.q
        labels = [label.decode(errors="replace").lower() for label in question.qname.label]
        addresses = await self._resolve(asker, labels[0]) if len(labels) == 1 else []
        if addresses is None:
            return int(RCODE.REFUSED)
        if not addresses:
            return int(RCODE.NXDOMAIN)
        if question.qtype in (QTYPE.A, QTYPE.ANY):
            for address in addresses:
                reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(address), ttl=0))
        return int(RCODE.NOERROR)  # AAAA and the rest: the name exists, with no such record
