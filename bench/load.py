"""Load: many clients at once creating, using and deleting sandboxes, then a correctness audit.

    .venv/bin/python bench/load.py [--clients 20] [--duration 180] [--out bench/results/load.json]
                                   [--src OTHER_CHECKOUT/src] [--trace-locks]

It starts its own ``hutch serve`` (runc driver) in a temp home and drives it over loopback
from this process: ``--clients`` threads, spread over four users, each looping for
``--duration`` seconds through: create a sandbox, exec in it, write a file of random bytes
and read it back, read every list endpoint, and delete it (every third sandbox a client
makes is kept until the end instead, so deletes happen while others run). It prints
throughput and p50/p99 per operation, next to two peers measured under the same load in
the same run: a bare fork/exec of ``true`` every 50 ms (the peer of exec), and a bare
``runc run -d`` of the same image (read-only root, runc's defaults, no network or agent;
deleted after, untimed) every second (the peer of create: a create's speed is the bare
one's p50 over the create's p50, so 0.5 means a create takes twice a bare ``runc run -d``
started at the same moments). Then it audits what a user would notice:

- every sandbox that was created is either running and answering (its file reads back
  byte for byte) or, if its delete was answered 2xx, destroyed;
- the host holds exactly the kept sandboxes: their runc containers, netns, cgroups,
  veths and mounts, and nothing of any deleted one;
- once the kept ones are deleted too, nothing at all is left.

``--src`` runs the server of another checkout (its ``src/`` first on PYTHONPATH): runs of
two codes one after the other, each with its own peers, compare by their ratios.
``--trace-locks`` times every SQLite write transaction of the server's processes
(``bench/locktrace``: how long each held the write lock and waited for it, and which code
made it) and adds them up under ``sqlite_write_locks``. No
thresholds (these machines are shared and noisy); ``run_load`` is also the body of a
small fixed-size test that asserts the audit (tests/e2e/test_load_runc.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.sandboxes import percentiles  # noqa: E402
from tests.support.server import HutchProcess, remove_instance, run_cli  # noqa: E402

from hutch.host.drivers.runc import RuncDriver  # noqa: E402

IMAGES = Path(os.environ.get("HUTCH_IMAGES_DIR", "/var/cache/hutch-test-images"))
SHAPE = "s-1vcpu-256mb"
LISTS = ("/v1/sandboxes", "/v1/networks", "/v1/disks", "/v1/shapes", "/v1/rootfs", "/v1/hosts")
USERS = 4


@dataclass
class Made:
    id: str
    user: int
    path: str
    data: bytes
    deleted: bool = False


@dataclass
class LoadReport:
    clients: int
    seconds: float
    timings: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: list[str] = field(default_factory=list)
    load_average: list[float] = field(default_factory=list)  # 1-min, at the start and end
    made: list[Made] = field(default_factory=list)
    audit: dict[str, Any] = field(default_factory=dict)
    peer: list[float] = field(default_factory=list)  # bare fork/exec under the same load
    runc_peer: list[float] = field(default_factory=list)  # bare runc run -d, the same load
    warm: list[str] = field(default_factory=list)  # each create's X-Hutch-Warm
    burst: list[float] = field(default_factory=list)  # 10 creates at once, under the load
    burst_bare: list[float] = field(default_factory=list)  # 10 bare runc run -d at once

    def summary(self) -> dict[str, Any]:
        operations = {}
        for name, samples in sorted(self.timings.items()):
            stats = percentiles([s * 1000 for s in samples])
            operations[name] = {
                "count": len(samples),
                "per_s": round(len(samples) / self.seconds, 2),
                "p50_ms": stats["p50"],
                "p99_ms": stats["p99"],
            }
        peer = percentiles([s * 1000 for s in self.peer] or [0.0])
        exec_p99 = operations.get("exec", {}).get("p99_ms", 0.0)
        runc = percentiles([s * 1000 for s in self.runc_peer] or [0.0])
        create_p50 = operations.get("create", {}).get("p50_ms", 0.0)
        return {
            "clients": self.clients,
            "load_average": self.load_average,
            "bare_runc_run_detached_under_load": {
                "count": len(self.runc_peer),
                "p50_ms": runc["p50"],
                "p99_ms": runc["p99"],
            },
            "create_speed_p50_vs_bare_runc_run_detached": round(runc["p50"] / create_p50, 2)
            if create_p50 and self.runc_peer
            else None,
            # No warm pool here: every create should be cold (X-Hutch-Warm: 0).
            "creates_from_warm_pool": self.warm.count("1"),
            "creates_cold": self.warm.count("0"),
            "bare_fork_exec_under_load": {
                "count": len(self.peer),
                "p50_ms": peer["p50"],
                "p99_ms": peer["p99"],
            },
            "ratio_exec_p99_to_bare_fork_exec_p99": round(exec_p99 / peer["p99"], 1)
            if peer["p99"]
            else None,
            **self._bursts(),
            "seconds": round(self.seconds, 1),
            "requests_per_s": round(sum(len(s) for s in self.timings.values()) / self.seconds, 1),
            "sandboxes_created_per_s": round(len(self.made) / self.seconds, 2),
            "operations": operations,
            "failures": self.failures[:50],
            "failure_count": len(self.failures),
            "audit": self.audit,
        }

    def _bursts(self) -> dict[str, Any]:
        if not self.burst:
            return {}
        creates = percentiles([s * 1000 for s in self.burst])
        bare = percentiles([s * 1000 for s in self.burst_bare] or [0.0])
        return {
            "ten_creates_at_once_under_load": {"count": len(self.burst), **creates},
            "ten_bare_runc_run_detached_at_once_under_load": {
                "count": len(self.burst_bare),
                **bare,
            },
            "ten_at_once_p50_ratio_to_bare": round(creates["p50"] / bare["p50"], 2)
            if bare["p50"]
            else None,
        }


class _Client:
    def __init__(
        self,
        base_url: str,
        key: str,
        user: int,
        report: LoadReport,
        lock: threading.Lock,
        rng: random.Random,
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url, headers={"X-Api-Key": key}, timeout=120, trust_env=False
        )
        self.user = user
        self.report = report
        self.lock = lock
        self.rng = rng

    def timed(self, name: str, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = self.http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            self.fail(f"{name}: {type(exc).__name__}: {exc}")
            return None
        with self.lock:
            self.report.timings[name].append(time.monotonic() - started)
        if response.status_code >= 300:
            self.fail(f"{name}: {response.status_code} {response.text[:200]}")
        return response

    def fail(self, message: str) -> None:
        with self.lock:
            self.report.failures.append(message)

    def one_round(self, keep: bool) -> None:
        created = self.timed("create", "POST", "/v1/sandboxes", json={"shape": SHAPE})
        if created is None or created.status_code != 201:
            return
        with self.lock:
            self.report.warm.append(created.headers.get("X-Hutch-Warm", "?"))
        box = created.json()["data"]
        data = self.rng.randbytes(self.rng.randint(1, 256 * 1024))
        made = Made(id=box["id"], user=self.user, path=f"/tmp/load-{box['id']}.bin", data=data)
        with self.lock:
            self.report.made.append(made)
        token = str(self.rng.getrandbits(64))
        ran = self.timed(
            "exec", "POST", f"/v1/sandboxes/{made.id}/exec", json={"cmd": "echo", "args": [token]}
        )
        if ran is not None and ran.status_code == 200 and _stdout(ran) != token + "\n":
            self.fail(f"exec: wrong output from {made.id}")
        self.timed(
            "write_file",
            "PUT",
            f"/v1/sandboxes/{made.id}/files",
            params={"path": made.path},
            content=data,
        )
        read = self.timed(
            "read_file", "GET", f"/v1/sandboxes/{made.id}/files", params={"path": made.path}
        )
        if read is not None and read.status_code == 200 and read.content != data:
            self.fail(f"read_file: {made.id} gave back other bytes")
        for url in LISTS:
            self.timed("list", "GET", url)
        if not keep:
            deleted = self.timed("delete", "DELETE", f"/v1/sandboxes/{made.id}")
            made.deleted = deleted is not None and deleted.status_code < 300


def _stdout(response: httpx.Response) -> str:
    return str(response.json()["data"]["result"]["stdout"])


def run_load(
    base_url: str,
    keys: list[str],
    *,
    clients: int,
    duration_s: float | None = None,
    rounds: int | None = None,
    seed: int = 1,
    runc_peer: bool = False,
    bursts: int = 0,
) -> LoadReport:
    """Drive the server; stop after ``duration_s`` or after ``rounds`` per client. With
    ``bursts`` (and a duration), that many times spread over it, 10 creates at once (each
    timed, then deleted) and right after them 10 bare ``runc run -d`` at once."""
    report = LoadReport(clients=clients, seconds=0.0)
    lock = threading.Lock()
    deadline = time.monotonic() + (duration_s or 0)

    def client(index: int) -> None:
        worker = _Client(
            base_url,
            keys[index % len(keys)],
            index % len(keys),
            report,
            lock,
            random.Random(seed * 1000 + index),
        )
        done = 0
        while (rounds is not None and done < rounds) or (
            rounds is None and time.monotonic() < deadline
        ):
            worker.one_round(keep=done % 3 == 2)
            done += 1
        worker.http.close()

    started = time.monotonic()
    report.load_average.append(round(os.getloadavg()[0], 2))
    finished = threading.Event()
    peers = [threading.Thread(target=_fork_exec_peer, args=(report, lock, finished), daemon=True)]
    if runc_peer:
        peers.append(
            threading.Thread(target=_runc_peer, args=(report, lock, finished), daemon=True)
        )
    if bursts and duration_s:
        at = [started + duration_s * (i + 1) / (bursts + 1) for i in range(bursts)]
        burst = (base_url, keys[0], report, lock, finished, at)
        peers.append(threading.Thread(target=_bursts, args=burst, daemon=True))
    for peer in peers:
        peer.start()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    report.seconds = time.monotonic() - started
    report.load_average.append(round(os.getloadavg()[0], 2))
    finished.set()
    for peer in peers:
        peer.join()
    return report


def _fork_exec_peer(report: LoadReport, lock: threading.Lock, finished: threading.Event) -> None:
    """The peer, under the same load: a bare fork/exec of ``true`` every 50 ms."""
    while not finished.wait(0.05):
        started = time.monotonic()
        subprocess.run(["true"], check=False)
        with lock:
            report.peer.append(time.monotonic() - started)


def _bursts(
    base_url: str,
    key: str,
    report: LoadReport,
    lock: threading.Lock,
    finished: threading.Event,
    at: list[float],
) -> None:
    """At each of ``at`` (monotonic times) while the load runs: 10 creates at once, each
    timed to its answer, then deleted; then their peer, 10 bare ``runc run -d`` at once."""
    from bench.sandboxes import bare_runc_detached_concurrent

    with httpx.Client(base_url=base_url, headers={"X-Api-Key": key}, timeout=120,
                      trust_env=False) as http:  # fmt: skip

        def create(_: int) -> tuple[float, str | None]:
            started = time.monotonic()
            answer = http.post("/v1/sandboxes", json={"shape": SHAPE})
            took = time.monotonic() - started
            if answer.status_code != 201:
                with lock:
                    report.failures.append(f"burst create: {answer.status_code}")
                return took, None
            return took, str(answer.json()["data"]["id"])

        for when in at:
            if finished.wait(max(0.0, when - time.monotonic())):
                return
            with ThreadPoolExecutor(10) as pool:
                made = list(pool.map(create, range(10)))
            bare = bare_runc_detached_concurrent(10, 1)
            with lock:
                report.burst += [took for took, _ in made]
                report.burst_bare += [ms / 1000 for ms in bare]
            for _, sandbox_id in made:
                if sandbox_id is not None:
                    http.delete(f"/v1/sandboxes/{sandbox_id}")


def _runc_peer(report: LoadReport, lock: threading.Lock, finished: threading.Event) -> None:
    """The create's peer, under the same load: a bare ``runc run -d`` every second."""
    from bench.sandboxes import BareRunc

    bare = BareRunc(["/bin/sleep", "1000"])
    try:
        while not finished.wait(1.0):
            took = bare.run_detached()
            with lock:
                report.runc_peer.append(took / 1000)
    finally:
        bare.close()


def audit(base_url: str, keys: list[str], home: Path, report: LoadReport) -> dict[str, Any]:
    """What a user would check afterwards, and what the host holds."""
    problems: list[str] = []
    kept = [m for m in report.made if not m.deleted]
    for made in report.made:
        with httpx.Client(
            base_url=base_url, headers={"X-Api-Key": keys[made.user]}, timeout=60, trust_env=False
        ) as http:
            status = http.get(f"/v1/sandboxes/{made.id}").json()["data"]["status"]
            if made.deleted:
                if status != "destroyed":
                    problems.append(f"{made.id} was deleted (2xx) but is {status}")
                continue
            if status != "running":
                problems.append(f"{made.id} should run but is {status}")
                continue
            back = http.get(f"/v1/sandboxes/{made.id}/files", params={"path": made.path})
            if back.status_code != 200 or back.content != made.data:
                problems.append(f"{made.id}: its file did not read back byte for byte")
    host = asyncio.run(RuncDriver(home, images=home).leftovers())
    expected = sorted(m.id for m in kept)
    for kind in ("runc", "directories"):
        if sorted(host[kind]) != expected:
            problems.append(f"host {kind}: {len(host[kind])} held, {len(expected)} expected")
    for kind in ("netns", "veths", "cgroups"):
        if len(host[kind]) != len(expected):
            problems.append(f"host {kind}: {len(host[kind])} held, {len(expected)} expected")
    return {"created": len(report.made), "kept": len(kept), "problems": problems}


def cleanup_audit(base_url: str, keys: list[str], home: Path, report: LoadReport) -> list[str]:
    """Delete what is left; then nothing of it may remain on the host."""
    for made in report.made:
        if not made.deleted:
            httpx.delete(
                f"{base_url}/v1/sandboxes/{made.id}",
                timeout=60,
                trust_env=False,
                headers={"X-Api-Key": keys[made.user]},
            )
    host = asyncio.run(RuncDriver(home, images=home).leftovers())
    return [
        f"left on the host after deleting everything: {kind} {items[:5]}"
        for kind, items in host.items()
        if items
    ]


def start_server(
    home: Path, src: str | None = None, trace_locks: Path | None = None
) -> tuple[HutchProcess, list[str]]:
    before = os.environ.get("PYTHONPATH")
    # The server imports that checkout's hutch first, and the lock tracer if asked.
    tracer = str(REPO / "bench" / "locktrace") if trace_locks is not None else None
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (src, tracer, before)))
    if trace_locks is not None:
        os.environ["BENCH_LOCKTRACE_DIR"] = str(trace_locks)
    try:
        return _start_server(home)
    finally:
        os.environ.pop("BENCH_LOCKTRACE_DIR", None)
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def _start_server(home: Path) -> tuple[HutchProcess, list[str]]:
    server = HutchProcess(
        home,
        env={
            "HUTCH_DRIVER": "runc",
            "HUTCH_IMAGES_DIR": str(IMAGES),
            "HUTCH_LINK_POOL": "10.95.0.0/16",
            "HUTCH_MAX_RUNNING_PER_USER": "200",
        },
    ).wait_ready()
    keys = [
        run_cli(home, "keys", "create", "--user", f"load{i}").stdout.strip() for i in range(USERS)
    ]
    return server, keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=180)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "load.json")
    parser.add_argument("--src", help="run the server of another checkout's src/")
    parser.add_argument("--bursts", type=int, default=2,
                        help="times 10 creates at once are timed under the load")  # fmt: skip
    parser.add_argument("--trace-locks", action="store_true",
                        help="time every SQLite write transaction of the server")  # fmt: skip
    options = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-load-")) / "home"
    traces = home.parent / "locktrace" if options.trace_locks else None
    if traces is not None:
        traces.mkdir()
    server, keys = start_server(home, options.src, traces)
    try:
        report = run_load(
            server.url, keys, clients=options.clients, duration_s=options.duration,
            runc_peer=True, bursts=options.bursts,
        )  # fmt: skip
        report.audit = audit(server.url, keys, home, report)
        report.audit["after_cleanup"] = cleanup_audit(server.url, keys, home, report)
    finally:
        server.stop()
        remove_instance(home)
    result = {"benchmark": "load", "machine": {"cpus": os.cpu_count()}, "src": options.src,
              **report.summary()}  # fmt: skip
    if traces is not None:
        from bench.locktrace.sitecustomize import summary

        result["sqlite_write_locks"] = summary(traces)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
