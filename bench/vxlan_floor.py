"""The kernel's own cost of crossing "hosts" by VXLAN on one machine, with nothing of hutch
(the peer of bench/cluster_net.py's cross-host TCP figure, issue 19).

    .venv/bin/python bench/vxlan_floor.py [--rounds 10] [--seconds 3] [--out FILE]

Builds, in network namespaces of its own, what the test cluster has: two "hosts" (a
namespace each, joined by a veth pair, as tests/support/cluster.py joins them through a
bridge), each with a bridge its members hang on by veths; a VXLAN device on each host
bridged into that bridge (members' MTU 1450, as hutch's). Three members: two on host 1,
one on host 2. iperf3 (one TCP stream, ``--seconds`` each) from member 1 to member 2
(same host: the bridge only) and from member 1 to member 3 (across the VXLAN), back to
back, the order turned every round; prints the median and spread of the rounds' ratios.
Every namespace is removed at the end, also on failure; nothing is routed in the host's
own namespace.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PREFIX = "hvxf"
HOSTS = ("h1", "h2")
MEMBERS = {"m1": ("h1", "10.251.0.1"), "m2": ("h1", "10.251.0.2"), "m3": ("h2", "10.251.0.3")}
UNDERLAY = {"h1": "10.250.0.1", "h2": "10.250.0.2"}
MTU = 1450


def sh(*argv: str, ns: str | None = None) -> str:
    if ns is not None:
        argv = ("ip", "netns", "exec", f"{PREFIX}-{ns}", *argv)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def build() -> None:
    for name in (*HOSTS, *MEMBERS):
        sh("ip", "netns", "add", f"{PREFIX}-{name}")
        sh("ip", "link", "set", "lo", "up", ns=name)
    # The hosts' link (the cluster's test bridge stands between them; a veth pair here).
    sh("ip", "link", "add", "u1", "netns", f"{PREFIX}-h1", "type", "veth",
       "peer", "name", "u2", "netns", f"{PREFIX}-h2")  # fmt: skip
    for host, dev in (("h1", "u1"), ("h2", "u2")):
        sh("ip", "addr", "add", f"{UNDERLAY[host]}/24", "dev", dev, ns=host)
        sh("ip", "link", "set", dev, "up", ns=host)
        sh("ip", "link", "add", "br0", "type", "bridge", ns=host)
        sh("ip", "link", "set", "br0", "up", ns=host)
        other = UNDERLAY["h2" if host == "h1" else "h1"]
        sh("ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "dstport", "4789",
           "local", UNDERLAY[host], "remote", other, "dev", dev, ns=host)  # fmt: skip
        sh("ip", "link", "set", "vx0", "master", "br0", "up", ns=host)
    for member, (host, address) in MEMBERS.items():
        inner, outer = f"e{member}", f"p{member}"
        sh("ip", "link", "add", outer, "netns", f"{PREFIX}-{host}", "type", "veth",
           "peer", "name", inner, "netns", f"{PREFIX}-{member}")  # fmt: skip
        sh("ip", "link", "set", outer, "master", "br0", "up", ns=host)
        sh("ip", "link", "set", inner, "mtu", str(MTU), "up", ns=member)
        sh("ip", "addr", "add", f"{address}/24", "dev", inner, ns=member)


def teardown() -> None:
    for name in (*MEMBERS, *HOSTS):
        subprocess.run(["ip", "netns", "del", f"{PREFIX}-{name}"], capture_output=True,
                       check=False)  # fmt: skip


def throughput(sender: str, receiver: str, seconds: float) -> float:
    """MiB/s of one iperf3 TCP stream from ``sender`` to ``receiver``'s address."""
    server = subprocess.Popen(["ip", "netns", "exec", f"{PREFIX}-{receiver}", "iperf3", "-s",
                               "-p", "5201"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    error = "no answer"
    try:
        for _ in range(100):  # until it listens, and again if a run ends without a result
            done = subprocess.run(["ip", "netns", "exec", f"{PREFIX}-{sender}", "iperf3", "-c",
                                   MEMBERS[receiver][1], "-p", "5201", "-t", str(seconds),
                                   "-J"], capture_output=True, text=True, check=False)  # fmt: skip
            try:
                result = json.loads(done.stdout)
            except ValueError:
                result = {"error": done.stderr.strip()}
            received = result.get("end", {}).get("sum_received")
            if received and "error" not in result:
                return float(received["bits_per_second"]) / 8 / 2**20
            error = str(result.get("error"))
            time.sleep(0.05)
        raise RuntimeError(f"iperf3 {sender} -> {receiver}: {error}")
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    load_before = os.getloadavg()
    teardown()
    try:
        build()
        rounds: list[dict[str, float]] = []
        for index in range(args.rounds):
            order = ("same", "cross") if index % 2 == 0 else ("cross", "same")
            measured = {kind: throughput("m1", "m2" if kind == "same" else "m3",
                                         args.seconds) for kind in order}  # fmt: skip
            rounds.append(measured)
            print(f"round {index + 1}: same {measured['same']:.0f} MiB/s, cross "
                  f"{measured['cross']:.0f} MiB/s", file=sys.stderr)  # fmt: skip
    finally:
        teardown()
    ratios = sorted(r["cross"] / r["same"] for r in rounds)
    quartiles = (
        statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    )
    report: dict[str, Any] = {
        "what": "bare VXLAN between two namespace hosts vs the same bridge (no hutch)",
        "rounds": rounds,
        "same_host_mib_s_p50": round(statistics.median(r["same"] for r in rounds)),
        "cross_host_mib_s_p50": round(statistics.median(r["cross"] for r in rounds)),
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_quartiles": [round(quartiles[0], 3), round(quartiles[2], 3)],
        "ratio_min_max": [round(ratios[0], 3), round(ratios[-1], 3)],
        "load_before_after": [load_before[0], os.getloadavg()[0]],
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
