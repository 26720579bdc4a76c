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
from dataclasses import replace
from ipaddress import IPv4Network
from pathlib import Path
from statistics import median
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.sandboxes import create_and_first_exec, percentiles  # noqa: E402
from tests.support.internet import Internet  # noqa: E402
from tests.support.server import HutchProcess, remove_instance, run_cli  # noqa: E402

from hutch.host.egress import EgressSpec, apply_script  # noqa: E402
from hutch.host.firewall import Firewall  # noqa: E402
from hutch.host.machine import read_memory  # noqa: E402

IMAGES = Path(os.environ.get("HUTCH_IMAGES_DIR", "/var/cache/hutch-test-images"))
SHAPE = "s-1vcpu-256mb"
IPERF_PORT, ECHO_PORT = 5201, 7007
BATCHES = 5
PYTHON = sys.executable

# Egress "off": the host agent gets the fake egress layer instead of nftables.
OFF_SITECUSTOMIZE = """\
import hutch.host.agent as _agent
from hutch.host.egress import FakeEgress as _Fake
_agent.EgressFirewall = lambda firewall, *, tag: _Fake()
"""

ECHO_SERVER = """\
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(512)
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (b := c.recv(4096)):
        c.sendall(b)
    c.close()
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""

# Run in a network namespace: N connects, then N 1-byte round trips on one connection (us).
LATENCY_CLIENT = """\
import json, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
connects, trips = [], []
for _ in range(n):
    t = time.perf_counter(); c = socket.create_connection((host, port), timeout=5)
    connects.append((time.perf_counter() - t) * 1e6); c.close()
c = socket.create_connection((host, port), timeout=5)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for _ in range(n):
    t = time.perf_counter(); c.sendall(b"x"); c.recv(1)
    trips.append((time.perf_counter() - t) * 1e6)
print(json.dumps({"connect_us": connects, "round_trip_us": trips}))
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


# Run in a namespace holding hutch's table: its own nft calls, timed (ms).
NFT_TIMING = """\
import asyncio, json, sys, time
from hutch.host.egress import resolved_elements
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


def sh(*argv: str, netns: str | None = None, timeout: float = 300, stdin: str | None = None) -> str:
    command = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()[-500:]}")
    return done.stdout


def sandbox_netns(sandbox_id: str) -> str:
    found = [p.name for p in Path("/run/netns").glob(f"hutch-*-{sandbox_id}")]
    if len(found) != 1:
        raise RuntimeError(f"no network namespace for {sandbox_id}")
    return found[0]


def med(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def iperf(target: str, seconds: float, netns: str | None) -> float:
    """Gbit/s received by the server."""
    out = sh("iperf3", "-c", target, "-p", str(IPERF_PORT), "-t", str(seconds), "-J",
             "--connect-timeout", "5000", netns=netns, timeout=seconds + 60)  # fmt: skip
    result = json.loads(out)
    if "error" in result:
        raise RuntimeError(f"iperf3 to {target} in {netns or 'the host'}: {result['error']}")
    return float(result["end"]["sum_received"]["bits_per_second"]) / 1e9


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


@contextmanager
def spawned(argv: list[str], netns: str) -> Iterator[None]:
    proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(1)
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited at once in {netns}")
        yield
    finally:
        proc.kill()
        proc.wait()


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


@contextmanager
def namespaces(*names: str) -> Iterator[None]:
    try:
        for name in names:
            sh("ip", "netns", "add", name)
        yield
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


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
        sh(
            "ip",
            "link",
            "add",
            link,
            "netns",
            r,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            s,
        )
        sh(
            "ip",
            "link",
            "add",
            "up0",
            "netns",
            r,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            d,
        )
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


def progress(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


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
