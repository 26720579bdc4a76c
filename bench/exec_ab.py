"""Exec round trip of two codes side by side: ``hutch serve`` of another checkout and of
this one, both up at once and asked in turn, with a bare fork/exec in the same rounds.

    git worktree add --detach /tmp/hutch-before <commit>
    .venv/bin/python bench/exec_ab.py --before-src /tmp/hutch-before/src [--execs 400]

On a shared machine whose load comes and goes, two runs minutes apart are not comparable;
two servers asked in turn meet the same load. Each has 2 workers and one running sandbox;
each round is one ``POST …/exec`` of ``true`` to each (one keep-alive connection each),
one exec of ``true`` straight to each sandbox's guest agent over its socket (``guest_*``:
the guest agent's part alone, without the workers and HTTP) and one fork/exec. Prints one
JSON document; no thresholds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.exec_path import guest_socket_once  # noqa: E402
from bench.sandboxes import IMAGES, bare_fork_exec, percentiles  # noqa: E402
from tests.support.server import HutchProcess, remove_instance  # noqa: E402

from hutch.host.drivers.runc import RuncDriver  # noqa: E402


def start(src: str | None, link_pool: str, network_pool: str) -> HutchProcess:
    env = {"HUTCH_DRIVER": "runc", "HUTCH_IMAGES_DIR": str(IMAGES),
           "HUTCH_LINK_POOL": link_pool, "HUTCH_NETWORK_POOL": network_pool}  # fmt: skip
    if src is not None:  # the child imports that checkout's hutch first
        env["PYTHONPATH"] = src
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-ab-")) / "home"
    return HutchProcess(home, "--workers", "2", env=env).wait_ready(180)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before-src", required=True, help="the other checkout's src/")
    parser.add_argument("--execs", type=int, default=400)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "exec_ab.json")
    args = parser.parse_args()
    servers = {
        "before": start(args.before_src, "10.213.0.0/22", "10.214.0.0/22"),
        "after": start(None, "10.215.0.0/22", "10.216.0.0/22"),
    }
    load_at_start = os.getloadavg()[0]
    samples: dict[str, list[float]] = {
        "before": [], "after": [], "guest_before": [], "guest_after": [], "bare_fork_exec": []
    }  # fmt: skip
    try:
        clients, boxes = {}, {}
        for name, server in servers.items():
            client = httpx.Client(
                base_url=server.url, headers={"X-Api-Key": server.admin_key or ""}, timeout=60
            )
            created = client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
            created.raise_for_status()
            boxes[name], clients[name] = created.json()["data"]["id"], client
        sockets = {
            name: str(RuncDriver(server.home, images=IMAGES).agent_socket(boxes[name]))
            for name, server in servers.items()
        }
        for round_ in range(args.execs + 30):  # the first 30 warm up
            for name, client in clients.items():
                started = time.perf_counter()
                answer = client.post(f"/v1/sandboxes/{boxes[name]}/exec",
                                     json={"cmd": "true", "args": []})  # fmt: skip
                took = (time.perf_counter() - started) * 1000
                assert answer.json()["data"]["result"]["exit_code"] == 0, answer.text
                if round_ >= 30:
                    samples[name].append(took)
            for name, path in sockets.items():
                started = time.perf_counter()
                guest_socket_once(path)
                if round_ >= 30:
                    samples[f"guest_{name}"].append((time.perf_counter() - started) * 1000)
            fork = bare_fork_exec(1)[0]
            if round_ >= 30:
                samples["bare_fork_exec"].append(fork)
        for name, client in clients.items():
            client.delete(f"/v1/sandboxes/{boxes[name]}")
            client.close()
    finally:
        for server in servers.values():
            server.stop()
            remove_instance(server.home)
    fork_p50 = statistics.median(samples["bare_fork_exec"])
    result = {
        "benchmark": "exec_ab",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "before_src": args.before_src,
        "load": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
        "ms": {name: percentiles(values) for name, values in samples.items()},
        "p50_ratio_to_bare_fork_exec": {
            name: round(statistics.median(values) / fork_p50, 2) for name, values in samples.items()
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
