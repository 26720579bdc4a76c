"""Placement decision time with many registered hosts (issue 19).

    .venv/bin/python bench/cluster.py [--hosts 1000] [--decisions 500] [--history 0]
                                      [--store postgresql|sqlite|both] [--out FILE]

Starts a throwaway PostgreSQL 15 (tests/support/postgres.py) and/or a SQLite file,
migrates it, and registers
``--hosts`` simulated host rows (each with labels, images, capacity, and a few live
sandboxes so their load differs), then times ``--decisions`` placements
(:meth:`hutch.cluster.placement.Placer.place` then ``release``, as a create does): a
plain one, one with a ``node_selector`` matching a tenth of the hosts, and one pinned
with ``host_id``. ``--peer-placement FILE`` times
another version of placement.py (``git show REV:src/hutch/cluster/placement.py``) in turn
with this one, decision by decision, on the same 1,000 rows. ``--history N`` adds N
destroyed sandboxes per host (rows are kept after
destroy: a placement must not read them). The peer, in the same run, is the same
placement with 10 hosts: the
ratio says how the decision grows with the cluster. The issue's goal: p99 <= 20 ms with
1,000 hosts. No thresholds here: read the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from tests.support.postgres import PostgresServer  # noqa: E402

from hutch.cluster.placement import PlacementRequest, Placer  # noqa: E402
from hutch.core.identity import IdentityService  # noqa: E402
from hutch.core.ids import new_id  # noqa: E402
from hutch.store.db import Database  # noqa: E402
from hutch.store.migrate import upgrade  # noqa: E402
from hutch.store.models import Host, SandboxRecord, utcnow  # noqa: E402


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50_ms": at(0.50), "p90_ms": at(0.90), "p99_ms": at(0.99), "n": len(ordered)}


async def fill(db: Database, hosts: int, history: int) -> None:
    user = (await IdentityService(db).issue_key("bench")).user_id
    now = utcnow()
    async with db.sessions.begin() as session:
        for n in range(hosts):
            session.add(Host(
                id=f"h{n:05d}", status="active" if n % 50 else "draining",
                address=f"http://10.{n // 250}.{n % 250}.1:8702",
                labels={"zone": f"z{n % 10}"}, rootfses=["devbox:1", "node"], runtimes=["runc"],
                templates=[f"tpl_{n % 7}"], free_mib=20000, total_mib=24000,
                capacity_mib=24000, cpus=8, started_at=now, heartbeat_at=now,
            ))  # fmt: skip
            for k in range(n % 4):
                session.add(SandboxRecord(
                    id=new_id("sb_"), user_id=user, name=f"s{n}-{k}", status="running",
                    host_id=f"h{n:05d}", mem_mib=256 * (k + 1), vcpu=1,
                ))  # fmt: skip
            for k in range(history):
                session.add(SandboxRecord(
                    id=new_id("sb_"), user_id=user, name=f"d{n}-{k}", status="destroyed",
                    host_id=f"h{n:05d}", mem_mib=256, vcpu=1,
                ))  # fmt: skip


def peer_placer(path: Path | None) -> Any:
    """``Placer`` of another version of placement.py (``--peer-placement``), or None."""
    if path is None:
        return None
    spec = importlib.util.spec_from_file_location("peer_placement", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["peer_placement"] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module.Placer


async def measure(
    url: str, hosts: int, decisions: int, history: int, peer: Any = None
) -> dict[str, Any]:
    db = Database(url)
    await upgrade(db)
    await fill(db, hosts, history)
    placer = Placer(db, dead_after_s=3600, cpu_overcommit=4)  # rows filled once
    other = peer(db, dead_after_s=3600, cpu_overcommit=4) if peer is not None else None
    kinds = {
        "any": PlacementRequest(mem_mib=512, vcpu=1, image="devbox:1"),
        "node_selector": PlacementRequest(mem_mib=512, vcpu=1, image="devbox:1",
                                          node_selector={"zone": "z3"}),
        "host_id": PlacementRequest(mem_mib=512, vcpu=1, image="devbox:1", host_id="h00003"),
    }  # fmt: skip
    out: dict[str, Any] = {}
    for name, want in kinds.items():
        both = [p for p in (placer, other) if p is not None]
        for _ in range(20):  # warm the pool and the statement cache
            for one in both:
                await one.release(await one.place(want))
        samples: list[list[float]] = [[] for _ in both]
        cpu = [0.0 for _ in both]  # this process's CPU time in place(): less load-bound
        for _ in range(decisions):  # with a peer: one each in turn, under the same load
            for n, (one, times) in enumerate(zip(both, samples, strict=True)):
                start, used = time.perf_counter(), time.process_time()
                placed = await one.place(want)
                times.append((time.perf_counter() - start) * 1000)
                cpu[n] += time.process_time() - used
                await one.release(placed)
        out[name] = percentiles(samples[0]) | {"cpu_ms_mean": round(cpu[0] / decisions * 1e3, 3)}
        if other is not None:
            out[name]["peer_placement"] = percentiles(samples[1]) | {
                "cpu_ms_mean": round(cpu[1] / decisions * 1e3, 3)
            }
    for one in (placer, other):
        if one is not None and hasattr(one, "aclose"):
            await one.aclose()
    await db.dispose()
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    stores: dict[str, Any] = {}
    if args.store in ("postgresql", "both"):
        server = PostgresServer(Path(tempfile.mkdtemp(prefix="hutch-bench-pg-")))
        server.init()
        server.start()
        try:
            peer = await measure(server.create_database("peer"), 10, args.decisions, args.history)
            many = await measure(server.create_database("many"), args.hosts, args.decisions,
                                 args.history, peer_placer(args.peer_placement))  # fmt: skip
        finally:
            server.destroy()
        stores["postgresql 15"] = (many, peer)
    if args.store in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="hutch-bench-sqlite-") as directory:
            peer = await measure(f"sqlite:///{directory}/peer.db", 10, args.decisions,
                                 args.history)  # fmt: skip
            many = await measure(f"sqlite:///{directory}/many.db", args.hosts, args.decisions,
                                 args.history, peer_placer(args.peer_placement))  # fmt: skip
        stores["sqlite"] = (many, peer)
    return {
        "benchmark": "cluster_placement",
        "hosts": args.hosts,
        "history_per_host": args.history,
        "stores": {
            store: {
                "placement": many,
                "peer_10_hosts": peer,
                "ratio_p99": {
                    k: round(many[k]["p99_ms"] / max(peer[k]["p99_ms"], 1e-6), 2) for k in many
                },
            }
            for store, (many, peer) in stores.items()
        },
        "load": os.getloadavg(),
        "goal": "p99 <= 20 ms with 1,000 hosts",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--decisions", type=int, default=500)
    parser.add_argument("--history", type=int, default=0)
    parser.add_argument("--store", choices=("postgresql", "sqlite", "both"), default="both")
    parser.add_argument("--peer-placement", type=Path, default=None,
                        help="another placement.py (e.g. main's) timed in turn with this one "
                             "on the 1,000 hosts: 'peer_placement' in each kind")  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cluster.json")
    arguments = parser.parse_args()
    result = asyncio.run(main(arguments))
    text = json.dumps(result, indent=2)
    print(text)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(text + "\n")
