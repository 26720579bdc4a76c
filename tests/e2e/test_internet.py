"""The tests' small internet itself: what the egress tests stand on must hold."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from dnslib import QTYPE, DNSRecord

from tests.support.internet import BIG_TXT, BLACKHOLE, HTTP_PORTS, ZONE, Internet


def _ask(server: str, name: str, qtype: str = "A", *, tcp: bool = False) -> DNSRecord:
    return DNSRecord.parse(DNSRecord.question(name, qtype).send(server, 53, tcp=tcp, timeout=5))


def _routes_and_namespaces() -> str:
    return subprocess.run(
        "ip route; ip netns list", shell=True, capture_output=True, text=True, check=True
    ).stdout


def test_every_name_resolves_and_every_server_says_who_it_is(internet: Internet) -> None:
    for name in ZONE:
        answer = _ask(internet.resolver, name)
        addresses = [str(rr.rdata) for rr in answer.rr if rr.rtype == QTYPE.A]
        assert addresses == internet.addresses(name), name
        for address in addresses:
            for port in HTTP_PORTS:
                if name in ("pypi.test", "registry.npm.test") and port == 80:
                    continue
                who = httpx.get(f"http://{address}:{port}/", timeout=10).json()
                assert (who["address"], who["port"]) == (address, port)
    wild = _ask(internet.resolver, "any-name.wild.test")
    assert [str(rr.rdata) for rr in wild.rr] == internet.addresses("any-name.wild.test")
    assert _ask(internet.resolver, "a.b.wild.test").header.rcode == 3  # one label deep
    cname = _ask(internet.resolver, "cdn.example.test")
    assert [str(rr.rdata) for rr in cname.rr] == [
        "edge.evil.test.",
        internet.address("edge.evil.test"),
    ]
    assert _ask(internet.resolver, "nope.test").header.rcode == 3  # NXDOMAIN
    assert _ask(internet.liar, "example.test").rr[0].rdata.__str__() == internet.lie
    assert _ask(internet.resolver, BIG_TXT, "TXT").header.tc == 1
    assert len(_ask(internet.resolver, BIG_TXT, "TXT", tcp=True).rr) == 40
    with pytest.raises(TimeoutError):
        DNSRecord.question(BLACKHOLE).send(internet.resolver, 53, timeout=0.5)
    seen = {(query.name, query.qtype) for query in internet.dns_queries()}
    assert ("nope.test", "A") in seen and (BLACKHOLE, "A") in seen


def test_the_registries_serve_their_packages(internet: Internet) -> None:
    index = httpx.get(f"http://{internet.address('pypi.test')}/simple/hutch-hello/", timeout=10)
    assert "hutch_hello-1.0.0-py3-none-any.whl" in index.text
    packument = httpx.get(
        f"http://{internet.address('registry.npm.test')}/hutch-hello",
        headers={"Host": "registry.npm.test"},
        timeout=10,
    ).json()
    assert packument["versions"]["1.0.0"]["dependencies"] == {"hutch-dep": "^1.0.0"}


def test_a_hosted_address_is_gone_after_its_block_even_on_failure(internet: Internet) -> None:
    address = internet.spare_address("rfc1918")
    with (
        pytest.raises(RuntimeError, match="boom"),
        internet.host_address(address, (80, 25)) as hosted,
    ):
        assert httpx.get(hosted.url(25), timeout=10).json()["address"] == address
        assert address in _routes_and_namespaces()
        raise RuntimeError("boom")
    assert address not in _routes_and_namespaces()
    with pytest.raises(ValueError, match="metadata"), internet.host_address("169.254.169.254"):
        pass


def test_a_stopped_internet_leaves_no_route_namespace_or_process(tmp_path: Path) -> None:
    net = Internet(tmp_path)
    try:
        net.start()
        prefix = str(net.network)
        assert prefix in _routes_and_namespaces()
        procs = [proc.pid for proc in net._procs]
    finally:
        net.stop()
    left = _routes_and_namespaces()
    assert prefix not in left and f"htnet-{net.slot:02d}-" not in left
    assert all(not Path(f"/proc/{pid}").exists() for pid in procs)
