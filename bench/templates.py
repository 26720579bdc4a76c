"""Templates (issue 16): starting from a template, the build cache, and a build against the
same commands run by hand.

    .venv/bin/python bench/templates.py [--pairs 30] [--count 100] [--out FILE]

Against a real ``hutch serve`` (runc), through the API as a user would:

1. **Create → first exec**, ``--pairs`` times, alternating a sandbox of ``devbox:1`` (the
   peer) and one of a template built on it (4 layers: a user, 20 MiB of files, a
   package list, a copied file; ENV, WORKDIR, USER), each deleted after (not timed).
2. **Build overhead per cached step**: a Dockerfile of 10 RUN steps built once, then
   again (every step a cache hit), against a Dockerfile with no filesystem step (FROM and
   CMD only; the fixed cost of a build: the submit, the queue, the log); per cached step
   = (10-step cached build - empty build) / 10, 5 rounds.
3. **5-step build without cache vs by hand**: five RUN steps that do real work (write
   files, compute, compile Python bytecode) under a fresh nonce, so nothing is cached,
   against the same five commands run by hand in one new sandbox of ``devbox:1`` (create,
   five execs): the ratio, 3 rounds.
4. **Disk**: ``--count`` sandboxes from one template, the host's used disk (statvfs)
   before and after: each sandbox adds its writable layer; the template's layers count
   once. Peer: the same count from ``devbox:1``.

It destroys everything it made and prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.server import HutchProcess, remove_instance, run_cli  # noqa: E402

IMAGES = Path(os.environ.get("HUTCH_IMAGES_DIR", "/var/cache/hutch-test-images"))
MIB = 2**20
SHAPE = "s-1vcpu-512mb"

TEMPLATE = """FROM devbox:1
RUN useradd --create-home app
RUN mkdir /opt/data && for i in $(seq 20); do head -c 1048576 /dev/urandom > /opt/data/$i; done
RUN dpkg -l > /opt/packages.txt
ENV APP_MODE=bench
WORKDIR /home/app
RUN cp /etc/os-release /home/app/os-release && chown app /home/app/os-release
USER app
"""
WORK = [
    "mkdir /opt/w1 && for i in $(seq 400); do head -c 65536 /dev/urandom > /opt/w1/$i; done",
    "python3 -c 'print(sum(i * i for i in range(4_000_000)))' > /opt/w2.txt",
    "cp -r /usr/lib/python3.11/email /opt/w3 && python3 -m compileall -q /opt/w3 > /dev/null",
    "tar -czf /opt/w4.tgz -C /usr/lib/python3.11 json unittest",
    "sha256sum /opt/w1/* > /opt/w5.txt",
]


def p50(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def used_bytes(path: Path) -> int:
    os.sync()
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


@contextmanager
def server() -> Iterator[tuple[HutchProcess, httpx.Client]]:
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-templates-")) / "home"
    process = HutchProcess(
        home,
        env={"HUTCH_DRIVER": "runc", "HUTCH_IMAGES_DIR": str(IMAGES),
             "HUTCH_LINK_POOL": "10.93.0.0/20", "HUTCH_MAX_RUNNING_PER_USER": "500",
             "HUTCH_TEMPLATE_BUILD_SHAPE": SHAPE},
    ).wait_ready(timeout=120)  # fmt: skip
    key = run_cli(home, "keys", "create", "--user", "bench").stdout.strip()
    try:
        with process.client(key) as api:
            api.timeout = httpx.Timeout(600)
            yield process, api
    finally:
        process.stop()
        remove_instance(home)


def build(api: httpx.Client, name: str, dockerfile: str) -> tuple[float, dict[str, Any]]:
    """Seconds from the submit to the follow stream's final frame, and the template."""
    started = time.monotonic()
    answer = api.post("/v1/templates", json={"name": name, "dockerfile": dockerfile})
    answer.raise_for_status()
    template_id = answer.json()["data"]["id"]
    with api.stream("GET", f"/v1/templates/{template_id}/logs", params={"follow": "true"}) as s:
        final = [json.loads(line) for line in s.iter_lines() if line][-1]
    seconds = time.monotonic() - started
    assert final == {"final": True, "status": "ready"}, final
    return seconds, api.get(f"/v1/templates/{template_id}").json()["data"]


def create(api: httpx.Client, rootfs: str) -> str:
    answer = api.post("/v1/sandboxes", json={"shape": SHAPE, "rootfs": rootfs})
    answer.raise_for_status()
    return str(answer.json()["data"]["id"])


def run(api: httpx.Client, sandbox_id: str, script: str) -> None:
    answer = api.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": script})
    answer.raise_for_status()
    result = answer.json()["data"]["result"]
    assert result["exit_code"] == 0, result


def create_to_first_exec(api: httpx.Client, pairs: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"devbox:1": [], "template": []}
    for index in range(pairs * 2):
        rootfs = "devbox:1" if index % 2 == 0 else "bench-app"
        started = time.monotonic()
        sandbox_id = create(api, rootfs)
        run(api, sandbox_id, "true")
        times["devbox:1" if rootfs == "devbox:1" else "template"].append(
            (time.monotonic() - started) * 1000
        )
        api.delete(f"/v1/sandboxes/{sandbox_id}")
    devbox, template = p50(times["devbox:1"]), p50(times["template"])
    return {"devbox_p50_ms": devbox, "template_p50_ms": template,
            "template_vs_devbox": round(template / devbox, 3),
            "devbox_p90_ms": round(statistics.quantiles(times["devbox:1"], n=10)[-1], 1),
            "template_p90_ms": round(statistics.quantiles(times["template"], n=10)[-1], 1),
    }  # fmt: skip


def cached_step_overhead(api: httpx.Client, rounds: int = 5) -> dict[str, Any]:
    per_step, empty_s, cached_s = [], [], []
    for round_ in range(rounds):
        steps = "".join(f"RUN echo {round_}-{i} > /step{i}\n" for i in range(10))
        dockerfile = f"FROM devbox:1\n{steps}"
        build(api, f"cache-{round_}", dockerfile)  # the first build makes the layers
        empty, _ = build(api, f"empty-{round_}", f'FROM devbox:1\nCMD ["true"]\nENV R={round_}\n')
        cached, data = build(api, f"cache-{round_}", dockerfile)
        assert data["steps_cached"] == 10, data
        empty_s.append(empty)
        cached_s.append(cached)
        per_step.append((cached - empty) / 10 * 1000)
    return {"per_cached_step_ms_p50": p50(per_step), "empty_build_s_p50": round(
        statistics.median(empty_s), 3), "ten_cached_steps_build_s_p50": round(
        statistics.median(cached_s), 3), "rounds": rounds}  # fmt: skip


def build_vs_by_hand(api: httpx.Client, rounds: int = 3) -> dict[str, Any]:
    builds, hands = [], []
    for round_ in range(rounds):
        nonce = f"{time.time_ns()}-{round_}"
        runs = "".join(f"RUN {command}\n" for command in WORK)
        dockerfile = f"FROM devbox:1\nENV NONCE={nonce}\n{runs}"
        seconds, data = build(api, f"nocache-{round_}", dockerfile)
        assert data["steps_cached"] == 0, data
        builds.append(seconds)
        started = time.monotonic()
        sandbox_id = create(api, "devbox:1")
        for command in WORK:
            run(api, sandbox_id, command)
        hands.append(time.monotonic() - started)
        api.delete(f"/v1/sandboxes/{sandbox_id}")
    build_s, hand_s = statistics.median(builds), statistics.median(hands)
    return {"five_step_build_s_p50": round(build_s, 2), "by_hand_s_p50": round(hand_s, 2),
            "ratio": round(build_s / hand_s, 2), "per_step_overhead_s": round(
                (build_s - hand_s) / len(WORK), 3), "rounds": rounds}  # fmt: skip


def disk_per_sandbox(process: HutchProcess, api: httpx.Client, count: int) -> dict[str, Any]:
    out: dict[str, Any] = {"count": count}
    for rootfs in ("bench-app", "devbox:1"):
        before = used_bytes(process.home)
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(create, [api] * count, [rootfs] * count))
            list(pool.map(lambda sandbox_id: run(api, sandbox_id, "true"), ids))
        after = used_bytes(process.home)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda sandbox_id: api.delete(f"/v1/sandboxes/{sandbox_id}"), ids))
        label = "template" if rootfs == "bench-app" else "devbox"
        out[f"{label}_mib_per_sandbox"] = round((after - before) / count / MIB, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "templates.json")
    args = parser.parse_args()
    with server() as (process, api):
        build_s, template = build(api, "bench-app", TEMPLATE)
        report: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
            "template": {"build_s": round(build_s, 2), "steps": template["steps_total"],
                         "layers_mib_on_disk_once": round(template["ext4_size_bytes"] / MIB, 1)},
            "create_to_first_exec": create_to_first_exec(api, args.pairs),
            "cached_steps": cached_step_overhead(api),
            "build_vs_by_hand": build_vs_by_hand(api),
            "disk": disk_per_sandbox(process, api, args.count),
        }  # fmt: skip
    text = json.dumps(report, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
