"""Egress benchmarks (issue 14), each next to its peer in the same run.

    .venv/bin/python bench/egress.py [--quick] [--out bench/results/egress.json]

It starts the tests' small internet (tests.support.internet: a namespace "upstream" with
198.18.N.0/24 routed into it) and two ``hutch serve`` (runc): one as shipped ("on"), one
whose egress layer is the bookkeeping-only fake ("off": no NAT'd traffic gets through and
no per-sandbox nft transaction runs). Then:

1. throughput: iperf3 (TCP) from a sandbox's network namespace to an iperf3 server in the
   upstream namespace, next to the host itself to the same server and to a bare namespace
   (a veth and one masquerade rule, no hutch: the kernel's floor for any namespace
   sandbox); open, and with 50 rules (the server allowed by the last); ratios sandbox /
   host, bare / host and sandbox / bare.
2. latency: 1-byte TCP round trips on an open connection, and TCP connects, to an echo
   server upstream, from the sandbox and from the host: p50 and the difference.
3. DNS answer -> first allowed SYN: sandboxes restricted to ``example.test`` and
   ``*.example.test`` ask hutch's DNS for a name and connect as soon as the answer is in;
   that first connect next to a second one to the same address (already allowed), and
   how many first connects were refused (none, if the set is filled before the answer).
4. PUT of 256 rules (the API answers once the kernel has them), next to a PUT of 1 rule.
5. 1,000 sandboxes x 50 rules, made with hutch's own table and per-sandbox scripts
   (hutch.host.firewall, hutch.host.egress) in throwaway namespaces, never the host's:
   kernel memory (Slab + Percpu in /proc/meminfo before and after loading, the median of
   3) and load time; and per-packet cost: a sandbox-like namespace behind a router
   namespace holding the table, its 50-rule policy allowing the server by the last rule,
   measured with no table, with its policy alone, and with 999 more beside it (throughput,
   round trips, and how long ``nft -j list counter`` takes, which hutch reads counters
   with).
6. create -> first exec through the API, "on" next to "off", interleaved.

Client programs run host-side inside the sandbox's network namespace (``ip netns exec``):
their packets take the sandbox's link and the host's forward path and policy exactly as a
process in the sandbox would, without its CPU quota. No thresholds: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.egress_net import (  # noqa: E402
    ECHO_PORT,
    ECHO_SERVER,
    IPERF_PORT,
    LATENCY_CLIENT,
    PYTHON,
    iperf,
    namespaces,
    sh,
    spawned,
)
from bench.egress_scale import nft_memory, per_packet  # noqa: E402
from bench.sandboxes import create_and_first_exec, percentiles  # noqa: E402
from tests.support.internet import Internet  # noqa: E402
from tests.support.server import HutchProcess, remove_instance, run_cli  # noqa: E402

from hutch.host.machine import read_memory  # noqa: E402

IMAGES = Path(os.environ.get("HUTCH_IMAGES_DIR", "/var/cache/hutch-test-images"))
SHAPE = "s-1vcpu-256mb"
BATCHES = 5

# Egress "off": the host agent gets the fake egress layer instead of nftables.
OFF_SITECUSTOMIZE = """\
import hutch.host.agent as _agent
from hutch.host.egress import FakeEgress as _Fake
_agent.EgressFirewall = lambda firewall, *, tag: _Fake()
"""

# Run in a sandbox's namespace: ask hutch's DNS (the link's host end), connect at once.
DNS_CLIENT = """\
import json, socket, sys, time
from dnslib import DNSRecord, QTYPE
resolver, port, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
out = []
for name in names:
    q = DNSRecord.question(name); u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(5); t0 = time.perf_counter(); u.sendto(q.pack(), (resolver, 53))
    answer = DNSRecord.parse(u.recv(4096)); t1 = time.perf_counter()
    ips = [str(r.rdata) for r in answer.rr if r.rtype == QTYPE.A]
    row = {"name": name, "lookup_us": (t1 - t0) * 1e6, "address": ips[0] if ips else None}
    if ips:
        for key in ("first_connect_us", "second_connect_us"):
            t = time.perf_counter()
            try:
                socket.create_connection((ips[0], port), timeout=5).close()
                row[key] = (time.perf_counter() - t) * 1e6
            except OSError as exc:
                row[key] = None; row.setdefault("error", str(exc))
    out.append(row)
print(json.dumps(out))
"""


def sandbox_netns(sandbox_id: str) -> str:
    found = [p.name for p in Path("/run/netns").glob(f"hutch-*-{sandbox_id}")]
    if len(found) != 1:
        raise RuntimeError(f"no network namespace for {sandbox_id}")
    return found[0]


def throughput(target: str, netns: str, bare: str, seconds: float, rounds: int) -> dict[str, Any]:
    """The host, a bare namespace (veth + NAT, no hutch) and the sandbox, interleaved."""
    runs: dict[str, list[float]] = {"host": [], "bare": [], "sandbox": []}
    for i in range(rounds):  # interleaved, so drift on a shared machine hits all three
        # The order alternates: the later runs of a round tend to find the CPUs warmer.
        order = [("host", None), ("bare", bare), ("sandbox", netns)]
        for name, where in order if i % 2 == 0 else order[::-1]:
            runs[name].append(iperf(target, seconds, where))
    host, sandbox = runs["host"], runs["sandbox"]

    def paired(a: list[float], b: list[float]) -> float:
        return round(statistics.median(x / y for x, y in zip(a, b, strict=True)), 3)

    return {
        "host_gbit_s": [round(v, 3) for v in host],
        "bare_namespace_gbit_s": [round(v, 3) for v in runs["bare"]],
        "sandbox_gbit_s": [round(v, 3) for v in sandbox],
        "ratio_sandbox_to_host": round(statistics.median(sandbox) / statistics.median(host), 3),
        "ratio_per_round_median": paired(sandbox, host),
        "ratio_bare_namespace_to_host_per_round_median": paired(runs["bare"], host),
        "ratio_sandbox_to_bare_namespace_per_round_median": paired(sandbox, runs["bare"]),
    }


@contextmanager
def bare_namespace() -> Iterator[str]:
    """The kernel's own floor for a sandbox's path: a namespace joined to the host by a veth,
    its traffic masqueraded by one nft rule, and nothing else (no hutch)."""
    name, link = f"hbench-{os.getpid()}-bare", f"hbb{os.getpid() % 100000}"
    table = f"hbench_bare_{os.getpid()}"
    with namespaces(name):
        try:
            sh("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", name)
            sh("ip", "addr", "add", "10.252.0.1/30", "dev", link)
            sh("ip", "link", "set", link, "up")
            sh("ip", "addr", "add", "10.252.0.2/30", "dev", "eth0", netns=name)
            sh("ip", "link", "set", "eth0", "up", netns=name)
            sh("ip", "route", "add", "default", "via", "10.252.0.1", netns=name)
            sh(
                "nft",
                "-f",
                "-",
                stdin=(
                    f"table ip {table} {{\n chain post {{\n"
                    "  type nat hook postrouting priority srcnat;\n"
                    "  ip saddr 10.252.0.0/30 masquerade\n }\n}\n"
                ),
            )
            yield name
        finally:
            subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True)
            subprocess.run(["ip", "link", "del", link], capture_output=True)


def latency(target: str, netns: str, count: int) -> dict[str, Any]:
    def run(ns: str | None) -> dict[str, list[float]]:
        out = sh(PYTHON, "-c", LATENCY_CLIENT, target, str(ECHO_PORT), str(count // BATCHES),
                 netns=ns)  # fmt: skip
        return json.loads(out)  # type: ignore[no-any-return]

    # Interleaved batches: with 2 cores the round trip is bimodal (client and echo server
    # on one core or on two), and drift on a shared machine must hit both sides alike.
    kinds = ("round_trip_us", "connect_us")
    host: dict[str, list[float]] = {kind: [] for kind in kinds}
    sandbox: dict[str, list[float]] = {kind: [] for kind in kinds}
    added: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(BATCHES):
        h, b = run(None), run(netns)
        for kind in kinds:
            host[kind] += h[kind]
            sandbox[kind] += b[kind]
            added[kind].append(statistics.median(b[kind]) - statistics.median(h[kind]))
    result: dict[str, Any] = {}
    for kind in kinds:
        result[kind] = {"host": percentiles(host[kind]), "sandbox": percentiles(sandbox[kind]),
                        "added_p50_us_per_batch": [round(a, 1) for a in added[kind]],
                        "added_p50_us": round(statistics.median(added[kind]), 1)}  # fmt: skip
    return result


def rules_50(target: str) -> list[str]:
    """49 rules that do not match ``target``, then one that does."""
    filler = [f"203.0.113.{i}:443" if i % 2 else f"198.19.{200 + i}.0/24" for i in range(49)]
    return [*filler, target]


def dns_to_syn(api: httpx.Client, internet: Internet, rounds: int) -> dict[str, Any]:
    names = ["example.test", "www.example.test", "api.example.test", "short.example.test",
             "multi.example.test"]  # fmt: skip
    rows: list[dict[str, Any]] = []
    for _ in range(rounds):  # a fresh sandbox each round: every address is new to its sets
        box = make(api, egress=["example.test", "*.example.test"])
        try:
            netns = sandbox_netns(box["id"])
            gateway = sh("ip", "-4", "route", "show", "default", netns=netns).split()[2]
            rows += json.loads(sh(PYTHON, "-c", DNS_CLIENT, gateway, "80", *names, netns=netns))
        finally:
            api.delete(f"/v1/sandboxes/{box['id']}")
    first = [r["first_connect_us"] for r in rows if r.get("first_connect_us") is not None]
    second = [r["second_connect_us"] for r in rows if r.get("second_connect_us") is not None]
    return {
        "trials": len(rows),
        "first_connects_refused_or_failed": sum(1 for r in rows if "error" in r),
        "unresolved": sum(1 for r in rows if r["address"] is None),
        "lookup_us": percentiles([r["lookup_us"] for r in rows]),
        "first_connect_after_answer_us": percentiles(first or [0.0]),
        "second_connect_us": percentiles(second or [0.0]),
        "ratio_first_to_second_p50": round(statistics.median(first) / statistics.median(second), 2)
        if first and second
        else None,
        "errors": sorted({r["error"] for r in rows if "error" in r})[:5],
    }


def put_rules(api: httpx.Client, count: int) -> dict[str, Any]:
    box = make(api)
    try:
        lists = [[f"198.18.{200 + k // 250}.{k % 250 + offset}:{443 + offset}" for k in range(256)]
                 for offset in (0, 1)]  # fmt: skip
        many, one = [], []
        for i in range(count):
            for rules, samples in ((lists[i % 2], many), ([f"198.18.250.{i % 200}"], one)):
                started = time.perf_counter()
                answer = api.put(f"/v1/sandboxes/{box['id']}/egress", json={"egress": rules})
                samples.append((time.perf_counter() - started) * 1000)
                answer.raise_for_status()
        return {
            "put_256_rules_ms": percentiles(many),
            "put_1_rule_ms": percentiles(one),
            "ratio_p50_256_to_1": round(statistics.median(many) / statistics.median(one), 2),
        }
    finally:
        api.delete(f"/v1/sandboxes/{box['id']}")


def progress(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def make(api: httpx.Client, **body: Any) -> dict[str, Any]:
    answer = api.post("/v1/sandboxes", json={"shape": SHAPE, **body})
    answer.raise_for_status()
    return answer.json()["data"]  # type: ignore[no-any-return]


def server(home: Path, pool: str, internet: Internet, *, off: bool) -> HutchProcess:
    env = {
        "HUTCH_DRIVER": "runc",
        "HUTCH_IMAGES_DIR": str(IMAGES),
        "HUTCH_LINK_POOL": pool,
        "HUTCH_MAX_RUNNING_PER_USER": "1000",
        "HUTCH_BANDWIDTH_QUOTA_BYTES": str(1 << 50),  # metered (the quota rule is in the
        # path, as by default) but never exhausted by these runs
        "HUTCH_DNS_UPSTREAM": internet.resolver,
    }
    if off:
        site = home.parent / "egress-off"
        site.mkdir(parents=True, exist_ok=True)
        (site / "sitecustomize.py").write_text(OFF_SITECUSTOMIZE)
        env["PYTHONPATH"] = str(site)
    return HutchProcess(home, env=env).wait_ready()


def create_on_off(on: HutchProcess, off: HutchProcess, count: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"on": [], "off": []}
    clients = {"on": on.client(on.admin_key), "off": off.client(off.admin_key)}
    for api in clients.values():  # warm-up: the first create makes the disk template
        api.delete(f"/v1/sandboxes/{create_and_first_exec(api)[1]}")
    for _ in range(count):
        for name, api in clients.items():
            ms, sandbox_id, _ = create_and_first_exec(api)
            samples[name].append(ms)
            api.delete(f"/v1/sandboxes/{sandbox_id}")
    for api in clients.values():
        api.close()
    batch = max(count // 3, 1)
    return {
        "egress_on_ms": percentiles(samples["on"]),
        "egress_off_ms": percentiles(samples["off"]),
        "added_p50_ms": round(
            statistics.median(samples["on"]) - statistics.median(samples["off"]), 2
        ),
        # The same, in three batches of the run: how much the difference itself moves.
        "added_p50_ms_per_batch": [
            round(median(samples["on"][i : i + batch]) - median(samples["off"][i : i + batch]), 2)
            for i in range(0, batch * 3, batch)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "egress.json")
    args = parser.parse_args()
    seconds, rounds, count, creates = (2, 2, 200, 10) if args.quick else (3, 9, 2000, 60)

    run_cli(Path("/tmp"), "images", "build", env={"HUTCH_IMAGES_DIR": str(IMAGES)})
    root = Path(tempfile.mkdtemp(prefix="hutch-bench-egress-"))
    internet = Internet(root / "internet").start()
    target = internet.address("api.example.test")
    report: dict[str, Any] = {
        "benchmark": "egress",
        "machine": {"cpus": os.cpu_count(), "mem_mib": read_memory().total_mib,
                    "kernel": platform.release(), "python": platform.python_version()},
    }  # fmt: skip
    on = off = None
    try:
        progress("servers")
        on = server(root / "on" / "home", "10.86.0.0/16", internet, off=False)
        off = server(root / "off" / "home", "10.87.0.0/16", internet, off=True)
        assert on.admin_key and off.admin_key
        api = on.client(on.admin_key)
        up = internet.netns
        with spawned(["iperf3", "-s", "-B", target, "-p", str(IPERF_PORT)], up), \
             spawned([PYTHON, "-c", ECHO_SERVER, target, str(ECHO_PORT)], up), \
             bare_namespace() as bare:  # fmt: skip
            box = make(api)
            netns = sandbox_netns(box["id"])
            progress("sandbox vs host, open")
            report["open"] = {
                "throughput": throughput(target, netns, bare, seconds, rounds),
                "latency": latency(target, netns, count),
            }
            api.put(f"/v1/sandboxes/{box['id']}/egress",
                    json={"egress": rules_50(target)}).raise_for_status()  # fmt: skip
            progress("sandbox vs host, 50 rules")
            report["rules_50"] = {
                "throughput": throughput(target, netns, bare, seconds, rounds),
                "latency": latency(target, netns, count),
            }
            api.delete(f"/v1/sandboxes/{box['id']}")
        progress("1,000 sandboxes x 50 rules: per-packet cost")
        report["per_packet_1000_sandboxes_x_50_rules"] = per_packet(seconds, rounds, count)
        progress("1,000 sandboxes x 50 rules: kernel memory")
        report["nft_1000_sandboxes_x_50_rules"] = nft_memory(1000, 50, 3)
        progress("DNS answer to first SYN")
        report["dns_answer_to_first_syn"] = dns_to_syn(api, internet, 4 if args.quick else 8)
        progress("PUT of 256 rules")
        report["put_rules"] = put_rules(api, 10 if args.quick else 30)
        api.close()
        progress("create -> first exec, on and off")
        report["create_to_first_exec"] = create_on_off(on, off, creates)
    finally:
        for process in (on, off):
            if process is not None:
                process.stop()
                remove_instance(process.home)
        internet.stop()
        shutil.rmtree(root, ignore_errors=True)
    document = json.dumps(report, indent=2)
    print(document)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(document + "\n")


if __name__ == "__main__":
    main()
