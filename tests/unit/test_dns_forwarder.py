"""hutch's DNS server as a forwarder, against a real dnslib upstream on loopback (the
tests' own authoritative server, tests.support.upstream), with real egress policies
(hutch.core.egress) and a recording stand-in for the kernel's allowed set."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from hutch.core.egress import DenySet, EgressPolicy, parse_rules
from hutch.host.dns import DnsEgress, DnsServer, chain_addresses
from hutch.host.dns_upstream import (
    Forwarder,
    Upstream,
    UpstreamError,
    parse_upstreams,
    system_upstreams,
)
from hutch.settings import Settings
from tests.support.upstream import Dns, Zone

pytestmark = pytest.mark.anyio

SANDBOX, PEER, STRANGER = "10.89.0.2", "10.89.0.6", "192.0.2.7"
ZONE = {
    "example.test": {"a": ["198.18.0.20"], "ttl": 300},
    "www.example.test": {"a": ["198.18.0.21"], "ttl": 300},
    "short.example.test": {"a": ["198.18.0.23"], "ttl": 2},
    "multi.example.test": {"a": ["198.18.0.24", "198.18.0.25"], "ttl": 300},
    "edge.evil.test": {"a": ["198.18.0.31"], "ttl": 120},
    "cdn.example.test": {"cname": "edge.evil.test", "ttl": 30},
    "evil.test": {"a": ["198.18.0.30"], "ttl": 300},
    "big.test": {"txt": [f"{i:03d}-" + "t" * 60 for i in range(40)], "ttl": 300},
}
DENY = DenySet(link_pool=IPv4Network("10.89.0.0/16"), network_pool=IPv4Network("10.42.0.0/16"))


@dataclass
class Kernel:
    """Stands in for hutch.host.egress's allowed sets: records what would be added."""

    policies: dict[str, EgressPolicy] = field(default_factory=dict)
    added: list[tuple[str, tuple[str, ...], int | None, float, str]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def policy_for_ip(self, ip: str) -> EgressPolicy | None:
        return self.policies.get(ip)

    async def allow_resolved(
        self, sandbox_ip: str, addresses: Iterable[str], port: int | None, ttl_s: float,
        *, name: str = "",
    ) -> bool:  # fmt: skip
        await asyncio.sleep(0.05)  # the kernel takes a moment; the answer must wait for it
        self.added.append((sandbox_ip, tuple(addresses), port, ttl_s, name))
        self.events.append(f"allowed {name}")
        return sandbox_ip in self.policies

    def rules(self, ip: str, rules: Sequence[str] | None) -> None:
        self.policies[ip] = parse_rules(rules, deny=DENY)


@dataclass
class Upstreams:
    port: int
    log: Path

    def asked(self) -> list[str]:
        if not self.log.exists():
            return []
        return [line.split(" ")[1] for line in self.log.read_text().splitlines()]


async def _serve_dns(protocol: Dns) -> tuple[int, list[object]]:
    loop = asyncio.get_running_loop()
    for _ in range(20):
        transport, _ = await loop.create_datagram_endpoint(
            lambda: protocol, local_addr=("127.0.0.1", 0)
        )
        port = transport.get_extra_info("sockname")[1]
        try:
            server = await asyncio.start_server(protocol.serve_tcp, "127.0.0.1", port)
        except OSError:
            transport.close()
            continue
        return port, [transport, server]
    raise RuntimeError("no port")


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[Upstreams]:
    log = tmp_path / "queries.log"
    protocol = Dns(Zone(ZONE, ["blackhole.test"]), "127.0.0.1", log)
    port, closers = await _serve_dns(protocol)
    yield Upstreams(port, log)
    for closer in closers:
        closer.close()  # type: ignore[attr-defined]


async def _peers(asker: str, name: str) -> list[str] | None:
    if asker not in (SANDBOX, PEER):
        return None
    return [PEER] if name == "peer-one" else []


@pytest.fixture
async def kernel() -> Kernel:
    return Kernel()


@pytest.fixture
async def server(upstream: Upstreams, kernel: Kernel) -> AsyncIterator[DnsServer]:
    forwarder = Forwarder([Upstream("127.0.0.1", upstream.port)], timeout_s=1.0)
    dns = DnsServer(_peers, forwarder=forwarder)
    dns.egress = DnsEgress(policy_for_ip=kernel.policy_for_ip, allow_resolved=kernel.allow_resolved)
    yield dns
    dns.stop()


async def _ask(
    server: DnsServer, name: str, qtype: str = "A", *, asker: str = SANDBOX, tcp: bool = False
) -> DNSRecord:
    query = DNSRecord.question(name, qtype)
    wire = await server.answer(query.pack(), asker, tcp=tcp)
    assert wire is not None
    reply = DNSRecord.parse(wire)
    assert reply.header.id == query.header.id
    return reply


def _a(reply: DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A)


async def test_an_open_sandbox_gets_the_upstream_answer_unfiltered(
    server: DnsServer, kernel: Kernel, upstream: Upstreams
) -> None:
    kernel.rules(SANDBOX, None)
    assert _a(await _ask(server, "example.test")) == ["198.18.0.20"]
    assert _a(await _ask(server, "evil.test")) == ["198.18.0.30"]
    missing = await _ask(server, "nowhere.test")
    assert missing.header.rcode == RCODE.NXDOMAIN
    assert upstream.asked() == ["example.test", "evil.test", "nowhere.test"]
    assert kernel.added == []  # nothing to add: an open sandbox reaches every address


async def test_a_restricted_sandbox_gets_nxdomain_for_unlisted_names_and_nothing_goes_upstream(
    server: DnsServer, kernel: Kernel, upstream: Upstreams
) -> None:
    kernel.rules(SANDBOX, ["example.test"])
    for name in ("evil.test", "www.example.test", "nowhere.test"):
        for qtype in ("A", "AAAA", "TXT"):
            assert (await _ask(server, name, qtype)).header.rcode == RCODE.NXDOMAIN
    assert upstream.asked() == []
    assert kernel.added == []


async def test_a_listed_name_is_allowed_before_its_answer_leaves(
    upstream: Upstreams, kernel: Kernel
) -> None:
    kernel.rules(SANDBOX, ["example.test"])
    dns = DnsServer(
        _peers, forwarder=Forwarder([Upstream("127.0.0.1", upstream.port)], timeout_s=1)
    )
    dns.egress = DnsEgress(policy_for_ip=kernel.policy_for_ip, allow_resolved=kernel.allow_resolved)
    port = await dns.start("127.0.0.1")
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            kernel.events.append("answer arrived")
            answered.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
    kernel.policies["127.0.0.1"] = kernel.policies[SANDBOX]
    try:
        transport.sendto(DNSRecord.question("example.test").pack(), ("127.0.0.1", port))
        reply = DNSRecord.parse(await asyncio.wait_for(answered, 10))
    finally:
        transport.close()
        dns.stop()
    assert _a(reply) == ["198.18.0.20"]
    assert kernel.events == ["allowed example.test", "answer arrived"]
    assert kernel.added == [("127.0.0.1", ("198.18.0.20",), None, 300, "example.test")]


async def test_each_rule_form_allows_what_it_names_with_its_port(
    server: DnsServer, kernel: Kernel
) -> None:
    kernel.rules(SANDBOX, ["example.test:443", "*.example.test", "www.example.test:8080"])
    assert _a(await _ask(server, "example.test")) == ["198.18.0.20"]
    assert _a(await _ask(server, "multi.example.test")) == ["198.18.0.24", "198.18.0.25"]
    # www.example.test matches *.example.test (every port) and its own rule (8080):
    # every port covers 8080, so one entry for every port.
    assert _a(await _ask(server, "www.example.test")) == ["198.18.0.21"]
    assert (await _ask(server, "evil.test")).header.rcode == RCODE.NXDOMAIN
    assert [(ips, port) for _, ips, port, _, _ in kernel.added] == [
        (("198.18.0.20",), 443),
        (("198.18.0.24", "198.18.0.25"), None),
        (("198.18.0.21",), None),
    ]


async def test_the_apex_is_not_a_subdomain(server: DnsServer, kernel: Kernel) -> None:
    kernel.rules(SANDBOX, ["*.example.test"])
    assert (await _ask(server, "example.test")).header.rcode == RCODE.NXDOMAIN
    assert _a(await _ask(server, "WWW.Example.Test.")) == ["198.18.0.21"]


async def test_a_cname_chain_allows_its_final_addresses_when_the_asked_name_matched(
    server: DnsServer, kernel: Kernel
) -> None:
    kernel.rules(SANDBOX, ["cdn.example.test"])
    reply = await _ask(server, "cdn.example.test")
    assert [str(rr.rdata) for rr in reply.rr] == ["edge.evil.test.", "198.18.0.31"]
    # The smallest TTL of the chain (the CNAME's 30 s; the kernel keeps it at least 60 s).
    assert kernel.added == [(SANDBOX, ("198.18.0.31",), None, 30, "cdn.example.test")]
    # The chain's target asked directly is not listed.
    assert (await _ask(server, "edge.evil.test")).header.rcode == RCODE.NXDOMAIN


async def test_the_record_ttl_is_passed_to_the_kernel(server: DnsServer, kernel: Kernel) -> None:
    kernel.rules(SANDBOX, ["short.example.test"])
    reply = await _ask(server, "short.example.test")
    assert reply.rr[0].ttl == 2  # the sandbox sees the record's TTL unchanged
    assert kernel.added[0][3] == 2


async def test_peer_names_are_answered_here_and_never_forwarded(
    server: DnsServer, kernel: Kernel, upstream: Upstreams
) -> None:
    kernel.rules(SANDBOX, ["example.test"])
    assert _a(await _ask(server, "peer-one")) == [PEER]
    assert (await _ask(server, "nobody")).header.rcode == RCODE.NXDOMAIN
    assert (await _ask(server, "peer-one", asker=STRANGER)).header.rcode == RCODE.REFUSED
    assert upstream.asked() == []


async def test_a_stranger_is_refused_and_nothing_goes_upstream(
    server: DnsServer, upstream: Upstreams
) -> None:
    assert (await _ask(server, "example.test", asker=STRANGER)).header.rcode == RCODE.REFUSED
    assert upstream.asked() == []


async def test_a_truncated_answer_is_passed_on_over_udp_and_fetched_whole_over_tcp(
    server: DnsServer, kernel: Kernel
) -> None:
    kernel.rules(SANDBOX, None)
    over_udp = await _ask(server, "big.test", "TXT")
    assert over_udp.header.tc == 1
    over_tcp = await _ask(server, "big.test", "TXT", tcp=True)
    assert over_tcp.header.tc == 0
    assert len(over_tcp.rr) == 40


async def test_a_silent_upstream_gives_servfail_after_the_budget(
    server: DnsServer, kernel: Kernel
) -> None:
    kernel.rules(SANDBOX, None)
    reply = await asyncio.wait_for(_ask(server, "blackhole.test"), 30)
    assert reply.header.rcode == RCODE.SERVFAIL


async def test_an_unreachable_upstream_gives_servfail_and_the_next_one_is_tried(
    upstream: Upstreams, kernel: Kernel
) -> None:
    kernel.rules(SANDBOX, None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        dead = Upstream("127.0.0.1", hole.getsockname()[1])
    alone = DnsServer(_peers, forwarder=Forwarder([dead], timeout_s=1))
    alone.egress = DnsEgress(
        policy_for_ip=kernel.policy_for_ip, allow_resolved=kernel.allow_resolved
    )
    assert (await _ask(alone, "example.test")).header.rcode == RCODE.SERVFAIL
    both = DnsServer(
        _peers, forwarder=Forwarder([dead, Upstream("127.0.0.1", upstream.port)], timeout_s=2)
    )
    both.egress = alone.egress
    assert _a(await _ask(both, "example.test")) == ["198.18.0.20"]
    alone.stop()
    both.stop()


async def test_an_answer_to_another_question_is_ignored(kernel: Kernel) -> None:
    """A spoofer who guessed the ID but not the question loses to the real answer."""
    kernel.rules(SANDBOX, ["example.test"])
    loop = asyncio.get_running_loop()

    class Spoofer(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            query = DNSRecord.parse(data)
            fake = DNSRecord.question("example.test.evil")
            fake.header.id = query.header.id
            fake = fake.reply()
            fake.add_answer(RR("example.test.evil", QTYPE.A, rdata=A("198.18.0.66")))
            real = query.reply()
            real.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("198.18.0.20"), ttl=99))
            for reply in (fake, real):
                self.transport.sendto(reply.pack(), addr)  # type: ignore[attr-defined]

    transport, _ = await loop.create_datagram_endpoint(Spoofer, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    dns = DnsServer(_peers, forwarder=Forwarder([Upstream("127.0.0.1", port)], timeout_s=5))
    dns.egress = DnsEgress(policy_for_ip=kernel.policy_for_ip, allow_resolved=kernel.allow_resolved)
    try:
        assert _a(await _ask(dns, "example.test")) == ["198.18.0.20"]
    finally:
        transport.close()
        dns.stop()
    assert kernel.added == [(SANDBOX, ("198.18.0.20",), None, 99, "example.test")]


async def test_garbage_replies_and_odd_queries_are_handled(
    server: DnsServer, kernel: Kernel, upstream: Upstreams
) -> None:
    kernel.rules(SANDBOX, None)
    for junk in (b"", b"\x00", b"\xff" * 11, b"\x12\x34" + b"\x00" * 3, bytes(range(256)) * 4):
        assert await server.answer(junk, SANDBOX, tcp=False) is None
    reply = DNSRecord.question("example.test").reply()
    assert await server.answer(reply.pack(), SANDBOX, tcp=False) is None  # never answer a reply
    two = DNSRecord.question("example.test")
    two.add_question(DNSRecord.question("evil.test").q)
    wire = await server.answer(two.pack(), SANDBOX, tcp=False)
    assert wire is not None and DNSRecord.parse(wire).header.rcode == RCODE.NOTIMP
    assert upstream.asked() == []


async def test_tcp_and_udp_share_one_port(server: DnsServer, kernel: Kernel) -> None:
    kernel.rules("127.0.0.1", None)
    port = await server.start("127.0.0.1")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for name in ("example.test", "evil.test"):  # two queries on one connection
        wire = DNSRecord.question(name).pack()
        writer.write(struct.pack("!H", len(wire)) + wire)
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        assert _a(DNSRecord.parse(await reader.readexactly(length)))
    writer.close()
    query = DNSRecord.question("example.test")
    udp = await asyncio.to_thread(query.send, "127.0.0.1", port, timeout=10)
    assert _a(DNSRecord.parse(udp)) == ["198.18.0.20"]


def test_chain_addresses_follow_cnames_and_stop_at_loops() -> None:
    reply = DNSRecord.question("a.test").reply()
    reply.add_answer(*RR.fromZone("a.test. 50 CNAME b.test.\nb.test. 40 CNAME a.test."))
    reply.add_answer(*RR.fromZone("b.test. 70 A 198.18.0.9\nother.test. 10 A 198.18.0.10"))
    assert chain_addresses(reply, reply.q.qname) == (["198.18.0.9"], 40)
    assert chain_addresses(
        DNSRecord.question("x.test").reply(), DNSRecord.question("x").q.qname
    ) == ([], 0)


def test_upstreams_parse_and_come_from_resolv_conf(tmp_path: Path) -> None:
    assert parse_upstreams(" 198.18.0.53, 10.0.0.2:5353 ,[2001:db8::1]:54,2001:db8::2") == [
        Upstream("198.18.0.53", 53),
        Upstream("10.0.0.2", 5353),
        Upstream("2001:db8::1", 54),
        Upstream("2001:db8::2", 53),
    ]
    for bad in ("resolver.test", "1.2.3.4:0", "1.2.3.4:x", "[::1]x"):
        with pytest.raises(ValueError):
            parse_upstreams(bad)
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# c\nsearch x\nnameserver 10.255.255.53\nnameserver fe80::1%eth0\nnameserver bogus\n"
    )
    assert system_upstreams(conf) == [Upstream("10.255.255.53"), Upstream("fe80::1")]
    assert system_upstreams(tmp_path / "missing") == []


def test_the_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTCH_DNS_UPSTREAM", "198.18.0.53:99999")
    with pytest.raises(ValueError, match="port"):
        Settings()
    monkeypatch.setenv("HUTCH_DNS_UPSTREAM", "none")
    assert Settings().dns_upstream == "none"


async def test_no_upstream_configured_is_an_error() -> None:
    with pytest.raises(UpstreamError):
        await Forwarder([], timeout_s=1).query(DNSRecord.question("example.test"), whole=False)


async def test_a_repeated_lookup_updates_the_kernel_once_per_allowance(
    server: DnsServer, kernel: Kernel, upstream: Upstreams
) -> None:
    kernel.rules(SANDBOX, ["short.example.test", "example.test"])
    for _ in range(3):  # TTL 2 s: the 60 s the kernel keeps it covers every repeat
        assert _a(await _ask(server, "short.example.test")) == ["198.18.0.23"]
    assert upstream.asked() == ["short.example.test"] * 3  # nothing is cached
    assert [name for *_, name in kernel.added] == ["short.example.test"]
    # TTL 300 s: longer than what the kernel was told, so each answer renews it.
    for _ in range(2):
        await _ask(server, "example.test")
    assert [name for *_, name in kernel.added].count("example.test") == 2
    # New rules may have emptied the sets: the next lookup writes again.
    kernel.rules(SANDBOX, ["short.example.test"])
    await _ask(server, "short.example.test")
    assert [name for *_, name in kernel.added].count("short.example.test") == 2


async def test_the_same_query_at_once_is_asked_upstream_once(
    server: DnsServer, kernel: Kernel, upstream: Upstreams
) -> None:
    kernel.rules(SANDBOX, ["www.example.test"])
    replies = await asyncio.gather(*(_ask(server, "www.example.test") for _ in range(5)))
    assert all(_a(reply) == ["198.18.0.21"] for reply in replies)  # each with its own ID
    assert upstream.asked() == ["www.example.test"]
    assert len(kernel.added) == 1


async def test_a_closed_default_sandbox_resolves_nothing_but_its_peers(
    server: DnsServer, kernel: Kernel, upstream: Upstreams
) -> None:
    kernel.policies[SANDBOX] = parse_rules(None, deny=DENY, default_closed=True)
    assert (await _ask(server, "example.test")).header.rcode == RCODE.NXDOMAIN
    assert _a(await _ask(server, "peer-one")) == [PEER]
    assert upstream.asked() == []


async def test_a_kernel_that_does_not_answer_gives_servfail_not_a_hung_query(
    upstream: Upstreams, kernel: Kernel
) -> None:
    kernel.rules(SANDBOX, ["example.test", "www.example.test"])
    stuck = asyncio.Event()

    async def never(sandbox_ip: str, addresses: Iterable[str], port: int | None, ttl_s: float,
                    *, name: str = "") -> bool:  # fmt: skip
        if name == "example.test":
            await stuck.wait()
        return await kernel.allow_resolved(sandbox_ip, addresses, port, ttl_s, name=name)

    forwarder = Forwarder([Upstream("127.0.0.1", upstream.port)], timeout_s=0.5)
    dns = DnsServer(_peers, forwarder=forwarder, kernel_wait_s=0.5)
    dns.egress = DnsEgress(policy_for_ip=kernel.policy_for_ip, allow_resolved=never)
    try:
        assert (await _ask(dns, "example.test")).header.rcode == RCODE.SERVFAIL
        assert _a(await _ask(dns, "www.example.test")) == ["198.18.0.21"]  # others go on
        stuck.set()  # the kernel catches up: the next lookup is answered
        assert _a(await _ask(dns, "example.test")) == ["198.18.0.20"]
    finally:
        dns.stop()
