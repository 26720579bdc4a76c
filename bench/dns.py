"""Sandboxes' lookups through hutch's DNS server, with their floor measured in the same run.

    .venv/bin/python bench/dns.py [--quick] [--out bench/results/dns.json]

On the tests' small internet (tests.support.internet: an authoritative dnslib server and
HTTP servers in a namespace of their own; nothing leaves the machine), with a ``hutch
serve`` (runc driver) whose ``HUTCH_DNS_UPSTREAM`` is that server:

1. Lookup time (an A query over UDP, no resolver library, a fresh name each time so no
   cache anywhere helps) from inside an **open** sandbox (forwarded, unfiltered) and from
   inside a **restricted** one (rule ``*.wild.test``: forwarded, and the answer's address
   put into the sandbox's allowed set in the kernel before the answer leaves); the floor:
   the same queries from the host straight to the upstream server.
2. Lookup then connect: right after each answer the restricted sandbox connects to the
   address it got (port 80). ``first_syn_passed`` counts the connects that succeeded on the
   first try: the set is filled before the answer, so it should be all of them, and the
   connect time should match the open sandbox's. Queries unanswered within 5 s are
   counted, not retried (a resolver would retry them).

It destroys everything it made and prints one JSON document. No thresholds.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from dnslib import DNSRecord

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.internet import Internet  # noqa: E402
from tests.support.server import HutchProcess, remove_instance  # noqa: E402

IMAGES = Path(os.environ.get("HUTCH_IMAGES_DIR", "/var/cache/hutch-test-images"))

PROBE = r"""
import json, socket, struct, sys, time
resolver = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
prefix, count, connect = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "connect"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
lookups, connects, passed, failed, lost = [], [], 0, 0, 0
for i in range(count):
    name = f"{prefix}{i}.wild.test"
    query = struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    query += struct.pack("!HH", 1, 1)
    started = time.perf_counter()
    s.sendto(query, (resolver, 53))
    try:
        reply = s.recv(4096)
    except TimeoutError:
        lost += 1
        continue
    lookups.append(time.perf_counter() - started)
    if not connect:
        continue
    address = socket.inet_ntoa(reply[-4:])
    started = time.perf_counter()
    try:
        socket.create_connection((address, 80), timeout=5).close()
        connects.append(time.perf_counter() - started)
        passed += 1
    except OSError:
        failed += 1
print(json.dumps({"lookups": lookups, "connects": connects, "passed": passed, "failed": failed,
                  "lost": lost}))
"""


def say(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def summary(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
        "n": len(ordered),
    }


def probe(api: httpx.Client, box: str, count: int, *, connect: bool) -> dict[str, Any]:
    prefix = f"b{secrets.token_hex(3)}-"
    answer = api.post(
        f"/v1/sandboxes/{box}/exec",
        json={"cmd": "python3", "args": ["-c", PROBE, prefix, str(count),
                                         "connect" if connect else "lookup"],
              "timeout_secs": 600},
    )  # fmt: skip
    answer.raise_for_status()
    result = answer.json()["data"]["result"]
    if result["exit_code"] != 0:
        raise RuntimeError(f"the probe failed: {result}")
    found: dict[str, Any] = json.loads(result["stdout"])
    return found


def from_host(resolver: str, count: int) -> list[float]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    prefix = f"h{secrets.token_hex(3)}-"
    times = []
    for i in range(count):
        query = DNSRecord.question(f"{prefix}{i}.wild.test").pack()
        started = time.perf_counter()
        sock.sendto(query, (resolver, 53))
        sock.recv(4096)
        times.append(time.perf_counter() - started)
    sock.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "dns.json")
    args = parser.parse_args()
    count = 100 if args.quick else 500
    # A `timeout` or Ctrl-C still tears down the server, its sandboxes and the internet.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    root = Path(tempfile.mkdtemp(prefix="hutch-bench-dns-"))
    internet = Internet(root / "internet")
    server: HutchProcess | None = None
    report: dict[str, Any] = {"benchmark": "dns", "lookups_each": count}
    try:
        internet.start()
        say(f"the test internet is up (slot {internet.slot})")
        server = HutchProcess(root / "home", env={
            "HUTCH_DRIVER": "runc", "HUTCH_IMAGES_DIR": str(IMAGES),
            "HUTCH_LINK_POOL": "10.98.0.0/16", "HUTCH_DNS_UPSTREAM": internet.resolver,
        }).wait_ready()  # fmt: skip
        assert server.admin_key
        api = server.client(server.admin_key)
        api.timeout = httpx.Timeout(600)
        boxes = [
            api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"}).json()["data"]["id"]
            for _ in range(2)
        ]
        open_box, restricted = boxes
        answer = api.put(f"/v1/sandboxes/{restricted}/egress", json={"egress": ["*.wild.test"]})
        answer.raise_for_status()

        say("two sandboxes, one restricted to *.wild.test")
        floor = from_host(internet.resolver, count)
        say("lookups from the host done")
        opened = probe(api, open_box, count, connect=False)
        say("lookups from the open sandbox done")
        closed = probe(api, restricted, count, connect=False)
        say("lookups from the restricted sandbox done")
        report["lookup"] = {
            "host_to_upstream_directly": summary(floor),
            "open_sandbox_through_hutch": summary(opened["lookups"]),
            "restricted_sandbox_through_hutch_with_kernel_update": summary(closed["lookups"]),
            "unanswered_in_5_s": {"open": opened["lost"], "restricted": closed["lost"]},
        }
        open_connect = probe(api, open_box, count, connect=True)
        closed_connect = probe(api, restricted, count, connect=True)
        report["lookup_then_connect"] = {
            "open_sandbox": {
                "lookup": summary(open_connect["lookups"]),
                "connect": summary(open_connect["connects"]),
                "first_syn_passed": open_connect["passed"],
                "failed": open_connect["failed"],
                "unanswered": open_connect["lost"],
            },
            "restricted_sandbox": {
                "lookup": summary(closed_connect["lookups"]),
                "connect": summary(closed_connect["connects"]),
                "first_syn_passed": closed_connect["passed"],
                "failed": closed_connect["failed"],
                "unanswered": closed_connect["lost"],
            },
        }
        look = report["lookup"]
        base = look["host_to_upstream_directly"]["p50_ms"]
        report["ratios_p50_to_direct"] = {
            "open": round(look["open_sandbox_through_hutch"]["p50_ms"] / base, 2),
            "restricted": round(
                look["restricted_sandbox_through_hutch_with_kernel_update"]["p50_ms"] / base, 2
            ),
        }
    finally:
        if server is not None:
            server.stop()
            remove_instance(server.home)
        internet.stop()
    text = json.dumps(report, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
