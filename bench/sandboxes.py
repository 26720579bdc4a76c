"""Sandbox benchmarks, with their floors measured in the same run.

    .venv/bin/python bench/sandboxes.py [--quick] [--out bench/results/sandboxes.json]

1. create -> first exec through the API: 50 sequential, and 10 concurrent (3 rounds),
   next to a bare ``runc run`` of the same image running ``/bin/true`` (the floor); and
   the create alone (``POST /v1/sandboxes`` until its answer) of those 10 concurrent
   ones, next to 10 concurrent bare ``runc run -d`` of the same image (3 rounds, in
   turn with hutch's, so both meet the same machine). These creates are cold (no pool;
   each answer's ``X-Hutch-Warm`` is counted and reported). With ``--warm-pool 10`` the
   server also keeps a pool of 10 prepared sandboxes of another shape, and each round
   also makes 10 creates at once from it, once it is full again (``create_10_at_once_warm``;
   the pool's case of issue 18's goal), beside the cold round and the bare one.
2. exec round trip through the HTTP API (``true``), next to a bare fork/exec of ``true``.
3. host memory per idle sandbox with 100 running (MemAvailable drop, and what the
   sandboxes' cgroups are charged).

``--parts create,exec,memory`` picks which of them run (all by default).

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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.postgres import free_port  # noqa: E402
from tests.support.server import HutchProcess, remove_instance, run_cli  # noqa: E402
from tests.support.warm import pool_ready  # noqa: E402

from hutch.host.drivers.runc import RuncDriver  # noqa: E402
from hutch.host.images import image_rootfs  # noqa: E402
from hutch.host.machine import read_memory  # noqa: E402

IMAGES = Path(os.environ.get("HUTCH_IMAGES_DIR", "/var/cache/hutch-test-images"))
SHAPE = "s-1vcpu-256mb"
WARM_SHAPE = "s-1vcpu-512mb"  # the pool's (--warm-pool): SHAPE's creates stay cold


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
    total, _, sandbox, spawn = timed_create(api)
    return total, sandbox, spawn


def timed_create(
    api: httpx.Client, body: dict[str, Any] | None = None, warm: list[str] | None = None
) -> tuple[float, float, str, int]:
    """Create then first exec: (both, ms; the create alone, ms; id; spawn_ms). ``warm``
    gets the answer's ``X-Hutch-Warm``."""
    started = time.perf_counter()
    created = api.post("/v1/sandboxes", json=body or {"shape": SHAPE, "disk_mib": 1024})
    created.raise_for_status()
    if warm is not None:
        warm.append(created.headers.get("X-Hutch-Warm", "?"))
    answered = time.perf_counter()
    sandbox = created.json()["data"]
    ran = api.post(f"/v1/sandboxes/{sandbox['id']}/exec", json={"cmd": "true", "args": []})
    ran.raise_for_status()
    assert ran.json()["data"]["result"]["exit_code"] == 0
    done = time.perf_counter()
    return (
        (done - started) * 1000,
        (answered - started) * 1000,
        sandbox["id"],
        sandbox["spawn_ms"],
    )


class BareRunc:
    """Bare ``runc`` containers of devbox:1 (read-only root, runc's default namespaces,
    no network set up, no limits, no agent): the floor of a sandbox's start."""

    def __init__(self, argv: list[str]) -> None:
        rootfs = image_rootfs(IMAGES, "devbox:1")
        assert rootfs is not None
        self.work = Path(tempfile.mkdtemp(prefix="hutch-bench-runc-"))
        subprocess.run(["runc", "spec"], cwd=self.work, check=True)
        config = json.loads((self.work / "config.json").read_text())
        config["root"] = {"path": str(rootfs), "readonly": True}
        config["process"]["terminal"] = False
        config["process"]["args"] = argv
        (self.work / "config.json").write_text(json.dumps(config))
        self._count = 0
        self._lock = threading.Lock()

    def _runc(self, *args: str) -> list[str]:
        return ["runc", "--root", str(self.work / "state"), *args]

    def _name(self, kind: str) -> str:
        with self._lock:
            self._count += 1
            return f"bench-{kind}-{os.getpid()}-{self._count}"

    def run(self) -> float:
        """``runc run`` of the container to its end, ms."""
        name = self._name("r")
        started = time.perf_counter()
        subprocess.run(self._runc("run", "--bundle", str(self.work), name),
                       check=True, stdin=subprocess.DEVNULL)  # fmt: skip
        return (time.perf_counter() - started) * 1000

    def run_detached(self) -> float:
        """``runc run -d`` of one container, ms; it is deleted afterwards (not timed)."""
        name = self._name("d")
        started = time.perf_counter()
        subprocess.run(
            self._runc("run", "-d", "--bundle", str(self.work), name),
            check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        took = (time.perf_counter() - started) * 1000
        subprocess.run(self._runc("delete", "--force", name), check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        return took

    def close(self) -> None:
        for state in (self.work / "state").glob("*") if (self.work / "state").is_dir() else []:
            subprocess.run(self._runc("delete", "--force", state.name), check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        shutil.rmtree(self.work, ignore_errors=True)


def bare_runc_runs(count: int) -> list[float]:
    """``runc run`` of the same image, read-only root, running /bin/true: the floor."""
    bare = BareRunc(["/bin/true"])
    try:
        return [bare.run() for _ in range(count)]
    finally:
        bare.close()


def bare_runc_detached_concurrent(count: int, rounds: int) -> list[float]:
    """``rounds`` times, ``count`` bare ``runc run -d`` at once: each one's time, ms."""
    bare = BareRunc(["/bin/sleep", "1000"])
    try:
        samples: list[float] = []
        with ThreadPoolExecutor(max_workers=count) as pool:
            for _ in range(rounds):
                samples += pool.map(lambda _: bare.run_detached(), range(count))
        return samples
    finally:
        bare.close()


def bare_fork_exec(count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        subprocess.run(["true"], check=True)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def wait_for_pool(server: HutchProcess, size: int) -> None:
    """Until the pool is full again (its refills would otherwise run beside what is timed)."""
    deadline = time.monotonic() + 300
    while pool_ready(server) < size:
        assert time.monotonic() < deadline, "the warm pool did not fill"
        time.sleep(0.1)
    time.sleep(0.5)  # the last refill's store writes


def warm_burst(server: HutchProcess, pool: ThreadPoolExecutor, size: int) -> list[float]:
    """Once the pool is full, ``size`` creates of its shape at once: each one's ms (the
    create alone); every answer must say it came from the pool."""
    wait_for_pool(server, size)
    clients = [server.client(server.admin_key) for _ in range(size)]
    warm: list[str] = []
    body = {"shape": WARM_SHAPE}
    results = list(pool.map(lambda c: timed_create(c, body, warm), clients))
    assert warm == ["1"] * size, f"not all from the pool: {warm}"
    with server.client(server.admin_key) as api:
        for _, _, sandbox_id, _ in results:
            api.delete(f"/v1/sandboxes/{sandbox_id}")
    for client in clients:
        client.close()
    return [create for _, create, _, _ in results]


def creates(
    server: HutchProcess, api: httpx.Client, *, sequential: int, rounds: int, warm_pool: int = 0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Create -> first exec, sequential (each next to a bare ``runc run``) and 10 at once;
    the 10 concurrent creates alone next to 10 concurrent bare ``runc run -d``; with
    ``warm_pool``, also 10 at once from a full pool of that size, in the same rounds."""
    p50 = statistics.median
    bare = BareRunc(["/bin/true"])
    seq, spawn, made, floor = [], [], [], []
    try:
        for _ in range(sequential):
            ms, sandbox_id, spawn_ms = create_and_first_exec(api)
            seq.append(ms)
            spawn.append(float(spawn_ms))
            made.append(sandbox_id)
            floor.append(bare.run())
    finally:
        bare.close()
    for sandbox_id in made:
        api.delete(f"/v1/sandboxes/{sandbox_id}")

    both: list[float] = []
    alone: list[float] = []
    detached: list[float] = []
    from_pool: list[float] = []
    cold_warm_header: list[str] = []
    with ThreadPoolExecutor(max_workers=10) as pool:
        for _ in range(rounds):
            if warm_pool:
                wait_for_pool(server, warm_pool)
            clients = [server.client(server.admin_key) for _ in range(10)]
            results = list(pool.map(lambda c: timed_create(c, None, cold_warm_header), clients))
            both += [total for total, _, _, _ in results]
            alone += [create for _, create, _, _ in results]
            for _, _, sandbox_id, _ in results:
                api.delete(f"/v1/sandboxes/{sandbox_id}")
            for client in clients:
                client.close()
            detached += bare_runc_detached_concurrent(10, 1)
            if warm_pool:
                from_pool += warm_burst(server, pool, warm_pool)
    first_exec = {
        "sequential": percentiles(seq),
        "concurrent_10": percentiles(both),
        "spawn_ms_reported": percentiles(spawn),
        "bare_runc_run_true": percentiles(floor),
        "ratio_p50_sequential_to_bare_runc": round(p50(seq) / p50(floor), 2),
    }
    concurrent: dict[str, Any] = {
        "create_10_at_once": percentiles(alone),
        "create_10_at_once_came_from": (
            "cold" if set(cold_warm_header) == {"0"} else f"X-Hutch-Warm: {cold_warm_header}"
        ),
        "bare_runc_run_detached_10_at_once": percentiles(detached),
        "ratio_p50_create_to_bare_runc_run_detached": round(p50(alone) / p50(detached), 2),
        "goal_p50_at_most_250_ms": p50(alone) <= 250,
    }
    if from_pool:
        concurrent["create_10_at_once_warm"] = percentiles(from_pool)
        concurrent["warm_pool_size"] = warm_pool
        concurrent["ratio_p50_warm_to_bare_runc_run_detached"] = round(
            p50(from_pool) / p50(detached), 2
        )
        concurrent["goal_p50_at_most_250_ms_warm"] = p50(from_pool) <= 250
    return first_exec, concurrent


def exec_round_trips(api: httpx.Client, count: int) -> dict[str, Any]:
    _, box, _ = create_and_first_exec(api)
    round_trips = []
    for _ in range(count):
        started = time.perf_counter()
        api.post(f"/v1/sandboxes/{box}/exec", json={"cmd": "true", "args": []})
        round_trips.append((time.perf_counter() - started) * 1000)
    api.delete(f"/v1/sandboxes/{box}")
    forks = bare_fork_exec(count)
    return {
        "api": percentiles(round_trips),
        "bare_fork_exec": percentiles(forks),
        "ratio_p50_api_to_fork_exec": round(
            statistics.median(round_trips) / statistics.median(forks), 2
        ),
    }


def idle_memory(home: Path, api: httpx.Client, count: int) -> dict[str, Any]:
    time.sleep(2)
    before = read_memory().available_mib
    idle = []
    for _ in range(count):
        response = api.post("/v1/sandboxes", json={"shape": SHAPE, "disk_mib": 1024})
        response.raise_for_status()
        idle.append(response.json()["data"]["id"])
    time.sleep(5)
    after = read_memory().available_mib
    charged = cgroup_memory(home, idle)
    for sandbox_id in idle:
        api.delete(f"/v1/sandboxes/{sandbox_id}")
    return {
        "sandboxes": count,
        "host_mem_available_drop_mib_per_sandbox": round((before - after) / count, 2),
        "cgroup_charged_mib_per_sandbox": round(charged / count / 2**20, 2),
    }


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
    parser.add_argument("--parts", default="create,exec,memory")
    parser.add_argument(
        "--warm-pool",
        type=int,
        default=0,
        metavar="N",
        help="also 10 creates at once from a full pool of N (10 or more)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sandboxes.json")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    sequential, rounds, exec_count, idle_count = (
        (10, 1, 50, 20) if args.quick else (50, 3, 300, 100)
    )

    run_cli(Path("/tmp"), "images", "build", env={"HUTCH_IMAGES_DIR": str(IMAGES)})
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-")) / "home"
    env = {
        "HUTCH_DRIVER": "runc",
        "HUTCH_IMAGES_DIR": str(IMAGES),
        "HUTCH_LINK_POOL": "10.95.0.0/16",
        "HUTCH_MAX_RUNNING_PER_USER": "1000",
    }
    if args.warm_pool:
        env["HUTCH_WARM_POOL"] = f"devbox:1:{WARM_SHAPE}={args.warm_pool}"
        env["HUTCH_METRICS_ADDR"] = f"127.0.0.1:{free_port()}"
    server = HutchProcess(home, env=env).wait_ready()
    assert server.admin_key
    report: dict[str, Any] = {
        "benchmark": "sandboxes",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "mem_mib": read_memory().total_mib,
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "load_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        api = server.client(server.admin_key)
        # Warm-up: the first create makes the disk template.
        _, warm_id, _ = create_and_first_exec(api)
        api.delete(f"/v1/sandboxes/{warm_id}")
        if "create" in parts:
            report["create_to_first_exec_ms"], report["concurrent_creates_ms"] = creates(
                server, api, sequential=sequential, rounds=rounds, warm_pool=args.warm_pool
            )
        if "exec" in parts:
            report["exec_round_trip_ms"] = exec_round_trips(api, exec_count)
        if "memory" in parts:
            report["idle_memory"] = idle_memory(home, api, idle_count)
        api.close()
    finally:
        server.stop()
        remove_instance(home)
        shutil.rmtree(home.parent, ignore_errors=True)
    report["load_at_end"] = [round(x, 2) for x in os.getloadavg()]

    document = json.dumps(report, indent=2)
    print(document)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(document + "\n")


if __name__ == "__main__":
    main()
