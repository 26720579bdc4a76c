"""hutch's DNS server: sandboxes' only resolver, which is also how domain rules work.

One server per hutch instance, UDP and TCP on one port of its own. A sandbox's resolver
is the host end of its link (port 53); the firewall redirects port 53 over UDP and TCP
to this server, whatever address the sandbox asked (another resolver's included), keeping
the sandbox's address as the source: that address is how the asker is known.

- **Private-network names** (one label, ``brave-otter``) are answered here, from the store:
  the peers the asker shares a network with, TTL 0; a single label that is no peer is
  NXDOMAIN, never forwarded. Anyone who is not a sandbox of this host is REFUSED.
- **Every other name** is forwarded to the upstream resolvers (:mod:`hutch.host.dns_upstream`,
  ``HUTCH_DNS_UPSTREAM``) and their answer is passed back as it came, unless the asker's
  egress policy says otherwise (:class:`DnsEgress`, given by the egress service):

  * an address that is no running sandbox of this host: REFUSED (not an open resolver);
  * an open sandbox: forwarded, unfiltered;
  * a restricted sandbox (one real rule or more): a name that matches none of its domain
    rules (``host``, ``host:port``, ``*.host``) is NXDOMAIN at once, and nothing is sent
    upstream. A matching name is forwarded, and the IPv4 addresses of the answer are put
    into the sandbox's allowed set, with the matching rules' ports, for max(TTL, 60 s),
    *before* the answer is sent: the first connection after the lookup passes.

**CNAME chains**: the name the sandbox asked decides. When it matches a rule, the final
addresses of the chain are allowed whatever the intermediate names are (``cdn.example.com``
→ ``edge.some-cdn.net`` → A), since a CDN's names are not the user's business; asking for
an intermediate name directly still gets NXDOMAIN unless a rule matches it. Only A records
owned by a name of the chain count (other records in the answer are passed on but allow
nothing). The TTL used is the smallest of the chain's.

**Shared addresses**: the kernel filters addresses, not names. When an allowed name
resolves to an address another name also uses (virtual hosting, a CDN), that address is
allowed with the port of the rule that matched, so the other name's site is reachable at
that address too, by whoever knows the address; asking for the other name is still
NXDOMAIN. This is the limit of filtering at layer 3 (CreateOS's IP rules have it too);
HTTP Host headers and TLS SNI are not inspected.

A reply is never answered, queries with no question, several questions or another opcode
get NOTIMP, and datagrams that are not DNS get no answer at all. At most
:data:`MAX_IN_FLIGHT` queries are worked on at once (more are dropped: the asker retries)
and :data:`MAX_TCP_CONNECTIONS` TCP connections are open, each idle for at most
:data:`TCP_IDLE_S` seconds. Answers are not cached (the upstream resolvers do that, and
an answer's TTL then never outlives the addresses it allowed), but the same question from
the same sandbox while one is on its way (a resolver's retry) joins it, and a kernel
update is skipped when the addresses are already allowed for longer than the new
answer's TTL under the same policy: a name looked up again and again costs one kernel
update per allowance.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from dnslib import QTYPE, RCODE, RR, A, DNSError, DNSLabel, DNSRecord

from hutch.host.dns_upstream import Forwarder, UpstreamError
from hutch.host.egress import is_ipv4

__all__ = [
    "MAX_IN_FLIGHT",
    "MAX_TCP_CONNECTIONS",
    "TCP_IDLE_S",
    "DnsEgress",
    "DnsServer",
    "DomainPolicy",
    "Resolver",
    "chain_addresses",
]

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 4096
MIN_ALLOWED_S = 60
"""The egress layer keeps a resolved address at least this long (hutch.host.egress)."""
KERNEL_WAIT_S = 3.0
"""How long an answer waits for the kernel to take its addresses, past the upstream's
budget, before the asker gets SERVFAIL."""
MAX_RECENT = 65536
MAX_TCP_CONNECTIONS = 512
TCP_IDLE_S = 10.0

Resolver = Callable[[str, str], Awaitable[list[str] | None]]
"""``(asker_ip, name) -> addresses``; None when the asker is not a sandbox of this host."""


class DomainPolicy(Protocol):
    """What the DNS server needs of a sandbox's egress policy (:mod:`hutch.core.egress`)."""

    @property
    def restricted(self) -> bool: ...

    def ports_for(self, name: str) -> frozenset[int | None] | None:
        """None: no domain rule matches ``name``; else the ports (None: every port)."""


AllowResolved = Callable[..., Awaitable[bool]]
"""``(sandbox_ip, addresses, port, ttl_s, *, name) -> bool``: the egress layer's
``allow_resolved`` (:mod:`hutch.host.egress`); the elements are in the kernel when it
returns."""


@dataclass(frozen=True, kw_only=True)
class DnsEgress:
    """The egress service's two answers the DNS server asks for on each forwarded query."""

    policy_for_ip: Callable[[str], DomainPolicy | None]
    """The policy of the running sandbox with this link address; None for anyone else."""
    allow_resolved: AllowResolved


class DnsServer:
    def __init__(
        self,
        resolve: Resolver,
        *,
        forwarder: Forwarder | None = None,
        kernel_wait_s: float = KERNEL_WAIT_S,
    ) -> None:
        self._resolve = resolve
        self._kernel_wait_s = kernel_wait_s
        self.forwarder = forwarder
        """None: nothing is forwarded (every name but a peer's is NXDOMAIN)."""
        self.egress: DnsEgress | None = None
        """Set once the egress service exists; until then only peers' names are answered."""
        self._udp: _Udp | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._forwarding: dict[tuple[str, str, int, int, bool], asyncio.Future[bytes]] = {}
        self._recent = _RecentAllows()
        self._tcp_open = 0
        self.port = 0

    async def start(self, host: str = "0.0.0.0", port: int = 0) -> int:
        """Listen on UDP and TCP on one port (a free one for ``port`` 0); return it."""
        loop = asyncio.get_running_loop()
        for _ in range(20):
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(host, port)
            )
            chosen = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, host, chosen)
            except OSError:
                transport.close()
                if port:
                    raise
                continue  # that port is taken for TCP: another free one
            self._udp = protocol
            self.port = int(chosen)
            return self.port
        raise OSError("no port free for both UDP and TCP")

    def stop(self) -> None:
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        for task in self._tasks:
            task.cancel()
        for shared in self._forwarding.values():
            shared.cancel()
        if self.forwarder is not None:
            self.forwarder.close()

    # -- transports -------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> bool:
        if len(self._tasks) >= MAX_IN_FLIGHT:
            return False
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _answer_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        wire = await self.answer(data, addr[0], tcp=False)
        if wire is not None and self._udp is not None and self._udp.transport is not None:
            self._udp.transport.sendto(wire, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tcp_open >= MAX_TCP_CONNECTIONS:
            writer.close()
            return
        self._tcp_open += 1
        asker = writer.get_extra_info("peername")[0]
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_S):
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    data = await reader.readexactly(length)
                wire = await self.answer(data, asker, tcp=True)
                if wire is None:
                    break  # not DNS: hang up
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tcp_open -= 1
            writer.close()

    # -- answers ----------------------------------------------------------------------------

    async def answer(self, data: bytes, asker: str, *, tcp: bool) -> bytes | None:
        """The bytes to send back to ``asker`` for the query ``data``; None: say nothing."""
        try:
            request = DNSRecord.parse(data)
        except (DNSError, ValueError, IndexError, struct.error):
            return None
        if request.header.qr:
            return None  # a reply: answering it could start a loop
        reply = request.reply(ra=int(self.forwarder is not None))
        reply.header.aa = 0
        try:
            forwarded = await self._answer(request, reply, asker, tcp=tcp)
        except Exception:
            log.warning("answering a DNS query failed", exc_info=True)
            reply = request.reply(ra=int(self.forwarder is not None))
            reply.header.aa = 0
            reply.header.rcode = RCODE.SERVFAIL
            forwarded = None
        if forwarded is not None:
            return forwarded
        wire: bytes = reply.pack()
        return wire

    async def _answer(
        self, request: DNSRecord, reply: DNSRecord, asker: str, *, tcp: bool
    ) -> bytes | None:
        """Fill ``reply`` and return None, or return the upstream's answer as it goes out."""
        if request.header.opcode != 0 or len(request.questions) != 1:
            reply.header.rcode = RCODE.NOTIMP
            return None
        question = request.q
        labels = [label.decode(errors="replace").lower() for label in question.qname.label]
        if len(labels) == 1:
            reply.header.rcode = await self._peer(question, reply, asker, labels[0])
            return None
        name = ".".join(labels)
        egress = self.egress
        if egress is None or self.forwarder is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return None
        policy = egress.policy_for_ip(asker)
        if policy is None:
            reply.header.rcode = RCODE.REFUSED
            return None
        ports = policy.ports_for(name) if policy.restricted else None
        if policy.restricted and ports is None:
            reply.header.rcode = RCODE.NXDOMAIN  # no rule names it: nothing goes upstream
            return None
        # A resolver that retries (or asks A and AAAA at once, or many sandboxes' worth of
        # the same query) joins the lookup already on its way instead of starting another.
        key = (asker, name, int(question.qtype), int(question.qclass), tcp)
        shared = self._forwarding.get(key)
        if shared is None:
            shared = asyncio.ensure_future(
                self._forward(request, asker, name, policy, ports, egress, tcp=tcp)
            )
            self._forwarding[key] = shared
            shared.add_done_callback(lambda done: self._forwarded(key, done))
        try:
            # Bounded even when the kernel is slow to take the addresses: the asker gets
            # SERVFAIL (and retries) rather than a hung query; the update goes on, and the
            # retry's lookup finds it done.
            async with asyncio.timeout(self.forwarder.timeout_s + self._kernel_wait_s):
                wire = await asyncio.shield(shared)
        except (UpstreamError, TimeoutError):
            reply.header.rcode = RCODE.SERVFAIL
            return None
        query_id: int = request.header.id
        return query_id.to_bytes(2, "big") + wire[2:]

    def _forwarded(self, key: tuple[str, str, int, int, bool], done: asyncio.Future[bytes]) -> None:
        if self._forwarding.get(key) is done:
            del self._forwarding[key]
        if not done.cancelled():
            done.exception()  # seen by its waiters, if any are left; never "unretrieved"

    async def _forward(
        self,
        request: DNSRecord,
        asker: str,
        name: str,
        policy: DomainPolicy,
        ports: frozenset[int | None] | None,
        egress: DnsEgress,
        *,
        tcp: bool,
    ) -> bytes:
        """Ask upstream; for a restricted sandbox, put the answer's addresses in its allowed
        set first. The answer as the upstream sent it (any ID); raises UpstreamError."""
        assert self.forwarder is not None
        answer = await self.forwarder.query(request, whole=tcp)
        if ports is None:
            return answer.wire
        addresses, ttl = chain_addresses(answer.record, request.q.qname)
        if not addresses:
            return answer.wire
        loop = asyncio.get_running_loop()
        for port in sorted(ports, key=lambda p: -1 if p is None else p):
            key = (asker, port, tuple(addresses))
            now = loop.time()
            if self._recent.covers(key, policy, now + ttl):
                continue  # in the kernel for longer than the asker will keep this answer
            if not await egress.allow_resolved(asker, addresses, port, ttl, name=name):
                log.debug("%s asked for %s but has no egress policy here", asker, name)
                break
            self._recent.remember(key, policy, now + max(ttl, MIN_ALLOWED_S))
        return answer.wire

    async def _peer(self, question: Any, reply: DNSRecord, asker: str, name: str) -> int:
        addresses = await self._resolve(asker, name)
        if addresses is None:
            return int(RCODE.REFUSED)
        if not addresses:
            return int(RCODE.NXDOMAIN)
        if question.qtype in (QTYPE.A, QTYPE.ANY):
            for address in addresses:
                reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(address), ttl=0))
        return int(RCODE.NOERROR)  # AAAA and the rest: the name exists, with no such record


def chain_addresses(record: DNSRecord, qname: DNSLabel) -> tuple[list[str], int]:
    """The IPv4 addresses ``qname`` resolves to in ``record``'s answer section, following
    CNAMEs, and the smallest TTL on the way (0 when there is no address)."""
    cnames: dict[str, tuple[str, int]] = {}
    owned: dict[str, list[tuple[str, int]]] = {}
    for rr in record.rr:
        owner = _key(rr.rname)
        if rr.rtype == QTYPE.CNAME:
            cnames.setdefault(owner, (_key(rr.rdata.label), rr.ttl))
        elif rr.rtype == QTYPE.A and is_ipv4(str(rr.rdata)):
            owned.setdefault(owner, []).append((str(rr.rdata), rr.ttl))
    name, ttls, seen = _key(qname), [], set()
    addresses: set[str] = set()
    while name not in seen:
        seen.add(name)
        for address, ttl in owned.get(name, []):
            addresses.add(address)
            ttls.append(ttl)
        if name not in cnames:
            break
        name, ttl = cnames[name]
        ttls.append(ttl)
    if not addresses:
        return [], 0
    return sorted(addresses), min(ttls)


def _key(label: object) -> str:
    return str(label).lower().rstrip(".")


class _RecentAllows:
    """What this server put into sandboxes' allowed sets lately, and until when (counted
    from before the kernel was asked, so never later than the kernel's own timeout), so a
    name looked up again and again costs one kernel update per allowance, not one per
    lookup. An entry counts only for the very policy object it was made under: a new
    policy (a PUT, a restart of the sandbox) may have emptied the sets."""

    def __init__(self) -> None:
        self._until: dict[tuple[str, int | None, tuple[str, ...]], tuple[object, float]] = {}

    def covers(
        self, key: tuple[str, int | None, tuple[str, ...]], policy: object, until: float
    ) -> bool:
        entry = self._until.get(key)
        return entry is not None and entry[0] is policy and until <= entry[1]

    def remember(
        self, key: tuple[str, int | None, tuple[str, ...]], policy: object, until: float
    ) -> None:
        if len(self._until) >= MAX_RECENT:
            self._until.clear()  # rare, and only costs kernel updates that were skippable
        self._until[key] = (policy, until)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        work = self.server._answer_udp(data, addr)
        if not self.server._spawn(work):
            work.close()  # too busy: dropped, the asker retries
