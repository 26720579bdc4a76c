"""Hostile input from inside a sandbox: the protocols a sandbox can reach are fuzzed from
inside it, and the ones it must not reach are tried.

The guest agent's socket is on the host and only the sandbox's PID 1 holds it, so nothing
else inside can speak to it; hutch's DNS server is the one hutch service a sandbox talks
to, so it gets the fuzz. Afterwards both still answer, and the sandbox reached nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_sandboxes_runc import create, runc_server, sh
from tests.support.server import HutchProcess, remove_instance

AGENT_PROBE = r"""
import os, socket
found = []
for fd in os.listdir("/proc/1/fd"):
    target = os.readlink(f"/proc/1/fd/{fd}") if os.path.exists(f"/proc/1/fd/{fd}") else ""
    if target.startswith("socket:"):
        try:
            os.open(f"/proc/1/fd/{fd}", os.O_RDWR)
            found.append(f"opened {fd}")
        except OSError as exc:
            found.append(f"refused {exc.errno}")
for path in ("/.hutch/agent.sock", "/run/hutch.sock", "/.hutch/guest/agent.sock",
             "/.hutch/run/agent.sock"):
    try:
        s = socket.socket(socket.AF_UNIX); s.connect(path); found.append(f"connected {path}")
    except OSError:
        pass
print(" ".join(found) or "none")
"""

DNS_FUZZ = r"""
import os, random, socket
resolver = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
rng = random.Random(5)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.005)
for i in range(1500):
    size = rng.choice([0, 1, 11, 12, 13, 30, 200, 512, 1400])
    data = bytes(rng.getrandbits(8) for _ in range(size))
    if i % 3 == 0 and size >= 12:  # a header that claims many questions, then garbage
        data = data[:4] + b"\xff\xff" + data[6:]
    s.sendto(data, (resolver, 53))
    try:
        s.recv(4096)
    except OSError:
        pass
print("sent")
"""


def py(api: httpx.Client, box: dict[str, Any], script: str) -> dict[str, Any]:
    answer = api.post(
        f"/v1/sandboxes/{box['id']}/exec",
        json={"cmd": "python3", "args": ["-c", script], "timeout_secs": 120},
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()["data"]["result"]
    return result


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    process = runc_server(tmp_path_factory.mktemp("hostile") / "home", images)
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture
def api(server: HutchProcess) -> Iterator[httpx.Client]:
    key = server.new_key("mallory")
    with server.client(key) as client:
        yield client


@pytest.mark.parametrize("runtime", ["runc", "gvisor"])
def test_nothing_inside_can_reach_the_guest_agent(api: httpx.Client, runtime: str) -> None:
    box = create(api, runtime=runtime)
    probed = py(api, box, AGENT_PROBE)
    assert probed["exit_code"] == 0, probed
    assert "refused" in probed["stdout"], probed  # the agent's socket is there to try
    assert "opened" not in probed["stdout"] and "connected" not in probed["stdout"]
    assert sh(api, box, "echo still")["stdout"] == "still\n"  # and the agent serves on
    api.delete(f"/v1/sandboxes/{box['id']}")


def test_dns_fuzzed_from_inside_keeps_answering(api: httpx.Client, server: HutchProcess) -> None:
    net = api.post("/v1/networks", json={"name": "fuzz-net"}).json()["data"]
    fuzzer = create(api, name="fuzzer", networks=[{"id": net["id"]}])
    peer = create(api, name="quiet-peer", networks=[{"id": net["id"]}])
    fuzzed = py(api, fuzzer, DNS_FUZZ)
    assert fuzzed["stdout"] == "sent\n", fuzzed
    answer = sh(api, fuzzer, "getent hosts quiet-peer | awk '{print $1}'")["stdout"].strip()
    members = api.get(f"/v1/networks/{net['id']}").json()["data"]["members"]
    assert answer == next(m["ip"] for m in members if m["sandbox_id"] == peer["id"])
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    for box in (fuzzer, peer):
        api.delete(f"/v1/sandboxes/{box['id']}")
    api.delete(f"/v1/networks/{net['id']}")
