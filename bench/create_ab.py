"""10 creates at once, cold and from a full warm pool, of two codes side by side: ``hutch
serve`` of another checkout and of this one, both up at once and asked in turn, with 10
bare ``runc run -d`` at once in the same rounds.

    git worktree add --detach /tmp/hutch-before <commit>
    .venv/bin/python bench/create_ab.py --before-src /tmp/hutch-before/src [--rounds 3]

Each server keeps a pool of 10 prepared sandboxes of ``s-1vcpu-512mb``; before every
burst both pools are full again (so no refill runs beside what is timed). Each round, for
each server in turn (the order alternates): 10 cold creates of ``s-1vcpu-256mb`` at once,
then 10 of the pool's shape (each answer's ``X-Hutch-Warm`` checked), then one bare round.
Times are the create alone (``POST /v1/sandboxes`` until its answer). Prints one JSON
document; no thresholds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.sandboxes import (  # noqa: E402
    IMAGES,
    SHAPE,
    WARM_SHAPE,
    bare_runc_detached_concurrent,
    percentiles,
    timed_create,
    wait_for_pool,
)
from tests.support.postgres import free_port  # noqa: E402
from tests.support.server import HutchProcess, remove_instance  # noqa: E402

POOL = 10


def start(src: str | None, n: int) -> HutchProcess:
    env = {
        "HUTCH_DRIVER": "runc", "HUTCH_IMAGES_DIR": str(IMAGES),
        "HUTCH_LINK_POOL": f"10.{120 + n}.0.0/16", "HUTCH_NETWORK_POOL": f"10.{130 + n}.0.0/22",
        "HUTCH_MAX_RUNNING_PER_USER": "1000", "HUTCH_WARM_POOL": f"devbox:1:{WARM_SHAPE}={POOL}",
        "HUTCH_METRICS_ADDR": f"127.0.0.1:{free_port()}",
    }  # fmt: skip
    before = os.environ.get("PYTHONPATH")
    if src is not None:  # the child imports that checkout's hutch first
        os.environ["PYTHONPATH"] = src
    try:
        home = Path(tempfile.mkdtemp(prefix="hutch-bench-create-ab-")) / "home"
        return HutchProcess(home, env=env).wait_ready(180)
    finally:
        if src is not None:
            if before is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = before


def burst(
    server: HutchProcess, pool: ThreadPoolExecutor, shape: str
) -> tuple[list[float], list[str]]:
    clients = [server.client(server.admin_key) for _ in range(10)]
    warm: list[str] = []
    results = list(pool.map(lambda c: timed_create(c, {"shape": shape}, warm), clients))
    with server.client(server.admin_key) as api:
        for _, _, sandbox_id, _ in results:
            api.delete(f"/v1/sandboxes/{sandbox_id}")
    for client in clients:
        client.close()
    return [create for _, create, _, _ in results], warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before-src", required=True, help="the other checkout's src/")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "create_ab.json")
    args = parser.parse_args()
    load_at_start = os.getloadavg()
    servers = {"before": start(args.before_src, 0), "after": start(None, 1)}
    times: dict[str, dict[str, list[float]]] = {n: {"cold": [], "warm": []} for n in servers}
    bare: list[float] = []
    try:
        with ThreadPoolExecutor(10) as pool:
            for i in range(args.rounds):
                order = list(servers) if i % 2 == 0 else list(reversed(servers))
                for kind, shape in (("cold", SHAPE), ("warm", WARM_SHAPE)):
                    for name in order:
                        for server in servers.values():
                            wait_for_pool(server, POOL)
                        ms, warm = burst(servers[name], pool, shape)
                        assert set(warm) == {"1" if kind == "warm" else "0"}, (name, kind, warm)
                        times[name][kind] += ms
                bare += bare_runc_detached_concurrent(10, 1)
    finally:
        for server in servers.values():
            server.stop()
            remove_instance(server.home)
            shutil.rmtree(server.home.parent, ignore_errors=True)
    p50 = statistics.median
    result: dict[str, Any] = {
        "benchmark": "create_ab",
        "load_at_start": [round(x, 2) for x in load_at_start],
        "load_at_end": [round(x, 2) for x in os.getloadavg()],
        "create_10_at_once_ms": {
            n: {k: percentiles(v) for k, v in d.items()} for n, d in times.items()
        },
        "bare_runc_run_detached_10_at_once_ms": percentiles(bare),
        "p50_after_over_before": {
            k: round(p50(times["after"][k]) / p50(times["before"][k]), 2) for k in ("cold", "warm")
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
