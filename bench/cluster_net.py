"""A cluster on one machine against one host, in the same run (issue 19).

    .venv/bin/python bench/cluster_net.py [--creates 20] [--mib 256] [--rounds 6] [--out FILE]

Starts the test cluster of tests/support/cluster.py (a bridge and three network
namespaces, one ``hutch agent`` each, ``hutch control`` on PostgreSQL) and measures:

- create -> first exec (``true``) through the cluster's control plane, the sandbox
  placed on any host, against the same through a one-machine ``hutch serve`` (SQLite)
  running beside it, and straight to one agent's unix socket (PostgreSQL, no control
  plane): one of each in turn, so all three see the same load (the issue's goal: p50
  within +10 ms of one host);
- TCP throughput between two members of one private network, on two hosts (over the
  VXLAN segment) against two members on the same host (over the bridge only), by a
  Python sender and receiver inside the sandboxes moving ``--mib`` MiB (goal >= 0.8x),
  in turn, ``--rounds`` times; then both again with GRO turned on for the links between
  the hosts (veths, off by default; real NICs have it on), with the mean size of what
  the receiving host's link took in each phase (over the MTU: the VXLAN datagrams cross
  unsegmented, and GRO has nothing to merge).

Both peers run on the same loaded cores as everything else: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.test_sandboxes_runc import new_pool  # noqa: E402
from tests.support.cluster import Cluster  # noqa: E402
from tests.support.server import HutchProcess, remove_instance, run_cli  # noqa: E402

IMAGES = Path(os.environ.get("HUTCH_IMAGES_DIR", "/var/cache/hutch-test-images"))
SHAPE = "s-1vcpu-256mb"


def create_to_exec(
    api: httpx.Client, n: int, parts: dict[str, list[float]] | None = None, **body: Any
) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        made = api.post("/v1/sandboxes", json={"shape": SHAPE, **body})
        assert made.status_code == 201, made.text
        created = time.perf_counter()
        sandbox = made.json()["data"]["id"]
        ran = api.post(f"/v1/sandboxes/{sandbox}/exec", json={"cmd": "true"})
        assert ran.status_code == 200, ran.text
        samples.append((time.perf_counter() - start) * 1000)
        if parts is not None:
            parts.setdefault("create", []).append((created - start) * 1000)
            parts.setdefault("exec", []).append((time.perf_counter() - created) * 1000)
        api.delete(f"/v1/sandboxes/{sandbox}")
    return samples


def p50s(parts: dict[str, list[float]]) -> dict[str, float]:
    return {name: round(statistics.median(values), 1) for name, values in parts.items()}


def sh(api: httpx.Client, sandbox: str, script: str) -> dict[str, Any]:
    answer = api.post(f"/v1/sandboxes/{sandbox}/exec", json={"cmd": script, "timeout_secs": 300})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()["data"]["result"]
    return result


RECEIVER = (
    "import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
    "s.bind(('0.0.0.0', 5201)); s.listen(1); c, _ = s.accept(); n = 0\n"
    "while (d := c.recv(1 << 20)): n += len(d)\n"
    "open('/tmp/got', 'w').write(str(n))"
)


def throughput(api: httpx.Client, sender: str, receiver: str, target: str, mib: int) -> float:
    """MiB/s of ``mib`` MiB from ``sender`` to ``target`` (``receiver``'s address)."""
    sh(api, receiver, f'rm -f /tmp/got; nohup python3 -c "{RECEIVER}" >/dev/null 2>&1 & sleep 0.5')
    send = (
        "import socket, time; s=socket.create_connection(('" + target + "', 5201)); "
        "b=bytes(1 << 20); t=time.perf_counter()\n"
        f"for _ in range({mib}): s.sendall(b)\n"
        "s.close(); print(time.perf_counter() - t)"
    )
    seconds = float(sh(api, sender, f'python3 -c "{send}"')["stdout"].strip())
    for _ in range(100):
        if sh(api, receiver, "cat /tmp/got 2>/dev/null")["stdout"] == str(mib << 20):
            break
        time.sleep(0.1)
    return round(mib / seconds, 1)


# GRO of eth0 of the namespace it runs in (SIOCETHTOOL: ETHTOOL_GGRO, then ETHTOOL_SGRO
# with argv[1] unless it is "read"): the test cluster's links between hosts are veths,
# where GRO is off by default.
GRO = """
import ctypes, fcntl, socket, struct, sys
def ethtool(command, data=0):
    value = ctypes.create_string_buffer(struct.pack("II", command, data))
    fcntl.ioctl(socket.socket(), 0x8946, struct.pack("16sP", b"eth0", ctypes.addressof(value)))
    return struct.unpack("II", value.raw[:8])[1]
if sys.argv[1] != "read":
    ethtool(0x2C, int(sys.argv[1]))
print(ethtool(0x2B))
"""


def gro(cluster: Cluster, value: str) -> dict[str, bool]:
    """Each host's underlay GRO after setting it to ``value`` ("1", "0", or "read")."""
    out = {}
    for name, host in cluster.hosts.items():
        done = subprocess.run(["nsenter", f"--net=/run/netns/{host.netns}", sys.executable,
                               "-c", GRO, value], check=True, timeout=30,
                              capture_output=True, text=True)  # fmt: skip
        out[name] = done.stdout.strip() == "1"
    return out


def received(cluster: Cluster, name: str) -> tuple[int, int]:
    """Bytes and packets ``name``'s underlay (eth0) has received so far."""
    command = ["ip", "-n", cluster.hosts[name].netns, "-s", "-j", "link", "show", "eth0"]
    shown = subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)
    rx = json.loads(shown.stdout)[0]["stats64"]["rx"]
    return int(rx["bytes"]), int(rx["packets"])


def mean_packet(before: tuple[int, int], after: tuple[int, int]) -> int:
    """The mean size of what came in between two :func:`received` (GSO/GRO: > the MTU)."""
    return (after[0] - before[0]) // max(after[1] - before[1], 1)


def member_ip(api: httpx.Client, sandbox: str) -> str:
    members = api.get("/v1/networks/bench").json()["data"]["members"]
    return next(str(m["ip"]) for m in members if m["sandbox_id"] == sandbox)


def network(cluster: Cluster, args: argparse.Namespace, result: dict[str, Any]) -> None:
    with cluster.client() as api:
        assert api.post("/v1/networks", json={"name": "bench"}).status_code == 200
        boxes = {}
        for name, host in (("a", "h1"), ("b", "h1"), ("c", "h2")):
            made = api.post("/v1/sandboxes", json={"shape": SHAPE, "host_id": host,
                                                   "networks": [{"id": "bench"}]})  # fmt: skip
            assert made.status_code == 201, made.text
            boxes[name] = made.json()["data"]["id"]
        time.sleep(2)  # the overlay loop joins h1 and h2 (once a second)
        result["underlay_gro_as_agents_left_it"] = gro(cluster, "read")
        same, cross, same_on, cross_on = [], [], [], []
        b_ip, c_ip = member_ip(api, boxes["b"]), member_ip(api, boxes["c"])
        before = received(cluster, "h2")
        for _ in range(args.rounds):  # each cross-host run right after a same-host one
            same.append(throughput(api, boxes["a"], boxes["b"], b_ip, args.mib))
            cross.append(throughput(api, boxes["a"], boxes["c"], c_ip, args.mib))
        sizes = {"gro_off": mean_packet(before, received(cluster, "h2"))}
        gro(cluster, "1")  # then the same with GRO on the links between hosts
        before = received(cluster, "h2")
        for _ in range(args.rounds):
            same_on.append(throughput(api, boxes["a"], boxes["b"], b_ip, args.mib))
            cross_on.append(throughput(api, boxes["a"], boxes["c"], c_ip, args.mib))
        sizes["gro_on"] = mean_packet(before, received(cluster, "h2"))
        for sandbox in boxes.values():
            api.delete(f"/v1/sandboxes/{sandbox}")

    def pairs(a: list[float], b: list[float]) -> float:  # the median of run-by-run ratios
        return round(statistics.median(x / y for x, y in zip(a, b, strict=True)), 2)

    result["tcp_between_members_mib_s"] = {
        "cross_host_best": max(cross), "same_host_best": max(same),
        "ratio_best": round(max(cross) / max(same), 2), "ratio_pairs_median": pairs(cross, same),
        "gro_on": {"cross_host_best": max(cross_on), "same_host_best": max(same_on),
                   "ratio_best": round(max(cross_on) / max(same_on), 2),
                   "ratio_pairs_median": pairs(cross_on, same_on)},
        "runs": {"cross": cross, "same": same, "cross_gro_on": cross_on,
                 "same_gro_on": same_on},
        "h2_underlay_mean_rx_packet_bytes": sizes,
        "mib": args.mib,
    }  # fmt: skip


def main(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="hutch-bench-cluster-"))
    offer = {"HUTCH_HOST_CAPACITY_MIB": "4096"}
    result: dict[str, Any] = {"benchmark": "cluster_vs_one_host", "load_at_start": os.getloadavg()}
    # The one-host peer runs beside the cluster: creates alternate between the two (and
    # one agent's own socket), so both see the same load.
    one = HutchProcess(root / "one", env={"HUTCH_DRIVER": "runc", "HUTCH_IMAGES_DIR": str(IMAGES),
                                          "HUTCH_LINK_POOL": new_pool()}).wait_ready()  # fmt: skip
    try:
        key = run_cli(one.home, "keys", "create", "--user", "bench").stdout.strip()
        cluster = Cluster(root, IMAGES, {"h1": offer, "h2": offer, "h3": offer})
        try:
            # Straight to one agent's unix socket (no control plane, no placement, the
            # same PostgreSQL): what the control plane adds, apart from the store.
            socket_path = cluster.hosts["h1"].home / "run" / "agent.sock"
            placed: list[float] = []
            single: list[float] = []
            direct_samples: list[float] = []
            placed_parts: dict[str, list[float]] = {}
            single_parts: dict[str, list[float]] = {}
            direct_parts: dict[str, list[float]] = {}
            with cluster.client() as api, one.client(key) as alone, httpx.Client(
                transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://agent",
                headers={"X-Api-Key": cluster.key}, timeout=120,
            ) as direct:  # fmt: skip
                for client in (api, alone, direct):
                    create_to_exec(client, 2)  # warm
                for _ in range(args.creates):
                    placed += create_to_exec(api, 1, placed_parts)
                    single += create_to_exec(alone, 1, single_parts)
                    direct_samples += create_to_exec(direct, 1, direct_parts)
            network(cluster, args, result)
        finally:
            cluster.stop()
    finally:
        one.stop()
        remove_instance(one.home)
    result["create_to_first_exec_ms"] = {
        "cluster_p50": round(statistics.median(placed), 1),
        "one_host_p50": round(statistics.median(single), 1),
        "difference_p50": round(statistics.median(placed) - statistics.median(single), 1),
        "agent_direct_p50": round(statistics.median(direct_samples), 1),
        "parts_p50": {"cluster": p50s(placed_parts), "agent_direct": p50s(direct_parts),
                      "one_host": p50s(single_parts)},
        "n": args.creates,
    }  # fmt: skip
    result["load_average"] = os.getloadavg()
    result["goals"] = "create->exec p50 within +10 ms of one host; cross-host TCP >= 0.8x"
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=20)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=6, help="TCP runs of each pair, per phase")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cluster_net.json")
    arguments = parser.parse_args()
    outcome = main(arguments)
    text = json.dumps(outcome, indent=2)
    print(text)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(text + "\n")
