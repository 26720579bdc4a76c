"""Sandbox benchmarks, with their floors measured in the same run.

    .venv/bin/python bench/sandboxes.py [--quick] [--out bench/results/sandboxes.json]

1. create -> first exec through the API: 50 sequential, and 10 concurrent (3 rounds),
   next to a bare ``runc run`` of the same image running ``/bin/true`` (the floor).
2. exec round trip through the HTTP API (``true``), next to a bare fork/exec of ``true``.
3. host memory per idle sandbox with 100 running (MemAvailable drop, and what the
   sandboxes' cgroups are charged).

It starts its own ``hutch serve`` (runc driver) in a temp home, talks to it over loopback,
destroys everything it made, and prints one JSON document. No thresholds: these machines
are shared and noisy, so read the ratios, not single numbers.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.server import HutchProcess, remove_instance, run_cli  # noqa: E402

from hutch.host.drivers.runc import RuncDriver  # noqa: E402
from hutch.host.images import image_rootfs  # noqa: E402
from hutch.host.machine import read_memory  # noqa: E402

IMAGES = Path(os.environ.get("HUTCH_IMAGES_DIR", "/var/cache/hutch-test-images"))
SHAPE = "s-1vcpu-256mb"


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "n": len(ordered),
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "mean": round(statistics.fmean(ordered), 2),
    }


def create_and_first_exec(api: httpx.Client) -> tuple[float, str, int]:
    started = time.perf_counter()
    created = api.post("/v1/sandboxes", json={"shape": SHAPE, "disk_mib": 1024})
    created.raise_for_status()
    sandbox = created.json()["data"]
    ran = api.post(f"/v1/sandboxes/{sandbox['id']}/exec", json={"cmd": "true", "args": []})
    ran.raise_for_status()
    assert ran.json()["data"]["result"]["exit_code"] == 0
    return (time.perf_counter() - started) * 1000, sandbox["id"], sandbox["spawn_ms"]


def bare_runc_runs(count: int) -> list[float]:
    """``runc run`` of the same image, read-only root, running /bin/true: the floor."""
    rootfs = image_rootfs(IMAGES, "devbox:1")
    assert rootfs is not None
    work = Path(tempfile.mkdtemp(prefix="hutch-bench-runc-"))
    try:
        subprocess.run(["runc", "spec"], cwd=work, check=True)
        config = json.loads((work / "config.json").read_text())
        config["root"] = {"path": str(rootfs), "readonly": True}
        config["process"]["terminal"] = False
        config["process"]["args"] = ["/bin/true"]
        (work / "config.json").write_text(json.dumps(config))
        samples = []
        for i in range(count):
            started = time.perf_counter()
            subprocess.run(
                ["runc", "--root", str(work / "state"), "run", f"bench-{i}"],
                cwd=work, check=True, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            samples.append((time.perf_counter() - started) * 1000)
        return samples
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bare_fork_exec(count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        subprocess.run(["true"], check=True)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def cgroup_memory(home: Path, sandbox_ids: list[str]) -> int:
    driver = RuncDriver(home, images=IMAGES)
    total = 0
    for sandbox_id in sandbox_ids:
        for name in ("memory.usage_in_bytes", "memory.current"):
            for base in (Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")):
                path = base / driver.cgroup_parent.lstrip("/") / sandbox_id / name
                if path.exists():
                    total += int(path.read_text())
                    break
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, 20 idle sandboxes")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sandboxes.json")
    args = parser.parse_args()
    sequential, rounds, exec_count, idle_count = (
        (10, 1, 50, 20) if args.quick else (50, 3, 300, 100)
    )

    run_cli(Path("/tmp"), "images", "build", env={"HUTCH_IMAGES_DIR": str(IMAGES)})
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-")) / "home"
    server = HutchProcess(
        home,
        env={
            "HUTCH_DRIVER": "runc",
            "HUTCH_IMAGES_DIR": str(IMAGES),
            "HUTCH_LINK_POOL": "10.95.0.0/16",
            "HUTCH_MAX_RUNNING_PER_USER": "1000",
        },
    ).wait_ready()
    assert server.admin_key
    report: dict[str, Any] = {
        "benchmark": "sandboxes",
        "machine": {
            "cpus": os.cpu_count(),
            "mem_mib": read_memory().total_mib,
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
    }
    try:
        api = server.client(server.admin_key)
        # Warm-up: the first create makes the disk template.
        _, warm_id, _ = create_and_first_exec(api)
        api.delete(f"/v1/sandboxes/{warm_id}")

        seq, spawn, made = [], [], []
        for _ in range(sequential):
            ms, sandbox_id, spawn_ms = create_and_first_exec(api)
            seq.append(ms)
            spawn.append(float(spawn_ms))
            made.append(sandbox_id)
        for sandbox_id in made:
            api.delete(f"/v1/sandboxes/{sandbox_id}")

        concurrent: list[float] = []
        with ThreadPoolExecutor(max_workers=10) as pool:
            for _ in range(rounds):
                clients = [server.client(server.admin_key) for _ in range(10)]
                results = list(pool.map(create_and_first_exec, clients))
                concurrent += [ms for ms, _, _ in results]
                for ms_id in results:
                    api.delete(f"/v1/sandboxes/{ms_id[1]}")
                for client in clients:
                    client.close()

        floor = bare_runc_runs(max(10, sequential // 2))
        report["create_to_first_exec_ms"] = {
            "sequential": percentiles(seq),
            "concurrent_10": percentiles(concurrent),
            "spawn_ms_reported": percentiles(spawn),
            "bare_runc_run_true": percentiles(floor),
            "ratio_p50_sequential_to_bare_runc": round(
                statistics.median(seq) / statistics.median(floor), 2
            ),
        }

        _, box, _ = create_and_first_exec(api)
        round_trips = []
        for _ in range(exec_count):
            started = time.perf_counter()
            api.post(f"/v1/sandboxes/{box}/exec", json={"cmd": "true", "args": []})
            round_trips.append((time.perf_counter() - started) * 1000)
        api.delete(f"/v1/sandboxes/{box}")
        forks = bare_fork_exec(exec_count)
        report["exec_round_trip_ms"] = {
            "api": percentiles(round_trips),
            "bare_fork_exec": percentiles(forks),
            "ratio_p50_api_to_fork_exec": round(
                statistics.median(round_trips) / statistics.median(forks), 2
            ),
        }

        time.sleep(2)
        before = read_memory().available_mib
        idle = []
        for _ in range(idle_count):
            response = api.post("/v1/sandboxes", json={"shape": SHAPE, "disk_mib": 1024})
            response.raise_for_status()
            idle.append(response.json()["data"]["id"])
        time.sleep(5)
        after = read_memory().available_mib
        charged = cgroup_memory(home, idle)
        report["idle_memory"] = {
            "sandboxes": idle_count,
            "host_mem_available_drop_mib_per_sandbox": round((before - after) / idle_count, 2),
            "cgroup_charged_mib_per_sandbox": round(charged / idle_count / 2**20, 2),
        }
        for sandbox_id in idle:
            api.delete(f"/v1/sandboxes/{sandbox_id}")
        api.close()
    finally:
        server.stop()
        remove_instance(home)
        shutil.rmtree(home.parent, ignore_errors=True)

    document = json.dumps(report, indent=2)
    print(document)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(document + "\n")


if __name__ == "__main__":
    main()
