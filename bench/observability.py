"""Observability benchmarks (issue 20): what sampling 1,000 sandboxes' metrics costs, and
how long a Prometheus scrape takes with 1,000 sandboxes in the store.

    .venv/bin/python bench/observability.py [--sandboxes 1000] [--rounds 20]

1. sampling: 1,000 real, empty cgroups made in this host's hierarchies (v1 or v2, under a
   throwaway parent, removed at the end), each read the way the metrics round reads a
   running sandbox (``hutch.host.usage.read_usage``: cgroup files, a ``statvfs`` of a
   filesystem, a link's two counters); the CPU time of a whole round (the reading thread's
   own), as a share of one core at the default 5 s interval. The issue's budget: 2 %.
   Its peer in the same run: the same files opened and read with nothing parsed (what any
   reader of these files pays).
2. scrape: 1,000 sandboxes in a SQLite store (over 20 hosts, every status), the metrics
   round's store counts, then ``/metrics`` rendered as Prometheus's scrape gets it, with
   the request metrics of 60 routes filled in. The issue's budget: 50 ms.

No thresholds here or in tests: read the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from hutch.api.prometheus import REQUEST_SECONDS, REQUESTS, Live, _Everything  # noqa: E402
from hutch.core.metrics import MetricsService  # noqa: E402
from hutch.host.drivers.fake import FakeDriver  # noqa: E402
from hutch.host.usage import CGROUP_ROOT, UsageSources, read_many  # noqa: E402
from hutch.store.db import Database  # noqa: E402
from hutch.store.migrate import upgrade  # noqa: E402
from hutch.store.models import SandboxRecord, User, utcnow  # noqa: E402

INTERVAL_S = 5.0


def cgroup_dirs(parent: str) -> list[Path]:
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT / parent]
    return [CGROUP_ROOT / name / parent for name in ("cpuacct", "memory", "pids")]


def make_cgroups(parent: str, count: int) -> None:
    for base in cgroup_dirs(parent):
        base.mkdir()
        for i in range(count):
            (base / f"sb{i}").mkdir()


def remove_cgroups(parent: str, count: int) -> None:
    for base in cgroup_dirs(parent):
        for i in range(count):
            with contextlib.suppress(OSError):
                (base / f"sb{i}").rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()


def raw_read(paths: list[str]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        os.read(fd, 65536)
        os.close(fd)


def sampling(count: int, rounds: int) -> dict[str, Any]:
    parent = f"hbench-obs-{os.getpid()}"
    sources = [
        UsageSources(cgroup=f"{parent}/sb{i}", disk=Path(tempfile.gettempdir()), host_if="lo")
        for i in range(count)
    ]
    v2 = (CGROUP_ROOT / "cgroup.controllers").exists()
    files = []
    for i in range(count):
        if v2:
            group = CGROUP_ROOT / parent / f"sb{i}"
            files += [group / n for n in ("cpu.stat", "memory.current", "memory.stat",
                                          "memory.max", "pids.current")]  # fmt: skip
        else:
            files += [CGROUP_ROOT / "cpuacct" / parent / f"sb{i}" / "cpuacct.usage"]
            memory = CGROUP_ROOT / "memory" / parent / f"sb{i}"
            files += [memory / n for n in ("memory.usage_in_bytes", "memory.stat",
                                           "memory.limit_in_bytes")]  # fmt: skip
            files += [CGROUP_ROOT / "pids" / parent / f"sb{i}" / "pids.current"]
    files.append(Path("/proc/net/dev"))  # read once a round for every link
    names = [str(path) for path in files]
    make_cgroups(parent, count)
    try:
        hutch_cpu, raw_cpu, walls = [], [], []
        for _ in range(rounds):
            started, wall = time.thread_time(), time.perf_counter()
            read = read_many(sources)
            hutch_cpu.append(time.thread_time() - started)
            walls.append(time.perf_counter() - wall)
            assert all(usage is not None for usage in read), "every cgroup was read"
            started = time.thread_time()
            raw_read(names)
            raw_cpu.append(time.thread_time() - started)
    finally:
        remove_cgroups(parent, count)
    per_round = statistics.median(hutch_cpu)
    return {
        "cgroup_version": 2 if v2 else 1,
        "sandboxes": count,
        "round_cpu_ms_p50": round(per_round * 1000, 2),
        "round_wall_ms_p50": round(statistics.median(walls) * 1000, 2),
        "share_of_one_core_at_5s_pct": round(per_round / INTERVAL_S * 100, 3),
        "peer_raw_reads_cpu_ms_p50": round(statistics.median(raw_cpu) * 1000, 2),
        "ratio_to_raw_reads": round(per_round / statistics.median(raw_cpu), 2),
        "budget_pct": 2.0,
    }


async def scrape(count: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as home:
        db = Database(f"sqlite:///{home}/hutch.db")
        await upgrade(db)
        statuses = ["running"] * 6 + ["paused"] * 3 + ["error"]
        async with db.sessions.begin() as session:
            session.add(User(id="usr_bench", name="bench", is_admin=False))
        async with db.sessions.begin() as session:
            for i in range(count):
                session.add(SandboxRecord(
                    id=f"sb_bench{i:05d}", user_id="usr_bench", name=f"box-{i}",
                    status=statuses[i % len(statuses)], host_id=f"10.0.0.{i % 20}",
                    shape="s-1vcpu-256mb", vcpu=1, mem_mib=256, disk_mib=1024,
                    rootfs="devbox:1", created_at=utcnow(),
                ))  # fmt: skip
        for i in range(60):  # request metrics of 60 routes, as a busy server has
            REQUESTS.labels(f"/v1/route{i}/{{id}}", "GET", "200").inc()
            REQUEST_SECONDS.labels(f"/v1/route{i}/{{id}}", "GET").observe(0.01)
        metrics = MetricsService(db, FakeDriver(Path(home) / "fake"), host_id="10.0.0.1",
                                 interval_s=INTERVAL_S, retention_s=900)  # fmt: skip
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Everything(Live(store=metrics.store_counts)))
        counts, renders, size = [], [], 0
        for _ in range(rounds):
            started = time.perf_counter()
            await metrics._count()
            counts.append(time.perf_counter() - started)
            started = time.perf_counter()
            body = generate_latest(registry)
            renders.append(time.perf_counter() - started)
            size = len(body)
        await db.dispose()
    return {
        "sandboxes": count,
        "store_counts_ms_p50": round(statistics.median(counts) * 1000, 2),
        "scrape_render_ms_p50": round(statistics.median(renders) * 1000, 2),
        "scrape_bytes": size,
        "budget_ms": 50,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandboxes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/observability.json")
    args = parser.parse_args()
    report = {
        "benchmark": "observability",
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "load": os.getloadavg()[0],
        },
        "sampling": sampling(args.sandboxes, args.rounds),
        "scrape": asyncio.run(scrape(args.sandboxes, args.rounds)),
    }
    document = json.dumps(report, indent=2)
    print(document)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(document + "\n")


if __name__ == "__main__":
    main()
