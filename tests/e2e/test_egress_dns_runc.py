"""Sandboxes' DNS as the way to the internet and as the enforcement of domain rules, against
real runc sandboxes through a real ``hutch serve`` whose upstream resolver is the tests'
own (tests.support.internet): nothing leaves this machine.

What a user sees: names resolve and installs work in an open sandbox; a restricted one
gets NXDOMAIN for every name its rules do not list (and nothing is asked upstream), and an
allowed name's address opens only after the lookup, on the rule's ports; DNS sent to any
other resolver is still answered by hutch.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_sandboxes_runc import create, served_by, sh
from tests.support.internet import HTTP_PORTS, Internet
from tests.support.server import HutchProcess

# What curl's exit codes mean here: 6 could not resolve the host, 7 connection refused
# (the firewall's TCP reset: refused at once, not a hang), 0 reached.
RESOLVE_FAILED, REFUSED = 6, 7


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, images: Path, internet: Internet
) -> Iterator[tuple[HutchProcess, httpx.Client]]:
    home = tmp_path_factory.mktemp("egress-dns") / "home"
    env = {"HUTCH_DNS_UPSTREAM": internet.resolver, "HUTCH_MAX_RUNNING_PER_USER": "50"}
    with served_by(home, images, user="resolver", env=env) as served:
        yield served


@pytest.fixture
def api(served: tuple[HutchProcess, httpx.Client]) -> httpx.Client:
    return served[1]


def set_rules(api: httpx.Client, box: dict[str, Any], rules: list[str]) -> None:
    response = api.put(f"/v1/sandboxes/{box['id']}/egress", json={"egress": rules})
    assert response.status_code == 200, response.text


def curl(api: httpx.Client, box: dict[str, Any], url: str, *extra: str) -> tuple[int, str, str]:
    """``(exit code, body, stderr)`` of ``curl -sS URL`` inside ``box``."""
    args = " ".join(extra)
    result = sh(api, box, f"curl -sS -m 20 {args} {url}")
    return int(result["exit_code"]), str(result["stdout"]), str(result["stderr"])


def reached(api: httpx.Client, box: dict[str, Any], url: str, *extra: str) -> dict[str, Any]:
    code, body, err = curl(api, box, url, *extra)
    assert code == 0, f"{url}: curl exit {code}: {err}"
    who: dict[str, Any] = json.loads(body)
    return who


def lookup(api: httpx.Client, box: dict[str, Any], name: str) -> tuple[int, str]:
    """``getent ahostsv4 NAME`` inside ``box``: its exit code and the first address."""
    result = sh(api, box, f"getent ahostsv4 {name}")
    first = str(result["stdout"]).split()
    return int(result["exit_code"]), first[0] if first else ""


ASK = r"""
import socket, struct, sys
server, name, tcp = sys.argv[1], sys.argv[2], sys.argv[3] == "tcp"
query = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
query += struct.pack("!HH", 1, 1)
if tcp:
    s = socket.create_connection((server, 53), timeout=10)
    s.sendall(struct.pack("!H", len(query)) + query)
    data = b""
    while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
        data += s.recv(4096)
    reply = data[2:]
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.sendto(query, (server, 53))
    reply = s.recv(4096)
answers = struct.unpack("!H", reply[6:8])[0]
address = socket.inet_ntoa(reply[-4:]) if answers else "-"
print(reply[3] & 15, address)
"""


def ask(
    api: httpx.Client, box: dict[str, Any], server: str, name: str, *, tcp: bool = False
) -> tuple[int, str]:
    """Send an A query for ``name`` to ``server``:53 from inside ``box`` (raw UDP or TCP,
    no resolver library): ``(rcode, last A address or "-")``."""
    sh(api, box, f"cat > /tmp/ask.py <<'EOF'\n{ASK}\nEOF")
    result = sh(api, box, f"python3 /tmp/ask.py {server} {name} {'tcp' if tcp else 'udp'}")
    assert result["exit_code"] == 0, result
    rcode, address = str(result["stdout"]).split()
    return int(rcode), address


def asked_upstream(internet: Internet, name: str) -> bool:
    return any(query.name == name for query in internet.dns_queries())


def test_an_open_sandbox_reaches_every_test_host_by_name(
    api: httpx.Client, internet: Internet
) -> None:
    box = create(api)
    names = ["example.test", "www.example.test", "api.example.test", "evil.test",
             "edge.evil.test", "files.pythonhosted.test", "multi.example.test"]  # fmt: skip
    for name in names:
        for port in HTTP_PORTS:
            if port == 25:
                continue  # the platform deny set refuses it (tested with the egress rules)
            who = reached(api, box, f"http://{name}:{port}/")
            assert who["address"] in internet.addresses(name)
            assert who["port"] == port
            assert who["host"] == (name if port == 80 else f"{name}:{port}")
    # A CNAME is followed by the sandbox's resolver like any other answer.
    assert reached(api, box, "http://cdn.example.test/")["address"] == internet.address(
        "edge.evil.test"
    )
    code, _, err = curl(api, box, "http://nowhere.test/")
    assert code == RESOLVE_FAILED and "Could not resolve host: nowhere.test" in err


def test_pip_installs_from_the_test_index(api: httpx.Client, internet: Internet) -> None:
    box = create(api)
    assert sh(api, box, "python3 -m venv /tmp/venv")["exit_code"] == 0
    install = sh(
        api,
        box,
        f"/tmp/venv/bin/pip install --no-cache-dir --index-url {internet.pypi_index} "
        "--trusted-host pypi.test hutch-hello",
    )
    assert install["exit_code"] == 0, install
    assert "Successfully installed hutch-dep-1.0.0 hutch-hello-1.0.0" in install["stdout"]
    run = sh(api, box, "/tmp/venv/bin/python -c 'import hutch_hello; print(hutch_hello.hello())'")
    assert run["stdout"] == "hutch-hello and hutch-dep says hi\n"


def test_npm_installs_a_package_with_a_dependency(api: httpx.Client, internet: Internet) -> None:
    box = create(api, rootfs="node")
    install = sh(
        api,
        box,
        "mkdir -p /tmp/app && cd /tmp/app && npm init -y >/dev/null && "
        f"npm install --no-audit --no-fund --registry {internet.npm_registry} hutch-hello",
    )
    assert install["exit_code"] == 0, install
    run = sh(api, box, "cd /tmp/app && node -e \"console.log(require('hutch-hello')())\"")
    assert run["stdout"] == "hutch-hello and hutch-dep says hi\n"
    assert sh(api, box, "test -f /tmp/app/node_modules/hutch-dep/package.json")["exit_code"] == 0


def test_domain_rules_let_through_exactly_what_they_name(
    api: httpx.Client, internet: Internet
) -> None:
    box = create(api)
    set_rules(api, box, ["example.test", "api.example.test:8080", "*.evil.test"])
    # host: every port.
    for port in (80, 443, 8080):
        assert reached(api, box, f"http://example.test:{port}/")["port"] == port
    # host:port: that port only; the others are refused at once.
    assert reached(api, box, "http://api.example.test:8080/")["port"] == 8080
    for port in (80, 443):
        code, _, _ = curl(api, box, f"http://api.example.test:{port}/")
        assert code == REFUSED
    # *.host: subdomains, not the apex.
    assert reached(api, box, "http://edge.evil.test/")["address"] == internet.address(
        "edge.evil.test"
    )
    for name in ("evil.test", "www.example.test", "pypi.test"):
        code, _, err = curl(api, box, f"http://{name}/")
        assert code == RESOLVE_FAILED and f"Could not resolve host: {name}" in err
        assert lookup(api, box, name) == (2, "")  # getent: not found
    # An unlisted name is answered NXDOMAIN by hutch without asking anyone.
    unlisted = f"u{secrets.token_hex(4)}.example.test"
    assert lookup(api, box, unlisted) == (2, "")
    listed = f"u{secrets.token_hex(4)}.evil.test"
    assert lookup(api, box, listed) == (2, "")  # forwarded (it matches), and not there
    assert not asked_upstream(internet, unlisted)
    assert asked_upstream(internet, listed)
    # The platform deny set holds for an allowed name: port 25 stays shut.
    code, _, _ = curl(api, box, "http://example.test:25/")
    assert code == REFUSED


def test_an_allowed_names_address_opens_only_after_the_lookup(
    api: httpx.Client, internet: Internet
) -> None:
    box = create(api)
    set_rules(api, box, ["www.example.test:8080", "short.example.test"])
    www = internet.address("www.example.test")
    code, _, _ = curl(api, box, f"http://{www}:8080/")
    assert code == REFUSED
    assert lookup(api, box, "www.example.test") == (0, www)
    assert reached(api, box, f"http://{www}:8080/")["address"] == www
    code, _, _ = curl(api, box, f"http://{www}:80/")  # the rule's port only
    assert code == REFUSED
    # A TTL of 2 s still keeps the address open for at least 60 s.
    short = internet.address("short.example.test")
    assert lookup(api, box, "short.example.test") == (0, short)
    time.sleep(3)
    assert reached(api, box, f"http://{short}/")["address"] == short


def test_a_cname_chain_is_judged_by_the_name_asked(api: httpx.Client, internet: Internet) -> None:
    box = create(api)
    set_rules(api, box, ["cdn.example.test"])
    edge = internet.address("edge.evil.test")
    assert reached(api, box, "http://cdn.example.test/")["address"] == edge
    # The chain's target by its own name is not listed.
    code, _, _ = curl(api, box, "http://edge.evil.test/")
    assert code == RESOLVE_FAILED
    # A chain that starts at an unlisted name stops at once, wherever it would lead.
    assert lookup(api, box, "alias.evil.test") == (2, "")
    assert not asked_upstream(internet, "alias.evil.test")


def test_a_shared_address_is_open_to_both_names_once_one_resolved(
    api: httpx.Client, internet: Internet
) -> None:
    box = create(api)
    set_rules(api, box, ["example.test:8080"])
    shared = internet.address("example.test")
    assert internet.address("twin.evil.test") == shared
    assert lookup(api, box, "example.test") == (0, shared)
    # twin.evil.test has no rule: its name does not resolve...
    assert lookup(api, box, "twin.evil.test") == (2, "")
    # ...but its address is the one example.test opened (port 8080), as documented.
    who = reached(
        api, box, "http://twin.evil.test:8080/", "--resolve", f"twin.evil.test:8080:{shared}"
    )
    assert (who["address"], who["host"]) == (shared, "twin.evil.test:8080")


def test_dns_to_another_resolver_is_answered_by_hutch(
    api: httpx.Client, internet: Internet
) -> None:
    open_box, closed_box = create(api), create(api)
    set_rules(api, closed_box, ["example.test"])
    before = [q for q in internet.dns_queries() if q.resolver == internet.liar]
    real = internet.address("example.test")
    hutch = sh(api, open_box, "awk '/^nameserver/{print $2}' /etc/resolv.conf")["stdout"].strip()
    for tcp in (False, True):
        # The outside resolver would say internet.lie; the sandbox gets hutch's answer.
        assert ask(api, open_box, internet.liar, "example.test", tcp=tcp) == (0, real)
        assert ask(api, open_box, hutch, "example.test", tcp=tcp) == (0, real)
        assert ask(api, closed_box, internet.liar, "example.test", tcp=tcp) == (0, real)
        assert ask(api, closed_box, internet.liar, "evil.test", tcp=tcp) == (3, "-")  # NXDOMAIN
        # Any address at all (one the test internet routes, where nobody listens).
        nobody = str(internet.network[200])
        assert ask(api, open_box, nobody, "www.example.test", tcp=tcp) == (
            0,
            internet.address("www.example.test"),
        )
    after = [q for q in internet.dns_queries() if q.resolver == internet.liar]
    assert after == before, "the outside resolver was never asked"


FLOOD = r"""
import random, socket, struct, sys
resolver = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
rng = random.Random(14)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.005)
def query(name, qtype):
    head = struct.pack("!HHHHHH", rng.getrandbits(16), 0x0100, 1, 0, 0, 0)
    body = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return head + body + struct.pack("!HH", qtype, 1)
for i in range(1200):
    kind = i % 4
    if kind == 0:  # garbage
        data = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 5, 12, 40, 600])))
    elif kind == 1:  # a name the upstream never answers: SERVFAIL after the budget
        data = query(f"q{i}.blackhole.test", 1)
    elif kind == 2:  # an answer too big for UDP: truncated
        data = query("big.test", 16)
    else:
        data = query("example.test", 1)
    s.sendto(data, (resolver, 53))
    try:
        s.recv(4096)
    except OSError:
        pass
print("sent")
"""


def test_a_flood_of_garbage_and_stuck_lookups_does_not_stop_forwarding(
    served: tuple[HutchProcess, httpx.Client], internet: Internet
) -> None:
    server, api = served
    box = create(api)
    sh(api, box, f"cat > /tmp/flood.py <<'EOF'\n{FLOOD}\nEOF")
    flooded = sh(api, box, "python3 /tmp/flood.py", timeout_secs=300)
    assert flooded["stdout"] == "sent\n", flooded
    # The server keeps answering (a loaded machine may need the resolver's retries).
    for _ in range(10):
        if lookup(api, box, "www.example.test") == (0, internet.address("www.example.test")):
            break
    else:
        pytest.fail("www.example.test no longer resolves after the flood")
    assert ask(api, box, internet.liar, "example.test", tcp=True) == (
        0,
        internet.address("example.test"),
    )
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
