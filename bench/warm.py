"""Create -> first exec from the warm pool, next to a cold create and a bare ``runc run``.

    .venv/bin/python bench/warm.py [--quick] [--out bench/results/warm.json]

One ``hutch serve`` (runc) with ``HUTCH_WARM_POOL=devbox:1:s-1vcpu-256mb=4``. Each round
takes, in turn, the three peers of the same image on the same machine at the same moment:

- warm: ``POST /v1/sandboxes`` of the pool's shape (answered with ``X-Hutch-Warm: 1``,
  checked), then its first exec (``true``), through the API;
- cold: the same of a shape not in the pool (``s-1vcpu-512mb``: the same default disk;
  ``X-Hutch-Warm: 0``, checked), through the same server;
- bare: ``runc run`` of devbox:1 running ``/bin/true`` (bench/sandboxes.py's floor).

Between rounds the sandboxes are deleted and the pool is let fill again (a warm create is
measured as a user meets it: with the pool ready). Prints one JSON document with the
percentiles and the p50 ratios; no thresholds (shared, noisy machine: read the ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.sandboxes import IMAGES, bare_runc_runs, percentiles  # noqa: E402
from tests.support.server import HutchProcess, remove_instance, run_cli  # noqa: E402

from hutch.host.machine import read_memory  # noqa: E402

WARM_SHAPE = "s-1vcpu-256mb"
COLD_SHAPE = "s-1vcpu-512mb"
POOL = 4


def prepared(home: Path) -> int:
    sandboxes = home / "sandboxes"
    return sum(1 for d in sandboxes.iterdir() if (d / "warm").exists()) if sandboxes.is_dir() else 0


def wait_for_pool(home: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while prepared(home) < POOL:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the pool has {prepared(home)} of {POOL} after {timeout}s")
        time.sleep(0.05)
    time.sleep(0.5)  # the last one's own start settles


def create_and_first_exec(api: httpx.Client, shape: str, warm: str) -> tuple[float, str, int]:
    started = time.perf_counter()
    created = api.post("/v1/sandboxes", json={"shape": shape})
    created.raise_for_status()
    assert created.headers["X-Hutch-Warm"] == warm, (shape, created.headers["X-Hutch-Warm"])
    sandbox = created.json()["data"]
    ran = api.post(f"/v1/sandboxes/{sandbox['id']}/exec", json={"cmd": "true", "args": []})
    ran.raise_for_status()
    assert ran.json()["data"]["result"]["exit_code"] == 0
    return (time.perf_counter() - started) * 1000, sandbox["id"], int(sandbox["spawn_ms"])


def load() -> float:
    return round(os.getloadavg()[0], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 rounds instead of 40")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "warm.json")
    args = parser.parse_args()
    rounds = 10 if args.quick else 40

    run_cli(Path("/tmp"), "images", "build", env={"HUTCH_IMAGES_DIR": str(IMAGES)})
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-warm-")) / "home"
    server = HutchProcess(
        home,
        env={
            "HUTCH_DRIVER": "runc",
            "HUTCH_IMAGES_DIR": str(IMAGES),
            "HUTCH_LINK_POOL": "10.98.0.0/16",
            "HUTCH_NETWORK_POOL": "10.99.0.0/16",
            "HUTCH_MAX_RUNNING_PER_USER": "1000",
            "HUTCH_WARM_POOL": f"devbox:1:{WARM_SHAPE}={POOL}",
        },
    ).wait_ready()
    assert server.admin_key
    report: dict[str, Any] = {
        "benchmark": "warm",
        "machine": {
            "cpus": os.cpu_count(),
            "mem_mib": read_memory().total_mib,
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "pool": f"devbox:1:{WARM_SHAPE}={POOL}",
        "load_at_start": load(),
    }
    warm, cold, bare, warm_spawn, cold_spawn = [], [], [], [], []
    try:
        api = server.client(server.admin_key)
        # Warm-up: the disk template of the cold shape's size, the first exec paths.
        _, first, _ = create_and_first_exec(api, COLD_SHAPE, "0")
        api.delete(f"/v1/sandboxes/{first}")
        for _ in range(rounds):
            wait_for_pool(home)
            ms, warm_id, spawn = create_and_first_exec(api, WARM_SHAPE, "1")
            warm.append(ms)
            warm_spawn.append(float(spawn))
            ms, cold_id, spawn = create_and_first_exec(api, COLD_SHAPE, "0")
            cold.append(ms)
            cold_spawn.append(float(spawn))
            bare += bare_runc_runs(1)
            for sandbox_id in (warm_id, cold_id):
                api.delete(f"/v1/sandboxes/{sandbox_id}")
        api.close()
    finally:
        server.stop()
        remove_instance(home)
        shutil.rmtree(home.parent, ignore_errors=True)

    p50 = statistics.median
    report["load_at_end"] = load()
    report["create_to_first_exec_ms"] = {
        "warm": percentiles(warm),
        "cold": percentiles(cold),
        "bare_runc_run_true": percentiles(bare),
        "spawn_ms_reported_warm": percentiles(warm_spawn),
        "spawn_ms_reported_cold": percentiles(cold_spawn),
        "ratio_p50_warm_to_bare_runc": round(p50(warm) / p50(bare), 2),
        "ratio_p50_cold_to_bare_runc": round(p50(cold) / p50(bare), 2),
        "ratio_p50_warm_to_cold": round(p50(warm) / p50(cold), 2),
    }
    report["goals"] = {
        "warm_p50_at_most_50_ms": p50(warm) <= 50,
        "cold_p50_at_most_3x_bare_runc": p50(cold) <= 3 * p50(bare),
    }
    document = json.dumps(report, indent=2)
    print(document)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(document + "\n")


if __name__ == "__main__":
    main()
