"""Capacity: how many idle sandboxes one machine holds, and what fails first.

    .venv/bin/python bench/capacity.py [--max 1000] [--floor-mib 4096] [--peer 100]

It starts its own ``hutch serve`` (runc driver) and creates sandboxes of the smallest shape,
two at a time, each answering an exec before it counts, until a create fails (the answer
is recorded: that is "what failed"), ``--max`` are running, or the host's MemAvailable
falls under ``--floor-mib``, or a batch of 50 takes ten times as long as the first (then
the machine, not hutch, is the limit: page reclaim takes the CPUs, and the run stops before
the kernel's OOM killer would pick a victim). Every 50 sandboxes it samples the
host's MemAvailable and the create rate, next to the same figures for bare ``runc run``
containers (the peer: ``--peer`` of them, kept running, of the same image). Everything is
destroyed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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

from hutch.host.images import image_rootfs  # noqa: E402
from hutch.host.machine import read_memory  # noqa: E402

IMAGES = Path(os.environ.get("HUTCH_IMAGES_DIR", "/var/cache/hutch-test-images"))
SHAPE = "s-1vcpu-256mb"
COLLAPSE = 10  # a batch this many times slower than the first ends the run


def available_mib() -> int:
    return int(read_memory().available_mib)


def hutch_run(count: int, floor_mib: int) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-capacity-")) / "home"
    server = HutchProcess(
        home,
        env={
            "HUTCH_DRIVER": "runc",
            "HUTCH_IMAGES_DIR": str(IMAGES),
            "HUTCH_LINK_POOL": "10.96.0.0/16",
            "HUTCH_MAX_RUNNING_PER_USER": str(count + 10),
            "HUTCH_MONITOR_INTERVAL_S": "30",
        },
    ).wait_ready()
    key = run_cli(home, "keys", "create", "--user", "capacity").stdout.strip()
    http = httpx.Client(
        base_url=server.url, headers={"X-Api-Key": key}, timeout=120, trust_env=False
    )
    made: list[str] = []
    samples: list[dict[str, Any]] = []
    failure: str | None = None
    stopped = "max"
    before = available_mib()
    started = time.monotonic()

    def one(_: int) -> str:
        answer = http.post("/v1/sandboxes", json={"shape": SHAPE})
        if answer.status_code != 201:
            raise RuntimeError(f"create answered {answer.status_code}: {answer.text[:300]}")
        sandbox_id = str(answer.json()["data"]["id"])
        made.append(sandbox_id)
        ran = http.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": "true"})
        if ran.status_code != 200 or ran.json()["data"]["result"]["exit_code"] != 0:
            raise RuntimeError(f"exec in sandbox {len(made)} answered {ran.status_code}")
        return sandbox_id

    try:
        with ThreadPoolExecutor(2) as pool:
            while len(made) < count:
                batch = min(50, count - len(made))
                try:
                    list(pool.map(one, range(batch)))
                except (RuntimeError, httpx.HTTPError) as exc:
                    failure, stopped = str(exc), "failure"
                    break
                free = available_mib()
                now = round(time.monotonic() - started, 2)
                took = round(now - (samples[-1]["seconds"] if samples else 0.0), 2)
                samples.append(
                    {
                        "sandboxes": len(made),
                        "mem_available_mib": free,
                        "seconds": now,
                        "batch_s": took,
                    }
                )
                if free < floor_mib:
                    stopped = "memory floor"
                    break
                if len(samples) > 2 and took > COLLAPSE * samples[0]["batch_s"]:
                    # The host, not hutch, gave out: page reclaim takes the CPUs.
                    stopped = f"creates slowed {COLLAPSE}x (host under memory pressure)"
                    break
        elapsed = time.monotonic() - started
        held = len(made)
        used = before - available_mib()
    finally:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: http.delete(f"/v1/sandboxes/{i}"), made))
        http.close()
        server.stop()
        remove_instance(home)
    return {
        "held": held,
        "stopped_by": stopped,
        "failure": failure,
        "seconds": round(elapsed, 1),
        "created_per_s": round(held / elapsed, 2),
        "mem_available_drop_mib_per_sandbox": round(used / max(held, 1), 2),
        "samples": samples,
    }


def runc_peer(count: int) -> dict[str, Any]:
    """``count`` bare runc containers of the same image, each running ``sleep``: the
    floor of what a container costs (no network, no agent, no writable disk image)."""
    rootfs = image_rootfs(IMAGES, "devbox:1")
    if rootfs is None:
        raise SystemExit("devbox:1 is not built: make test builds it")
    work = Path(tempfile.mkdtemp(prefix="hutch-bench-runc-"))
    runc = ["runc", "--root", str(work / "state")]
    subprocess.run(["runc", "spec"], cwd=work, check=True)
    spec = json.loads((work / "config.json").read_text())
    spec["root"] = {"path": str(rootfs), "readonly": True}
    spec["process"]["args"] = ["/bin/sleep", "infinity"]
    spec["process"]["terminal"] = False
    (work / "config.json").write_text(json.dumps(spec))
    before = available_mib()
    started = time.monotonic()
    names = [f"cap-{i}" for i in range(count)]
    try:
        for name in names:
            subprocess.run(
                [*runc, "run", "-d", name],
                cwd=work,
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        elapsed = time.monotonic() - started
        used = before - available_mib()
    finally:
        for name in names:
            subprocess.run([*runc, "delete", "--force", name], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return {
        "containers": count,
        "created_per_s": round(count / elapsed, 2),
        "mem_available_drop_mib_per_container": round(used / count, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max", type=int, default=1000)
    parser.add_argument("--floor-mib", type=int, default=4096)
    parser.add_argument("--peer", type=int, default=100)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "capacity.json")
    options = parser.parse_args()
    hutch = hutch_run(options.max, options.floor_mib)
    peer = runc_peer(options.peer)
    result = {
        "benchmark": "capacity",
        "machine": {"cpus": os.cpu_count(), "mem_mib": read_memory().total_mib},
        "shape": SHAPE,
        "hutch": hutch,
        "bare_runc": peer,
        "ratio_create_rate_to_bare_runc": round(hutch["created_per_s"] / peer["created_per_s"], 2),
        "ratio_memory_to_bare_runc": round(
            hutch["mem_available_drop_mib_per_sandbox"]
            / max(peer["mem_available_drop_mib_per_container"], 0.01),
            2,
        ),
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
