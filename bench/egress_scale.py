"""Egress at scale (bench/egress.py, part 5): 1,000 sandboxes x 50 rules made with
hutch's own table and per-sandbox scripts (hutch.host.firewall, hutch.host.egress) in
throwaway namespaces, never the host's: kernel memory and load time, and the per-packet
cost next to one sandbox's policy alone and to no table at all."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from dataclasses import replace
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from bench.egress_net import (
    ECHO_PORT,
    ECHO_SERVER,
    IPERF_PORT,
    LATENCY_CLIENT,
    PYTHON,
    iperf,
    med,
    namespaces,
    sh,
    spawned,
)
from bench.sandboxes import percentiles

from hutch.host.egress import EgressSpec
from hutch.host.egress_rules import apply_script
from hutch.host.firewall import Firewall

# Run in a namespace holding hutch's table: its own nft calls, timed (ms).
NFT_TIMING = """\
import asyncio, json, sys, time
from hutch.host.egress_rules import resolved_elements
from hutch.host.nfnetlink import add_timed_elements, read_counter
from hutch.host.nft import nft
table, link, n, script = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.stdin.read()
async def main():
    reads, applies, resolved = [], [], []
    for _ in range(n):
        t = time.perf_counter()
        assert await read_counter(table, f"tx_{link}") is not None
        reads.append((time.perf_counter() - t) * 1000)
    for _ in range(n):
        t = time.perf_counter(); await nft(script); applies.append((time.perf_counter() - t) * 1000)
    for i in range(n):
        set_name, keys = resolved_elements(link, [f"198.18.253.{i}"], None)
        t = time.perf_counter()
        await add_timed_elements(table, set_name, keys, 60_000, "bench.test")
        resolved.append((time.perf_counter() - t) * 1000)
    print(json.dumps({"reads": reads, "applies": applies, "resolved": resolved}))
asyncio.run(main())
"""


def synthetic_specs(count: int, rules: int) -> list[tuple[str, EgressSpec]]:
    specs = []
    for i in range(count):
        numbers = [i * rules + r for r in range(rules)]
        networks = [(IPv4Network(f"198.19.{200 + n // 256 % 50}.{n % 256}/32"),
                     443 if n % 2 else None) for n in numbers]  # fmt: skip
        spec = EgressSpec(sandbox_id=f"sb_bench{i}", ip=f"10.250.{i // 64}.{(i % 64) * 4 + 2}",
                          restricted=True, networks=networks, quota_bytes=5 << 30)  # fmt: skip
        specs.append((f"hvbnch{i:08x}", spec))
    return specs


def load_specs(
    table: str, specs: list[tuple[str, EgressSpec]], netns: str, *, batch: bool = False
) -> float:
    """Apply sandboxes' scripts: one ``nft -f`` each as hutch does, or all in one
    (``batch``, quicker to set up a thousand); seconds taken."""
    scripts = [apply_script(table, ifname, spec, used_now=0, seed_sent=0, seed_received=0)
               for ifname, spec in specs]  # fmt: skip
    started = time.perf_counter()
    for script in ["".join(scripts)] if batch else scripts:
        subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=script,
                       text=True, check=True)  # fmt: skip
    return time.perf_counter() - started


def per_packet(seconds: float, rounds: int, count: int) -> dict[str, Any]:
    """A sandbox-like namespace S behind a router R with hutch's table, to D: S's 50-rule
    policy allows D by its last rule. Measured with no table, with only S's policy, and
    with 999 more sandboxes' (50 rules each) beside it."""
    pid = os.getpid()
    r, s, d = (f"hbench-{pid}-{x}" for x in "rsd")
    firewall = Firewall(tag="bnch00")
    firewall.link_pool = IPv4Network("10.250.0.0/16")
    specs = synthetic_specs(1000, 50)
    link, first = specs[0]
    dest = "198.18.254.2"
    # Its quota rule is kept in the path, set so high that the runs never exhaust it.
    specs[0] = (link, replace(first, networks=[*first.networks[:49], (IPv4Network(dest), None)],
                              quota_bytes=1 << 50))  # fmt: skip
    out: dict[str, Any] = {}
    with namespaces(r, s, d):
        sh(*f"ip link add {link} netns {r} type veth peer name eth0 netns {s}".split())
        sh(*f"ip link add up0 netns {r} type veth peer name eth0 netns {d}".split())
        for ns, lines in (
            (r, ["link set lo up", f"addr add 10.250.0.1/30 dev {link}", f"link set {link} up",
                 "addr add 198.18.254.1/30 dev up0", "link set up0 up"]),
            (s, ["link set lo up", "addr add 10.250.0.2/30 dev eth0", "link set eth0 up",
                 "route add default via 10.250.0.1"]),
            (d, ["link set lo up", f"addr add {dest}/30 dev eth0", "link set eth0 up",
                 "route add 10.250.0.0/16 via 198.18.254.1"]),
        ):  # fmt: skip
            subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n",
                           text=True, check=True)  # fmt: skip
        sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", netns=r)
        with spawned(["iperf3", "-s", "-B", dest, "-p", str(IPERF_PORT)], d), \
             spawned([PYTHON, "-c", ECHO_SERVER, dest, str(ECHO_PORT)], d):  # fmt: skip

            def measure() -> dict[str, Any]:
                gbit = [iperf(dest, seconds, s) for _ in range(rounds)]
                lat = json.loads(sh(PYTHON, "-c", LATENCY_CLIENT, dest, str(ECHO_PORT),
                                    str(count), netns=s))  # fmt: skip
                return {"gbit_s": [round(g, 3) for g in gbit],
                        "round_trip_us": percentiles(lat["round_trip_us"]),
                        "connect_us": percentiles(lat["connect_us"])}  # fmt: skip

            script = apply_script(firewall.table, link, specs[0][1], used_now=0, seed_sent=0,
                                  seed_received=0)  # fmt: skip

            def control_ms() -> dict[str, Any]:
                """What hutch's own nft calls (hutch.host.nft) cost now, run in R: reading
                a sandbox's counter, and applying its policy again."""
                timed = json.loads(sh(PYTHON, "-c", NFT_TIMING, firewall.table, link, "10",
                                      netns=r, stdin=script))  # fmt: skip
                return {"nft_read_counter_ms": percentiles(timed["reads"]),
                        "nft_apply_one_policy_ms": percentiles(timed["applies"]),
                        "nft_allow_resolved_ms": percentiles(timed["resolved"])}  # fmt: skip

            out["no_table"] = measure()
            subprocess.run(["ip", "netns", "exec", r, "nft", "-f", "-"],
                           input=firewall.ruleset(), text=True, check=True)  # fmt: skip
            load_specs(firewall.table, specs[:1], r)
            out["one_sandbox"] = measure() | control_ms()
            batched = load_specs(firewall.table, specs[1:], r, batch=True)
            out["load_999_more_in_one_transaction_s"] = round(batched, 2)
            out["thousand_sandboxes"] = measure() | control_ms()
    one, many = out["one_sandbox"], out["thousand_sandboxes"]
    for key in ("nft_read_counter_ms", "nft_apply_one_policy_ms", "nft_allow_resolved_ms"):
        out[f"ratio_p50_{key}_1000_to_1"] = round(many[key]["p50"] / one[key]["p50"], 1)
    out["throughput_ratio_1000_to_1"] = round(med(many["gbit_s"]) / med(one["gbit_s"]), 3)
    out["throughput_ratio_1_to_no_table"] = round(
        med(one["gbit_s"]) / med(out["no_table"]["gbit_s"]), 3
    )
    out["per_packet_added_us_1000_vs_1"] = round(
        many["round_trip_us"]["p50"] - one["round_trip_us"]["p50"], 1
    )
    out["per_packet_added_us_1_vs_no_table"] = round(
        one["round_trip_us"]["p50"] - out["no_table"]["round_trip_us"]["p50"], 1
    )
    return out


def kernel_kib() -> int:
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return sum(int(fields[name].split()[0]) for name in ("Slab", "Percpu"))


def nft_memory(count: int, rules: int, rounds: int) -> dict[str, Any]:
    specs = synthetic_specs(count, rules)
    deltas, seconds = [], []
    netns = f"hbench-egress-{os.getpid()}"
    for _ in range(rounds):
        sh("ip", "netns", "add", netns)
        try:
            firewall = Firewall(tag="bnch00")
            firewall.link_pool = IPv4Network("10.250.0.0/16")
            subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"],
                           input=firewall.ruleset(), text=True, check=True)  # fmt: skip
            time.sleep(1)
            before = kernel_kib()
            seconds.append(load_specs(firewall.table, specs, netns, batch=True))
            time.sleep(1)
            deltas.append(kernel_kib() - before)
        finally:
            sh("ip", "netns", "del", netns)
        time.sleep(2)
    delta = statistics.median(deltas)
    return {
        "sandboxes": count,
        "rules_each": rules,
        "kernel_memory_kib": deltas,
        "kib_per_sandbox": round(delta / count, 2),
        "bytes_per_rule": round(delta * 1024 / (count * rules), 1),
        "load_in_one_transaction_s": [round(s, 2) for s in seconds],
    }
