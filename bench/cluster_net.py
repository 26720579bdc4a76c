"""A cluster on one machine against one host, in the same run (issue 19).

    .venv/bin/python bench/cluster_net.py [--creates 20] [--mib 256] [--rounds 10]
        [--peer-control SRC] [--profile DIR] [--gro-phase] [--skip-tcp] [--out FILE]

Starts the test cluster of tests/support/cluster.py (a bridge and three network
namespaces, one ``hutch agent`` each, ``hutch control`` on PostgreSQL) and measures:

- create -> first exec (``true``) through the cluster's control plane, the sandbox
  placed on any host, against the same through two one-machine ``hutch serve`` running
  beside it, one on SQLite (a machine's default) and one on the cluster's PostgreSQL
  server (the same store as the cluster: the fair peer for what the cluster adds), and
  straight to one agent's unix socket (PostgreSQL, no control plane); with
  ``--peer-control SRC`` also through a second control plane running another version of
  hutch (``SRC``: its ``src`` directory, e.g. a ``git worktree`` of main) on the same
  agents (``--peers`` picks some). One of each in turn, who goes first rotating each
  turn, so all see the same load (the issue's goal: p50 within
  +10 ms of one host). ``--profile DIR``: py-spy records the control plane's workers and
  agent h1 meanwhile (raw folded stacks in DIR);
- TCP throughput between two members of one private network, on two hosts (over the
  VXLAN segment) against two members on the same host (over the bridge only), by a
  Python sender and receiver inside the sandboxes moving ``--mib`` MiB (goal >= 0.8x):
  ``--rounds`` pairs, each a same-host and a cross-host run back to back, the order
  turned every pair; the median and spread of the pairs' ratios. ``--gro-phase``: the
  same again with GRO on for the links between the hosts (veths, off by default; real
  NICs have it on), with the mean size of what the receiving host's link took in each
  phase (over the MTU: the VXLAN datagrams cross unsegmented).

Both peers run on the same loaded cores as everything else: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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
        b_ip, c_ip = member_ip(api, boxes["b"]), member_ip(api, boxes["c"])
        result["path"] = path_facts(cluster, api, boxes["a"])

        def phase() -> dict[str, Any]:
            same, cross, loads = [], [], []
            before = received(cluster, "h2")
            for n in range(args.rounds):  # a pair back to back, the order turned each time
                loads.append(os.getloadavg()[0])
                if n % 2:
                    cross.append(throughput(api, boxes["a"], boxes["c"], c_ip, args.mib))
                    same.append(throughput(api, boxes["a"], boxes["b"], b_ip, args.mib))
                else:
                    same.append(throughput(api, boxes["a"], boxes["b"], b_ip, args.mib))
                    cross.append(throughput(api, boxes["a"], boxes["c"], c_ip, args.mib))
            return summary(cross, same, loads, mean_packet(before, received(cluster, "h2")))

        result["tcp_between_members_mib_s"] = {"gro_off": phase(), "mib": args.mib}
        if args.gro_phase:  # then the same with GRO on the links between hosts
            gro(cluster, "1")
            result["tcp_between_members_mib_s"]["gro_on"] = phase()
        for sandbox in boxes.values():
            api.delete(f"/v1/sandboxes/{sandbox}")


def summary(
    cross: list[float], same: list[float], loads: list[float], packet: int
) -> dict[str, Any]:
    """Each pair's ratio (cross / same, back to back), their median and spread."""
    ratios = sorted(round(x / y, 3) for x, y in zip(cross, same, strict=True))
    quart = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {
        "ratio_pairs_median": round(statistics.median(ratios), 2),
        "ratio_pairs_quartiles": [round(q, 2) for q in quart[::2]],
        "ratio_pairs_min_max": [ratios[0], ratios[-1]],
        "pairs_at_or_over_0.8": sum(r >= 0.8 for r in ratios), "pairs": len(ratios),
        "cross_median": statistics.median(cross), "same_median": statistics.median(same),
        "ratio_of_medians": round(statistics.median(cross) / statistics.median(same), 2),
        "runs": {"cross": cross, "same": same}, "load_1min": [round(v, 1) for v in loads],
        "h2_underlay_mean_rx_packet_bytes": packet,
    }  # fmt: skip


def _run(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout


def path_facts(cluster: Cluster, api: httpx.Client, sandbox: str) -> dict[str, Any]:
    """What the cross-host path is made of: MTUs, the VXLAN device's options and
    offloads, how many nft rules each host has."""
    listed = sh(api, sandbox, "for i in /sys/class/net/*; do echo ${i##*/} $(cat $i/mtu); done")
    facts: dict[str, Any] = {
        "member_mtus": dict(line.split() for line in listed["stdout"].splitlines())
    }
    for name in ("h1", "h2"):
        netns = cluster.hosts[name].netns
        links = json.loads(_run("ip", "-n", netns, "-d", "-j", "link", "show"))
        kept = ("port", "udp_csum", "learning", "local")
        vxlan = [
            {"name": link["ifname"], "mtu": link["mtu"],
             "info": {k: v for k, v in link["linkinfo"].get("info_data", {}).items() if k in kept}}
            for link in links if link.get("linkinfo", {}).get("info_kind") == "vxlan"
        ]  # fmt: skip
        rules = _run("ip", "netns", "exec", netns, "nft", "-a", "list", "ruleset").splitlines()
        offloads = ""
        if vxlan:
            offloads = _run("ip", "netns", "exec", netns, "ethtool", "-k", vxlan[0]["name"])
        facts[name] = {
            "underlay_mtu": next((k["mtu"] for k in links if k["ifname"] == "eth0"), None),
            "vxlan": vxlan,
            "nft_rules": sum(
                1 for line in rules
                if "# handle" in line and not line.strip().startswith(("chain", "table", "set"))
            ),
            "vxlan_offloads_on": sorted(
                line.split(":")[0].strip() for line in offloads.splitlines()[1:]
                if line.strip().endswith(": on")
            ),
        }  # fmt: skip
    return facts


def one_host(root: Path, name: str, database_url: str | None) -> tuple[HutchProcess, str]:
    env = {"HUTCH_DRIVER": "runc", "HUTCH_IMAGES_DIR": str(IMAGES), "HUTCH_LINK_POOL": new_pool()}
    if database_url:
        env["HUTCH_DATABASE_URL"] = database_url
    server = HutchProcess(root / name, env=env).wait_ready()
    key = run_cli(server.home, "keys", "create", "--user", "bench", env=env).stdout.strip()
    return server, key


def profiled(args: argparse.Namespace, pids: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    if args.profile is None:
        return []
    args.profile.mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).parent / "py-spy")
    return [
        subprocess.Popen([spy, "record", "--subprocesses", "--nonblocking", "--rate", "200",
                          "--format", "raw", "-o", str(args.profile / f"{name}.folded"),
                          "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name, pid in pids.items()
    ]  # fmt: skip


def folded_summary(path: Path, top: int = 12) -> dict[str, Any]:
    """py-spy's folded stacks (``frame;frame;... count``, busy samples only): the total,
    and the hutch functions with the most samples under them (inclusive)."""
    total = 0
    inclusive: dict[str, int] = {}
    for line in path.read_text().splitlines() if path.exists() else ():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        for frame in set(stack.split(";")):
            if "hutch/" in frame:
                name = frame.split(" (")[0] + " " + frame.rsplit("/", 1)[-1].split(":")[0]
                inclusive[name] = inclusive.get(name, 0) + int(count)
    best = sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]
    return {"busy_samples": total, "hutch_inclusive": dict(best)}


def creates(cluster: Cluster, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Create -> first exec through each peer in turn (module docstring)."""
    sqlite, sqlite_key = one_host(root, "one", None)
    cluster.postgres.create_database("one_host")  # reached as the agents reach theirs
    pg, pg_key = one_host(root, "one-pg", cluster.database_url.replace("/cluster?", "/one_host?"))
    peer_proc = None
    try:
        socket_path = cluster.hosts["h1"].home / "run" / "agent.sock"
        clients = {
            "cluster": cluster.client(),
            "one_host_sqlite": sqlite.client(sqlite_key),
            "one_host_postgresql": pg.client(pg_key),
            "agent_socket": httpx.Client(
                transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://agent",
                headers={"X-Api-Key": cluster.key}, timeout=120),
        }  # fmt: skip
        if args.peer_control is not None:  # another version's control plane, same agents
            cluster.control_extra["PYTHONPATH"] = str(args.peer_control)
            output: list[str] = []
            peer_proc, url = cluster.start_control(output)
            cluster.control_extra.pop("PYTHONPATH")
            clients["cluster_peer_control"] = httpx.Client(
                base_url=url, headers={"X-Api-Key": cluster.key}, timeout=60)  # fmt: skip
        samples: dict[str, list[float]] = {name: [] for name in clients}
        parts: dict[str, dict[str, list[float]]] = {name: {} for name in clients}
        for client in clients.values():
            create_to_exec(client, 2)  # warm
        spies = profiled(args, {"control": cluster.control.pid,
                                "agent_h1": cluster.hosts["h1"].proc.pid})  # type: ignore[union-attr]  # fmt: skip
        loads = []
        names = [n for n in clients if not args.peers or n in args.peers.split(",")]
        for turn in range(args.creates):  # each peer in turn, who goes first rotating
            loads.append(os.getloadavg()[0])
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                samples[name] += create_to_exec(clients[name], 1, parts[name])
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        for client in clients.values():
            client.close()
    finally:
        if peer_proc is not None:
            peer_proc.terminate()
            peer_proc.wait(timeout=30)
        for server in (sqlite, pg):
            server.stop()
            remove_instance(server.home)
    p50 = {name: round(statistics.median(values), 1) for name, values in samples.items() if values}
    profile = {}
    if args.profile is not None:
        profile = {f.stem: folded_summary(f) for f in sorted(args.profile.glob("*.folded"))}
    return {
        "py_spy": profile,
        "p50": p50,
        "cluster_minus_one_host": {
            peer: round(p50["cluster"] - p50[peer], 1)
            for peer in ("one_host_postgresql", "one_host_sqlite") if peer in p50
        },
        "parts_p50": {name: p50s(values) for name, values in parts.items() if values},
        "load_1min": [round(v, 1) for v in loads], "n": args.creates,
    }  # fmt: skip


def main(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="hutch-bench-cluster-"))
    # The parts heartbeat at hutch's default interval (the tests' cluster uses 0.5 s, to
    # see a host die quickly: ten times the store traffic, all of it on these two cores).
    every = {"HUTCH_HEARTBEAT_INTERVAL_S": "5", "HUTCH_HOST_DEAD_AFTER_S": "30"}
    offer = {"HUTCH_HOST_CAPACITY_MIB": "4096", **every}
    result: dict[str, Any] = {"benchmark": "cluster_vs_one_host", "load_at_start": os.getloadavg()}
    cluster = Cluster(root, IMAGES, {"h1": offer, "h2": offer, "h3": offer}, control_env=every)
    try:
        if args.creates:
            result["create_to_first_exec_ms"] = creates(cluster, root, args)
        if not args.skip_tcp:
            network(cluster, args, result)
    finally:
        cluster.stop()
    result["load_average"] = os.getloadavg()
    result["goals"] = "create->exec p50 within +10 ms of one host; cross-host TCP >= 0.8x"
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=20)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=10, help="TCP pairs of runs, per phase")
    parser.add_argument(
        "--peer-control",
        type=Path,
        default=None,
        help="another version's src/: a second control plane on the agents",
    )
    parser.add_argument("--profile", type=Path, default=None, help="py-spy folded stacks here")
    parser.add_argument("--gro-phase", action="store_true")
    parser.add_argument("--peers", default="", help="only these create peers (comma-separated)")
    parser.add_argument("--skip-tcp", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cluster_net.json")
    arguments = parser.parse_args()
    outcome = main(arguments)
    text = json.dumps(outcome, indent=2)
    print(text)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(text + "\n")
