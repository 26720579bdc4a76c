"""Exec round trip on gvisor of two codes side by side (``bench/exec_ab.py``'s way, for
``runtime: "gvisor"``): ``hutch serve`` of another checkout and of this one, both up at
once and asked in turn, with one spawn of ``true`` by hand inside gVisor (``runsc exec``
free: a C ``vfork``+``execve`` loop) as the floor of the same run.

    git worktree add --detach /tmp/hutch-before <commit>
    .venv/bin/python bench/gvisor_exec_ab.py --before-src /tmp/hutch-before/src [--execs 200]

Each round is one ``POST …/exec`` of ``true`` (``args: []``: no shell) and one of the
shell line ``true`` to each server's gvisor sandbox. Prints one JSON document; no
thresholds.
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

from bench.gvisor_floors import percentiles, spawn_floors  # noqa: E402
from tests.support.server import HutchProcess, remove_instance  # noqa: E402

IMAGES = Path(os.environ.get("HUTCH_IMAGES_DIR", "/var/cache/hutch-test-images"))
BODIES = {"true": {"cmd": "true", "args": []}, "sh_c_true": {"cmd": "true"}}


def start(src: str | None, link_pool: str, network_pool: str) -> HutchProcess:
    env = {"HUTCH_DRIVER": "runc", "HUTCH_IMAGES_DIR": str(IMAGES),
           "HUTCH_LINK_POOL": link_pool, "HUTCH_NETWORK_POOL": network_pool}  # fmt: skip
    if src is not None:  # the child imports that checkout's hutch first
        env["PYTHONPATH"] = src
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-gvab-")) / "home"
    return HutchProcess(home, "--workers", "2", env=env).wait_ready(180)


def ratio(samples: dict[str, list[float]], body: str) -> float:
    after, before = samples[f"after_{body}"], samples[f"before_{body}"]
    return round(statistics.median(after) / statistics.median(before), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before-src", required=True, help="the other checkout's src/")
    parser.add_argument("--execs", type=int, default=200)
    parser.add_argument("--out", type=Path,
                        default=REPO / "bench" / "results" / "gvisor_exec_ab.json")  # fmt: skip
    args = parser.parse_args()
    servers = {
        "before": start(args.before_src, "10.217.0.0/22", "10.218.0.0/22"),
        "after": start(None, "10.219.0.0/22", "10.220.0.0/22"),
    }
    load_at_start = os.getloadavg()
    samples: dict[str, list[float]] = {f"{s}_{b}": [] for s in servers for b in BODIES}
    try:
        clients, boxes = {}, {}
        for name, server in servers.items():
            client = httpx.Client(
                base_url=server.url, headers={"X-Api-Key": server.admin_key or ""}, timeout=60
            )
            created = client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb",
                                                         "runtime": "gvisor"})  # fmt: skip
            created.raise_for_status()
            boxes[name], clients[name] = created.json()["data"]["id"], client
        for round_ in range(args.execs + 10):  # the first 10 warm up
            order = list(clients.items())
            if round_ % 2:
                order.reverse()
            for body_name, body in BODIES.items():
                for name, client in order:
                    started = time.perf_counter()
                    answer = client.post(f"/v1/sandboxes/{boxes[name]}/exec", json=body)
                    took = (time.perf_counter() - started) * 1000
                    assert answer.json()["data"]["result"]["exit_code"] == 0, answer.text
                    if round_ >= 10:
                        samples[f"{name}_{body_name}"].append(took)
        for name, client in clients.items():
            client.delete(f"/v1/sandboxes/{boxes[name]}")
            client.close()
    finally:
        for server in servers.values():
            server.stop()
            remove_instance(server.home)
    floor = spawn_floors(IMAGES, os.environ.get("HUTCH_GVISOR_PLATFORM", "ptrace"))
    result = {
        "benchmark": "gvisor_exec_ab",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "before_src": args.before_src,
        "load": [round(load_at_start[0], 2), round(os.getloadavg()[0], 2)],
        "ms": {name: percentiles(values) for name, values in samples.items()},
        "after_to_before_p50": {body: ratio(samples, body) for body in BODIES},
        "spawn_floors": floor,
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
