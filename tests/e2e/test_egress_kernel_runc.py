"""Egress in the host kernel (issue 14), with real packets from real runc sandboxes through a
real ``hutch serve``, to the tests' small internet (tests.support.internet) and to addresses
the tests host in namespaces of their own. IP and CIDR rules, the deny set, live changes and
bandwidth; domain rules and DNS are in tests/e2e/test_egress_runc.py.

Every "refused" is asserted by the kind of failure (curl's "Connection refused": the host
answered the SYN with a reset), never by how long it took; every refusal has a control
beside it showing the same target answers when the rule does not stand in the way.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hutch.host.drivers.runc import instance_tag
from hutch.host.link import host_interface
from tests.e2e.test_networks_runc import serve_http
from tests.e2e.test_sandboxes_runc import create, leftovers, runc_server, sh
from tests.support.internet import Internet
from tests.support.server import HutchProcess, remove_instance

# The API listens on every address here, so that "the host's addresses are refused" is
# about the firewall, not about where the API happens to listen.
ENV = {"HUTCH_HOST": "0.0.0.0", "HUTCH_MAX_RUNNING_PER_USER": "100"}


def own_pool(internet: Internet, second_octet: int) -> str:
    """A link pool no other test session on this machine uses at the same time (the
    internet's slot is held by this session alone): two instances with one pool would
    route each other's replies and resets into the wrong sandbox. 10.100-10.103/16 are
    this module's (10.90-10.99 are other tests' and benchmarks')."""
    return f"10.{second_octet}.{internet.slot * 4}.0/22"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, images: Path, internet: Internet
) -> Iterator[tuple[HutchProcess, httpx.Client]]:
    home = tmp_path_factory.mktemp("egress") / "home"
    server = runc_server(home, images, pool=own_pool(internet, 100), env=ENV)
    key = server.new_key("egress")
    try:
        with server.client(key) as api:
            yield server, api
    finally:
        server.stop()
        remove_instance(server.home)


def curl(api: httpx.Client, box: dict[str, Any], url: str, *options: str) -> tuple[int, str]:
    """curl's exit code and stderr (0 and the body on success)."""
    extra = " ".join(options)
    result = sh(api, box, f"curl -sS -m 20 {extra} {url}")
    if result["exit_code"] == 0:
        return 0, str(result["stdout"])
    return int(result["exit_code"]), str(result["stderr"])


CONNECT = (
    "import errno, socket, sys\n"
    "s = socket.socket(); s.settimeout(20)\n"
    "try:\n"
    "    s.connect((sys.argv[1], int(sys.argv[2]))); print('connected')\n"
    "except socket.timeout: print('timeout')\n"
    "except OSError as e: print(errno.errorcode.get(e.errno, e.errno))\n"
)


def connect(api: httpx.Client, box: dict[str, Any], address: str, port: int) -> str:
    """What a TCP connect from the sandbox comes to: ``connected``, ``ECONNREFUSED`` (a
    reset: refused fast), ``EHOSTUNREACH``, ``timeout`` (a silent drop)…"""
    result = sh(api, box, f'python3 -c "{CONNECT}" {address} {port}')
    return str(result["stdout"]).strip()


def reaches(api: httpx.Client, box: dict[str, Any], address: str, port: int) -> bool:
    """Whether an HTTP request from the sandbox gets the server's own answer; if not, the
    connection must have been refused at once (a reset), not dropped."""
    code, out = curl(api, box, f"http://{address}:{port}/")
    if code == 0:
        who = json.loads(out)
        assert (who["address"], who["port"]) == (address, port)
        return True
    kind = connect(api, box, address, port)
    assert kind == "ECONNREFUSED", f"{address}:{port}: {kind}, not refused at once ({out})"
    return False


def refused(api: httpx.Client, box: dict[str, Any], address: str, port: int) -> bool:
    return not reaches(api, box, address, port)


def table(server: HutchProcess) -> str:
    done = subprocess.run(["nft", "list", "table", "inet", f"hutch-{instance_tag(server.home)}"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout


def test_open_by_default_and_the_deny_set_holds_under_star(
    served: tuple[HutchProcess, httpx.Client], internet: Internet
) -> None:
    server, api = served
    example, evil = internet.address("example.test"), internet.address("evil.test")
    box = create(api)
    assert box["egress"] == []
    assert reaches(api, box, example, 80) and reaches(api, box, evil, 8080)
    assert sh(api, box, f"ping -c 1 -W 5 {evil}")["exit_code"] == 0

    star = create(api, egress=["*"])
    assert reaches(api, star, example, 443)
    # Port 25, on a server the host itself reaches.
    assert internet.get(example, 25).status_code == 200
    assert refused(api, star, example, 25)

    # The host's addresses: the host end of the link, its main address, and its address
    # on another bridge (one not in any denied block), each where the API answers.
    api_port = int(server.url.rsplit(":", 1)[1])
    link_host = ".".join([*star["ip"].split(".")[:3], str(int(star["ip"].split(".")[3]) - 1)])
    bridge, bridge_ip = f"hteg{internet.slot:02d}", f"203.0.113.{100 + internet.slot}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{bridge_ip}/32", "dev", bridge], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        main_ip = subprocess.run(["ip", "-4", "-o", "route", "get", "192.0.2.1"],
                                 capture_output=True, text=True).stdout  # fmt: skip
        targets = [link_host, bridge_ip]
        if " src " in main_ip:
            targets.append(main_ip.split(" src ")[1].split()[0])
        for address in targets:
            assert httpx.get(f"http://{address}:{api_port}/healthz", timeout=10).status_code == 200
            assert connect(api, star, address, api_port) == "ECONNREFUSED", address
    finally:
        subprocess.run(["ip", "link", "del", bridge], check=False)

    # Another sandbox's link address: the host reaches its server, a sandbox does not.
    other = create(api)
    serve_http(api, other)
    assert httpx.get(f"http://{other['ip']}:8080/", timeout=10).status_code == 200
    assert connect(api, star, other["ip"], 8080) == "ECONNREFUSED"

    # RFC 1918, shared and link-local addresses, hosted in namespaces of this test's own.
    for kind in ("rfc1918", "rfc1918-172", "link-local", "cgnat"):
        with internet.host_address(internet.spare_address(kind), ports=(80,)) as hosted:
            assert internet.get(hosted.address, 80).status_code == 200
            assert refused(api, star, hosted.address, 80), kind
            assert refused(api, box, hosted.address, 80), kind

    for sandbox in (box, star, other):
        api.delete(f"/v1/sandboxes/{sandbox['id']}")


def test_each_rule_form_lets_through_exactly_what_it_names(
    served: tuple[HutchProcess, httpx.Client], internet: Internet
) -> None:
    _, api = served
    net = internet.network
    a, b, c, d, e = (str(net[o]) for o in (20, 21, 22, 23, 24))
    f, evil = str(net[25]), str(net[30])
    box = create(api, egress=[a, f"{b}:8080", f"{net[22]}/31", f"{net[24]}/31:443"])
    # Enforced from the first packet after create: nothing unlisted passed, ever.
    assert refused(api, box, evil, 80)
    # ip: every port, and ICMP.
    assert reaches(api, box, a, 80) and reaches(api, box, a, 8080) and reaches(api, box, a, 443)
    assert sh(api, box, f"ping -c 1 -W 5 {a}")["exit_code"] == 0
    # ip:port: that port only (no other port, no ICMP).
    assert reaches(api, box, b, 8080)
    assert refused(api, box, b, 80) and refused(api, box, b, 443)
    assert sh(api, box, f"ping -c 1 -W 2 {b}")["exit_code"] != 0
    # cidr: every address of the block on every port, and not the next one.
    assert reaches(api, box, c, 80) and reaches(api, box, d, 443)
    # cidr:port: the block on that port.
    assert reaches(api, box, e, 443) and reaches(api, box, f, 443)
    assert refused(api, box, e, 80) and refused(api, box, f, 8080)
    # Port 25 stays refused even inside an allowed block.
    assert refused(api, box, a, 25)
    # The same addresses from an open sandbox: the refusals above were the rules' doing.
    free = create(api)
    for address, port in [(evil, 80), (b, 80), (e, 80), (f, 8080)]:
        assert reaches(api, free, address, port)
    for sandbox in (box, free):
        api.delete(f"/v1/sandboxes/{sandbox['id']}")


def test_put_applies_to_new_connections_and_cuts_an_open_one(
    served: tuple[HutchProcess, httpx.Client], internet: Internet
) -> None:
    _, api = served
    a, b = internet.address("example.test"), internet.address("www.example.test")
    box = create(api)
    drip = (f"nohup sh -c 'curl -sSN -m 600 http://{a}/drip >/tmp/drip.out 2>/tmp/drip.err; "
            "echo $? >/tmp/drip.rc' >/dev/null 2>&1 &")  # fmt: skip
    sh(api, box, drip)
    wait = "for i in $(seq 300); do grep -q tick /tmp/drip.out && break; sleep 0.1; done"
    waited = sh(api, box, f"{wait}; grep -c tick /tmp/drip.out; cat /tmp/drip.err")
    assert int(waited["stdout"].split()[0]) >= 1, waited
    assert sh(api, box, "test -e /tmp/drip.rc")["exit_code"] != 0, "the connection is open"

    put = api.put(f"/v1/sandboxes/{box['id']}/egress", json={"egress": [b]})
    assert put.status_code == 200 and put.json()["data"]["egress"] == [b]
    # New connections follow at once.
    assert refused(api, box, a, 80)
    assert reaches(api, box, b, 80)
    # The open one is cut: its next packet out gets a reset.
    ended = sh(api, box, "for i in $(seq 200); do test -e /tmp/drip.rc && break; sleep 0.1; done;"
                         " cat /tmp/drip.rc; cat /tmp/drip.err")  # fmt: skip
    code, _, err = ended["stdout"].partition("\n")
    assert code.strip() == "56" and "reset" in err.lower(), ended

    # And back: open again, a is reachable.
    assert api.put(f"/v1/sandboxes/{box['id']}/egress", json={"egress": None}).status_code == 200
    assert reaches(api, box, a, 80)
    api.delete(f"/v1/sandboxes/{box['id']}")


NETLINK_PROBE = r"""
import errno, socket, struct
NETLINK_NETFILTER, NFNL_SUBSYS_NFTABLES = 12, 10
def send(sock, msgs):
    sock.send(b"".join(msgs))
    data = sock.recv(65536)
    kind, = struct.unpack_from("=H", data, 4)
    if kind == 2:  # NLMSG_ERROR
        error, = struct.unpack_from("=i", data, 16)
        return -error
    return 0
def msg(kind, flags, seq, payload=b"", res_id=0):
    body = struct.pack("=BBH", 0, 0, socket.htons(res_id)) + payload
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body
sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
listing = send(sock, [msg((NFNL_SUBSYS_NFTABLES << 8) | 1, 0x1 | 0x300, 1)])
name = b"mine\0"
attr = struct.pack("=HH", 4 + len(name), 1) + name + b"\0" * (-len(name) % 4)
change = send(sock, [msg(0x10, 0x1, 2, res_id=NFNL_SUBSYS_NFTABLES),
                     msg((NFNL_SUBSYS_NFTABLES << 8) | 0, 0x1 | 0x4 | 0x400, 3, attr),
                     msg(0x11, 0x1, 4, res_id=NFNL_SUBSYS_NFTABLES)])
print(errno.errorcode.get(listing, listing), errno.errorcode.get(change, change))
"""


def test_root_inside_cannot_see_or_change_the_policy(
    served: tuple[HutchProcess, httpx.Client], internet: Internet
) -> None:
    server, api = served
    a, evil = internet.address("example.test"), internet.address("evil.test")
    box = create(api, egress=[a])
    assert f"e_{host_interface(instance_tag(server.home), box['id'])}" in table(server)
    assert sh(api, box, "id -u")["stdout"].strip() == "0"
    # nft and iptables are not in the image; their netlink calls, made by hand, are refused.
    for tool in ("nft", "iptables"):
        assert sh(api, box, f"command -v {tool}")["exit_code"] != 0, f"{tool} is in the image now"
    put = api.put(f"/v1/sandboxes/{box['id']}/files", params={"path": "/tmp/probe.py"},
                  content=NETLINK_PROBE.encode())  # fmt: skip
    assert put.status_code == 200
    assert sh(api, box, "python3 /tmp/probe.py")["stdout"].split() == ["EPERM", "EPERM"]
    # Nor can it route around the host: no changing its routes or addresses.
    for attempt in ("ip route del default", "ip route add 198.18.0.0/15 dev eth0",
                    "ip addr add 10.91.255.254/32 dev eth0", "ip link set eth0 down"):  # fmt: skip
        assert "Operation not permitted" in sh(api, box, f"{attempt} 2>&1")["stdout"], attempt
    assert refused(api, box, evil, 80) and reaches(api, box, a, 80)
    api.delete(f"/v1/sandboxes/{box['id']}")


def test_a_deleted_sandbox_leaves_nothing_in_the_ruleset(
    served: tuple[HutchProcess, httpx.Client],
) -> None:
    server, api = served
    boxes = [create(api, egress=["198.18.0.0/15:443"]), create(api), create(api, egress=["*"])]
    api.put(f"/v1/sandboxes/{boxes[1]['id']}/egress", json={"egress": ["203.0.113.9"]})
    api.post(f"/v1/sandboxes/{boxes[1]['id']}/bandwidth/recharge", json={"add_bytes": 5})
    tag = instance_tag(server.home)
    before = table(server)
    for box in boxes:
        assert host_interface(tag, box["id"]) in before
        assert api.delete(f"/v1/sandboxes/{box['id']}").status_code == 200
    after = table(server)
    for box in boxes:
        assert host_interface(tag, box["id"]) not in after, after
    assert leftovers(server.home)["egress"] == []


# -- bandwidth ------------------------------------------------------------------------------

QUOTA = 2 * 1024 * 1024


def eth0(api: httpx.Client, box: dict[str, Any]) -> tuple[int, int]:
    """What the sandbox's own kernel counts on its interface, (sent, received), as IP bytes
    (the interface counts Ethernet headers too: 14 bytes a frame)."""
    stats = "/sys/class/net/eth0/statistics"
    out = sh(api, box, f"cat {stats}/tx_bytes {stats}/tx_packets {stats}/rx_bytes "
                       f"{stats}/rx_packets")["stdout"].split()  # fmt: skip
    tx, tx_packets, rx, rx_packets = (int(value) for value in out)
    return tx - 14 * tx_packets, rx - 14 * rx_packets


def bandwidth(api: httpx.Client, box: dict[str, Any]) -> dict[str, Any]:
    response = api.get(f"/v1/sandboxes/{box['id']}/bandwidth")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def upload(api: httpx.Client, box: dict[str, Any], address: str, size: int) -> tuple[int, str]:
    sh(api, box, f"head -c {size} /dev/zero > /tmp/up.bin")
    return curl(api, box, f"http://{address}/sink", "--data-binary @/tmp/up.bin",
                "-H 'Content-Type: application/octet-stream'")  # fmt: skip


def within_1pct(counted: int, reference: int) -> bool:
    return abs(counted - reference) <= reference / 100


def test_quota_caps_recharge_lifts_and_counters_survive_kill_9(
    tmp_path: Path, images: Path, internet: Internet
) -> None:
    home, pool = tmp_path / "home", own_pool(internet, 101)
    env = {**ENV, "HUTCH_BANDWIDTH_QUOTA_BYTES": str(QUOTA)}
    first = runc_server(home, images, pool=pool, env=env)
    second: HutchProcess | None = None
    try:
        key = first.new_key("meter")
        a, b = internet.address("example.test"), internet.address("www.example.test")
        with first.client(key) as api:
            box = create(api, egress=[a, b])
            start = bandwidth(api, box)
            assert (start["quota_bytes"], start["capped"]) == (QUOTA, False)
            sent0, received0 = eth0(api, box)

            # Downloads count as ingress (replies), not against the quota.
            code, _ = curl(api, box, f"http://{a}/bytes/{4 * QUOTA}", "-o /dev/null")
            assert code == 0
            # An upload under the quota passes and is counted.
            code, out = upload(api, box, a, QUOTA // 2)
            assert code == 0 and json.loads(out)["received"] == QUOTA // 2
            sent1, received1 = eth0(api, box)
            view = bandwidth(api, box)
            assert within_1pct(view["used_bytes"], sent1 - sent0), (view, sent1 - sent0)
            assert within_1pct(view["ingress_bytes"], received1 - received0), view
            assert view["ingress_bytes"] >= 4 * QUOTA and not view["capped"]
            assert view["remaining_bytes"] == QUOTA - view["used_bytes"]

            # Past the quota: the upload is cut, the sandbox is capped, nothing leaves.
            code, _ = upload(api, box, b, QUOTA)
            assert code != 0
            capped = bandwidth(api, box)
            # Stopped at the quota: the packet that would have crossed it (at most one
            # 64 KiB segment) was refused, not counted.
            assert capped["capped"] and QUOTA - 65536 <= capped["used_bytes"] <= QUOTA, capped
            assert refused(api, box, a, 80)
            assert bandwidth(api, box)["used_bytes"] == capped["used_bytes"], "refused: not counted"

            # A recharge lifts it when it answers.
            lifted = api.post(f"/v1/sandboxes/{box['id']}/bandwidth/recharge",
                              json={"add_bytes": 4 * QUOTA}).json()["data"]  # fmt: skip
            assert lifted["quota_bytes"] == 5 * QUOTA and not lifted["capped"]
            assert reaches(api, box, a, 80)
            # (What the sandbox sent while capped was refused and not counted: from here
            # on, compare what was sent since.)
            sent1, _ = eth0(api, box)
            base = bandwidth(api, box)
            code, _ = upload(api, box, b, QUOTA)
            assert code == 0
            sent2, _ = eth0(api, box)
            before = bandwidth(api, box)
            used = before["used_bytes"] - base["used_bytes"]
            assert within_1pct(used, sent2 - sent1), (before, base, sent2 - sent1)

        first.stop(signal.SIGKILL)
        second = runc_server(home, images, pool=pool, env=env)
        with second.client(key) as api:
            after = bandwidth(api, box)
            assert after["quota_bytes"] == 5 * QUOTA
            assert after["used_bytes"] >= before["used_bytes"]
            assert within_1pct(after["used_bytes"], before["used_bytes"]), (before, after)
            assert within_1pct(after["ingress_bytes"], before["ingress_bytes"]), (before, after)
            # The rules came back with it, from the store, into the new table.
            assert api.get(f"/v1/sandboxes/{box['id']}/egress").json()["data"]["egress"] == [a, b]
            assert refused(api, box, internet.address("evil.test"), 80)
            assert reaches(api, box, a, 80)
            # Counting goes on from where it was; the quota still holds.
            sent3, _ = eth0(api, box)
            base = bandwidth(api, box)
            code, _ = upload(api, box, b, QUOTA)
            assert code == 0
            sent4, _ = eth0(api, box)
            used = bandwidth(api, box)["used_bytes"] - base["used_bytes"]
            assert within_1pct(used, sent4 - sent3), (used, sent4 - sent3)
            code, _ = upload(api, box, b, 3 * QUOTA)
            assert code != 0 and bandwidth(api, box)["capped"]
            api.delete(f"/v1/sandboxes/{box['id']}")
            assert host_interface(instance_tag(home), box["id"]) not in table(second)
    finally:
        for server in (first, second):
            if server is not None:
                server.stop()
        remove_instance(home)
    assert all(not found for found in leftovers(home).values())


def from_netns(home: Path, box: dict[str, Any], address: str, port: int) -> int:
    """curl's exit code for a request from the sandbox's network namespace, made by the host
    (while hutch is down, nothing else can ask the sandbox to make one)."""
    netns = f"hutch-{instance_tag(home)}-{box['id']}"
    return subprocess.run(["ip", "netns", "exec", netns, "curl", "-sS", "-m", "20", "-o",
                           "/dev/null", f"http://{address}:{port}/"],
                          capture_output=True, timeout=60).returncode  # fmt: skip


def test_a_restart_applies_the_stored_rules_again(
    tmp_path: Path, images: Path, internet: Internet
) -> None:
    home, pool = tmp_path / "home", own_pool(internet, 102)
    first = runc_server(home, images, pool=pool, env=ENV)
    second: HutchProcess | None = None
    a, evil = internet.address("example.test"), internet.address("evil.test")
    try:
        key = first.new_key("keeper")
        with first.client(key) as api:
            box = create(api, egress=[f"{a}:80"])
            opened = create(api)
        first.stop(signal.SIGKILL)
        # While hutch is down its table stays: the sandboxes are held to their rules.
        assert from_netns(home, box, a, 80) == 0
        assert from_netns(home, box, evil, 80) == 7
        assert from_netns(home, opened, evil, 80) == 0
        second = runc_server(home, images, pool=pool, env=ENV)
        with second.client(key) as api:
            assert refused(api, box, a, 8080) and refused(api, box, evil, 80)
            assert reaches(api, box, a, 80)
            assert reaches(api, opened, evil, 80)
            for sandbox in (box, opened):
                api.delete(f"/v1/sandboxes/{sandbox['id']}")
    finally:
        for server in (first, second):
            if server is not None:
                server.stop()
        remove_instance(home)


def test_the_closed_default_and_a_private_block_carved_out(
    tmp_path: Path, images: Path, internet: Internet
) -> None:
    home = tmp_path / "home"
    mirror = internet.spare_address("rfc1918")  # an "internal mirror" the operator allows
    env = {**ENV, "HUTCH_EGRESS_DEFAULT": "closed", "HUTCH_EGRESS_ALLOW_PRIVATE": f"{mirror}/32"}
    server = runc_server(home, images, pool=own_pool(internet, 103), env=env)
    try:
        key = server.new_key("closed")
        a = internet.address("example.test")
        with server.client(key) as api:
            shut, star = create(api), create(api, egress=["*"])
            # No rules under the closed default: nothing; ["*"]: the internet.
            assert refused(api, shut, a, 80)
            assert reaches(api, star, a, 80)
            api.put(f"/v1/sandboxes/{shut['id']}/egress", json={"egress": [a]})
            assert reaches(api, shut, a, 80)
            # The carved-out block is reachable; the rest of the private space is not.
            with internet.host_address(mirror, ports=(80,)) as hosted:
                assert reaches(api, star, hosted.address, 80)
                assert refused(api, shut, hosted.address, 80), "not in its rules"
            with internet.host_address(internet.spare_address("rfc1918-172")) as other:
                assert internet.get(other.address, 80).status_code == 200
                assert refused(api, star, other.address, 80)
            for sandbox in (shut, star):
                api.delete(f"/v1/sandboxes/{sandbox['id']}")
    finally:
        server.stop()
        remove_instance(home)
