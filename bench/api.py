"""API throughput and exec round trip vs the number of control-plane workers and clients.

    .venv/bin/python bench/api.py [--seconds 8] [--workers 1,2,4] [--clients 8,32,128]
                                  [--out bench/results/api.json]

For each form of ``hutch serve`` (``--one-process``, the peer: everything in one process
as before the split; then the agent with 1, 2 and 4 workers) it starts its own server
(runc driver) in a temp home, makes one running sandbox, and measures:

- reads: ``GET /v1/sandboxes/{id}`` with a key, by wrk (Debian; ``make bench`` installs
  it), 2 threads and 32 connections (the issue's figure), for ``--seconds``; requests per
  second, p50 and p99; the same at each of ``--clients`` connections (the chart's second
  axis); a worker answers a repeated read from what it kept while the store is unchanged
  (``hutch.roles.answers``), so also
- ``GET /v1/sandboxes`` (the list: the app and a store read on every request, nothing
  kept) and ``GET /v1/shapes`` (no key, no store read) at 32 connections;
- exec round trip: 300 sequential ``POST …/exec`` of ``true`` on one keep-alive
  connection, next to a bare fork/exec of ``true`` in the same run.

The load generator runs on the same cores as the server (2 here), so more workers than
cores compete with it; read the ratios between forms, all taken in one run, and the load
average at the start and end (other work on the machine). No thresholds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.sandboxes import bare_fork_exec, percentiles  # noqa: E402
from tests.support.server import HutchProcess, remove_instance, run_cli  # noqa: E402

IMAGES = Path(os.environ.get("HUTCH_IMAGES_DIR", "/var/cache/hutch-test-images"))


def wrk(url: str, *, seconds: int, connections: int, key: str | None) -> dict[str, float]:
    header = ["-H", f"X-Api-Key: {key}"] if key else []
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency",
         *header, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"errors under load (or answers slower than 10 s):\n{out}")

    def latency(label: str) -> float:
        match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        assert match, out
        value, unit = float(match.group(1)), match.group(2)
        return round(value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 3)

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rps, out
    return {"requests_per_s": float(rps.group(1)), "p50_ms": latency("50"), "p99_ms": latency("99")}


def measure(
    form: str, workers: int, *, seconds: int, execs: int, clients: list[int]
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="hutch-bench-api-"))
    home = root / "home"
    args = ["--one-process"] if form == "one-process" else ["--workers", str(workers)]
    server = HutchProcess(
        home, *args,
        env={"HUTCH_DRIVER": "runc", "HUTCH_IMAGES_DIR": str(IMAGES),
             "HUTCH_LINK_POOL": "10.93.0.0/22", "HUTCH_NETWORK_POOL": "10.94.0.0/22"},
    ).wait_ready(180)  # fmt: skip
    try:
        key = run_cli(home, "keys", "create", "--user", "bench").stdout.strip()
        with httpx.Client(base_url=server.url, headers={"X-Api-Key": key}, timeout=60) as api:
            created = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
            created.raise_for_status()
            sandbox = created.json()["data"]["id"]
            for _ in range(20):
                api.post(f"/v1/sandboxes/{sandbox}/exec", json={"cmd": "true", "args": []})
            trips = []
            for _ in range(execs):
                started = time.perf_counter()
                answer = api.post(f"/v1/sandboxes/{sandbox}/exec", json={"cmd": "true", "args": []})
                trips.append((time.perf_counter() - started) * 1000)
                assert answer.json()["data"]["result"]["exit_code"] == 0, answer.text
            read_url = f"{server.url}/v1/sandboxes/{sandbox}"
            wrk(read_url, seconds=1, connections=32, key=key)  # warm-up
            reads = wrk(read_url, seconds=seconds, connections=32, key=key)
            by_clients = {
                str(n): wrk(read_url, seconds=seconds, connections=n, key=key) for n in clients
            }
            listed = wrk(f"{server.url}/v1/sandboxes", seconds=seconds, connections=32, key=key)
            shapes = wrk(f"{server.url}/v1/shapes", seconds=seconds, connections=32, key=None)
            api.delete(f"/v1/sandboxes/{sandbox}")
        return {
            "form": form,
            "workers": workers if form != "one-process" else None,
            "get_sandbox": reads,
            "get_sandbox_by_clients": by_clients,
            "list_sandboxes": listed,
            "get_shapes": shapes,
            "exec_ms": percentiles(trips),
        }
    finally:
        server.stop()
        remove_instance(home)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--execs", type=int, default=300)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--clients", default="8,32,128")
    parser.add_argument("--no-peer", action="store_true", help="skip the one-process form")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "api.json")
    args = parser.parse_args()
    clients = [int(n) for n in args.clients.split(",") if n]
    load_at_start = os.getloadavg()
    runs = []
    if not args.no_peer:
        runs.append(
            measure("one-process", 1, seconds=args.seconds, execs=args.execs, clients=clients)
        )
    for count in (int(n) for n in args.workers.split(",")):
        runs.append(
            measure("workers", count, seconds=args.seconds, execs=args.execs, clients=clients)
        )
    forks = percentiles(bare_fork_exec(args.execs))
    peer = runs[0]["get_sandbox"]["requests_per_s"]
    result = {
        "benchmark": "api",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": os.cpu_count(),
        "load": os.getloadavg(),
        "load_at_start": load_at_start,
        "runs": runs,
        "bare_fork_exec_ms": forks,
        "reads_ratio_to_one_process": None
        if args.no_peer
        else {
            str(run["workers"]): round(run["get_sandbox"]["requests_per_s"] / peer, 2)
            for run in runs
            if run["workers"]
        },
        "exec_p50_ratio_to_fork_exec": {
            str(run["workers"] or "one-process"): round(run["exec_ms"]["p50"] / forks["p50"], 2)
            for run in runs
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
