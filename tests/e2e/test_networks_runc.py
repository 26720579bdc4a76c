"""Private networks between real sandboxes through a real ``hutch serve`` (seed 000).

Every isolation claim is tried from inside a sandbox and shown to fail. Traffic goes only
to addresses on links and bridges this test's hutch made.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_sandboxes_runc import (
    create,
    leftovers,
    new_pool,
    runc_server,
    served_by,
    sh,
)
from tests.support.server import HutchProcess, remove_instance

NETWORK_POOL = "10.44.0.0/16"


ENV = {"HUTCH_NETWORK_POOL": NETWORK_POOL, "HUTCH_MAX_RUNNING_PER_USER": "100"}


@pytest.fixture
def served(tmp_path: Path, images: Path) -> Iterator[tuple[HutchProcess, httpx.Client]]:
    with served_by(tmp_path / "home", images, user="netter", env=ENV) as served:
        yield served


def member_ip(api: httpx.Client, network: str, sandbox: dict[str, Any]) -> str:
    members = api.get(f"/v1/networks/{network}").json()["data"]["members"]
    return next(str(m["ip"]) for m in members if m["sandbox_id"] == sandbox["id"])


def resolves(api: httpx.Client, box: dict[str, Any], name: str) -> str:
    """What ``getent hosts NAME`` says inside ``box`` (the address, or "")."""
    out = sh(api, box, f"getent hosts {name} | awk '{{print $1}}'")["stdout"]
    return str(out).strip()


def serve_http(api: httpx.Client, box: dict[str, Any]) -> None:
    wait = "for i in $(seq 50); do ss -ltn | grep -q :8080 && break; sleep 0.1; done"
    sh(api, box, f"nohup python3 -m http.server 8080 >/dev/null 2>&1 & {wait}")


def http_code(api: httpx.Client, box: dict[str, Any], target: str) -> str:
    script = f"curl -s -m 2 -o /dev/null -w '%{{http_code}}' http://{target}:8080/"
    return str(sh(api, box, script)["stdout"])


def test_members_reach_each_other_by_name_and_nothing_else(
    served: tuple[HutchProcess, httpx.Client],
) -> None:
    server, api = served
    for name in ("alpha", "beta"):
        assert api.post("/v1/networks", json={"name": name}).status_code == 200
    a1 = create(api, name="brave-otter", networks=[{"id": "alpha"}])
    a2 = create(api, name="clever-fox", networks=[{"id": "alpha"}])
    b1 = create(api, name="quiet-lynx", networks=[{"id": "beta"}])
    both = create(api, name="wise-heron")
    lone = create(api, name="lone-wolf")
    started = time.monotonic()
    for name in ("alpha", "beta"):
        attached = api.post(f"/v1/sandboxes/{both['id']}/networks", json={"id": name})
        assert attached.status_code == 200
    # Live attach: the interfaces are up inside when the answers come.
    links = sh(api, both, "ip -4 -o addr show | awk '{print $2, $4}'")["stdout"].split("\n")
    assert time.monotonic() - started < 5
    a2_ip, b1_ip = member_ip(api, "alpha", a2), member_ip(api, "beta", b1)
    both_alpha, both_beta = member_ip(api, "alpha", both), member_ip(api, "beta", both)
    assert f"eth1 {both_alpha}/24" in links and f"eth2 {both_beta}/24" in links
    for box in (a2, b1):
        serve_http(api, box)

    # By name, through the DNS answer, inside a network.
    assert resolves(api, a1, "clever-fox") == a2_ip
    assert sh(api, a1, "grep -c clever-fox /etc/hosts")["stdout"].strip() == "0"
    assert http_code(api, a1, "clever-fox") == "200"
    # A sandbox in two networks reaches the members of both.
    assert resolves(api, both, "clever-fox") == a2_ip
    assert resolves(api, both, "quiet-lynx") == b1_ip
    assert http_code(api, both, "quiet-lynx") == "200"
    assert http_code(api, both, "clever-fox") == "200"

    # Across networks: no name, no TCP, no UDP, no ICMP.
    assert resolves(api, a1, "quiet-lynx") == ""
    assert http_code(api, a1, b1_ip) == "000"
    assert sh(api, a1, f"ping -c 1 -W 1 {b1_ip}")["exit_code"] != 0
    sh(api, b1, "nohup python3 -c \"import socket; s=socket.socket(socket.AF_INET, "
                "socket.SOCK_DGRAM); s.bind(('0.0.0.0', 9999)); "
                "open('/tmp/udp','wb').write(s.recv(100))\" >/dev/null 2>&1 &")  # fmt: skip
    time.sleep(0.5)
    sh(api, a1, f"python3 -c \"import socket; socket.socket(socket.AF_INET, "
                f"socket.SOCK_DGRAM).sendto(b'x', ('{b1_ip}', 9999))\"")  # fmt: skip
    sh(api, both, f"python3 -c \"import socket; socket.socket(socket.AF_INET, "
                  f"socket.SOCK_DGRAM).sendto(b'ok', ('{b1_ip}', 9999))\"")  # fmt: skip
    time.sleep(0.5)
    assert sh(api, b1, "cat /tmp/udp")["stdout"] == "ok", "only the peer's datagram arrived"
    # No segment of beta's inside alpha's members: nothing to sniff or spoof on.
    beta = IPv4Network(api.get("/v1/networks/beta").json()["data"]["members"][0]["ip"] + "/24",
                       strict=False)  # fmt: skip
    for addr in sh(api, a1, "ip -4 -o addr show | awk '{print $4}'")["stdout"].split():
        assert IPv4Address(addr.split("/")[0]) not in beta
    # No way out through the network: the only route out is the sandbox's own link.
    assert " dev eth0 " in sh(api, a1, "ip route get 192.0.2.1 2>&1")["stdout"]
    # A sandbox in no network reaches nobody and resolves nothing.
    assert resolves(api, lone, "clever-fox") == ""
    assert http_code(api, lone, a2_ip) == "000"
    assert sh(api, lone, f"ping -c 1 -W 1 {a2_ip}")["exit_code"] != 0

    # Detaching cuts reachability at once, and the name with it.
    assert api.delete(f"/v1/sandboxes/{both['id']}/networks/beta").status_code == 200
    assert http_code(api, both, b1_ip) == "000"
    assert resolves(api, both, "quiet-lynx") == ""
    assert "eth2" not in sh(api, both, "ip -o link")["stdout"]

    # Deleting a sandbox takes it out of DNS and the member list.
    api.delete(f"/v1/sandboxes/{a2['id']}")
    assert resolves(api, a1, "clever-fox") == ""
    members = api.get("/v1/networks/alpha").json()["data"]["members"]
    assert a2["id"] not in [m["sandbox_id"] for m in members]

    for box in (a1, b1, both, lone):
        api.delete(f"/v1/sandboxes/{box['id']}")
    for name in ("alpha", "beta"):
        assert api.delete(f"/v1/networks/{name}").status_code == 200
    assert all(not found for found in leftovers(server.home).values())


FRAME_SENDER = """
import socket, struct, sys
iface, src_mac, src_ip, dst_mac, dst_ip, text = sys.argv[1:7]
def checksum(data):
    total = sum(struct.unpack("!10H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
payload = text.encode()
udp = struct.pack("!HHHH", 40000, 9998, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                 socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
mac = lambda m: bytes.fromhex(m.replace(":", ""))
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((iface, 0))
sock.send(mac(dst_mac) + mac(src_mac) + b"\\x08\\x00" + ip + udp)
"""


def test_a_member_cannot_forge_another_source_on_its_network(
    served: tuple[HutchProcess, httpx.Client],
) -> None:
    _, api = served
    api.post("/v1/networks", json={"name": "gamma"})
    sender = create(api, name="sender", networks=[{"id": "gamma"}])
    target = create(api, name="target", networks=[{"id": "gamma"}])
    sender_ip, target_ip = member_ip(api, "gamma", sender), member_ip(api, "gamma", target)
    sh(api, target, "nohup python3 -c \"import socket; s=socket.socket(socket.AF_INET, "
                    "socket.SOCK_DGRAM); s.bind(('0.0.0.0', 9998)); f=open('/tmp/got','a')\n"
                    "while True: f.write(s.recv(100).decode()+'\\\\n'); f.flush()\" "
                    ">/dev/null 2>&1 &")  # fmt: skip
    put = api.put(f"/v1/sandboxes/{sender['id']}/files", params={"path": "/tmp/send.py"},
                  content=FRAME_SENDER.encode())  # fmt: skip
    assert put.status_code == 200, put.text
    own_mac = sh(api, sender, "cat /sys/class/net/eth1/address")["stdout"].strip()
    target_mac = sh(api, target, "cat /sys/class/net/eth1/address")["stdout"].strip()
    time.sleep(0.5)
    forged_ip = str(IPv4Address(target_ip) + 50)
    for src_mac, src_ip, text in [(own_mac, sender_ip, "real"),
                                  (own_mac, forged_ip, "forged-ip"),
                                  ("02:42:de:ad:be:ef", sender_ip, "forged-mac")]:  # fmt: skip
        sent = sh(api, sender, f"python3 /tmp/send.py eth1 {src_mac} {src_ip} "
                               f"{target_mac} {target_ip} {text}")  # fmt: skip
        assert sent["exit_code"] == 0, sent
    time.sleep(0.5)
    assert sh(api, target, "cat /tmp/got")["stdout"] == "real\n"


def test_networks_survive_a_server_restart(tmp_path: Path, images: Path) -> None:
    home, pool = tmp_path / "home", new_pool()
    first = runc_server(home, images, pool=pool, env=ENV)
    key = first.new_key("restarter")
    with first.client(key) as api:
        api.post("/v1/networks", json={"name": "backend"})
        web = create(api, name="web", networks=[{"id": "backend"}])
        client = create(api, name="client", networks=[{"id": "backend"}])
        serve_http(api, web)
    first.stop(signal.SIGKILL)
    second = runc_server(home, images, pool=pool, env=ENV)
    try:
        with second.client(key) as api:
            assert resolves(api, client, "web") == member_ip(api, "backend", web)
            assert http_code(api, client, "web") == "200"
            late = create(api, name="late")
            assert api.post(f"/v1/sandboxes/{late['id']}/networks",
                            json={"id": "backend"}).status_code == 200  # fmt: skip
            assert http_code(api, late, "web") == "200"
            for box in (web, client, late):
                api.delete(f"/v1/sandboxes/{box['id']}")
            assert api.delete("/v1/networks/backend").status_code == 200
        assert all(not found for found in leftovers(home).values())
    finally:
        second.stop()
        remove_instance(home)


def test_fifty_networks_and_two_hundred_attachments(
    served: tuple[HutchProcess, httpx.Client],
) -> None:
    server, api = served
    names = [f"n{index:02d}" for index in range(50)]
    subnets = set()
    for name in names:
        made = api.post("/v1/networks", json={"name": name})
        assert made.status_code == 200, made.text
    boxes = [create(api, name=f"box{index}") for index in range(10)]
    for index, box in enumerate(boxes):
        for name in [names[(index * 5 + k) % 50] for k in range(20)]:  # 20 each, overlapping
            answer = api.post(f"/v1/sandboxes/{box['id']}/networks", json={"id": name})
            assert answer.status_code == 200, answer.text
    total = 0
    for name in names:
        members = api.get(f"/v1/networks/{name}").json()["data"]["members"]
        ips = [m["ip"] for m in members]
        assert len(set(ips)) == len(ips)
        if ips:
            subnets.add(str(IPv4Network(ips[0] + "/24", strict=False)))
        total += len(members)
    assert total == 200 and len(subnets) == 50
    last = boxes[-1]
    assert sh(api, last, "ip -4 -o addr show | grep -c ' eth'")["stdout"].strip() == "21"
    # box0 is in n00-n19, box1 in n05-n24 (shared), box5 in n25-n44 (none shared).
    assert resolves(api, boxes[0], "box1") != ""
    assert resolves(api, boxes[0], "box5") == ""
    for box in boxes:
        api.delete(f"/v1/sandboxes/{box['id']}")
    for name in names:
        assert api.delete(f"/v1/networks/{name}").status_code == 200
    # Subnets are reused after deletion.
    again = api.post("/v1/networks", json={"name": "again"}).json()["data"]
    assert again["member_count"] == 0
    api.delete("/v1/networks/again")
    assert all(not found for found in leftovers(server.home).values())
