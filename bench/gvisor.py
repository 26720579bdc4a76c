"""gvisor against runc against a bare ``runsc run``, in the same run.

    .venv/bin/python bench/gvisor.py [--quick] [--out bench/results/gvisor.json]

Through one ``hutch serve`` (both runtimes on one host), for each runtime:
1. create -> first exec (sequential), next to a bare ``runsc run`` of the same image
   running ``/bin/true`` (``--network=none``: the floor of gVisor itself); for gvisor also
   from the warm pool (``HUTCH_WARM_POOL=gvisor:devbox:1:s-1vcpu-256mb=2``: the pool is
   let fill before each, as a user meets it; ``X-Hutch-Warm: 1`` checked);
2. exec round trip through the API (``true``);
3. pause and resume of an idle ``s-1vcpu-256mb`` sandbox (gvisor: hibernate to a snapshot
   and restore; runc: freeze and thaw);
4. fork of a paused sandbox -> the child answering an exec;
5. host memory per paused sandbox (MemAvailable, with N paused: gvisor's hibernated hold
   no process; and what each keeps: mounts, network namespaces), and snapshot size;
6. gvisor pause/resume as the memory a sandbox really uses grows (64 MiB -> 1 GiB);
7. the floors, by hand with runsc on the same image and platform
   (``bench/gvisor_floors.py``): ``run --detach``, ``exec true``, ``checkpoint``,
   ``restore`` (with ``sleep`` or an idle ``python3`` as init, with and without a network
   namespace), and one spawn of ``true`` inside gVisor by how it is made (C ``fork``,
   ``vfork``, ``posix_spawn``; Python's ``subprocess``), what any in-sandbox agent pays
   per exec;
8. resume paired with its peer (``resume_paired``): a resume and a bare restore of the
   same size timed one right after the other, ``n`` times, the order alternating: the
   ratio of each pair (the load moves between a run's phases on a shared machine);
9. ``against_goals``: each figure of issue 17 beside its goal and its peer of the same
   run, with their ratio.

The memory figures (5, 6) and the small API helpers are in ``bench/gvisor_memory.py``.

Prints one JSON document with the platform and the load average at start and end; no
thresholds (a shared, noisy machine: read the ratios between peers measured together).
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
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.server import HutchProcess, remove_instance, run_cli  # noqa: E402

from hutch.host.machine import read_memory  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from gvisor_floors import (  # noqa: E402
    PYTHON_IDLE,
    PairedRestore,
    bare_runsc_floors,
    bare_runsc_runs,
    percentiles,
    spawn_floors,
)
from gvisor_memory import (  # noqa: E402
    IMAGES,
    SHAPE,
    create,
    du_mib,
    memory_growth,
    ok,
    paused_memory,
    run,
    timed,
)

RUNTIMES = ("gvisor", "runc")
WARM = 2


def prepared(home: Path) -> int:
    sandboxes = home / "sandboxes"
    return sum(1 for d in sandboxes.iterdir() if (d / "warm").exists()) if sandboxes.is_dir() else 0


def wait_for_pool(home: Path) -> None:
    deadline = time.monotonic() + 180
    while prepared(home) < WARM:
        assert time.monotonic() < deadline, "the warm pool did not fill"
        time.sleep(0.05)
    time.sleep(1.5)  # the last one's own start settles (checked at hand-out)


def warm_creates(api: httpx.Client, home: Path, n: int) -> dict[str, Any]:
    """gvisor create -> first exec from the warm pool (the shape's default disk: the
    pool's), the pool full before each; and the hand-out alone (``spawn_ms``)."""
    firsts, spawns = [], []
    for _ in range(n):
        wait_for_pool(home)
        started = time.perf_counter()
        made = api.post("/v1/sandboxes", json={"shape": SHAPE, "runtime": "gvisor"})
        box = ok(made)
        assert run(api, box["id"], "true")["exit_code"] == 0
        firsts.append((time.perf_counter() - started) * 1000)
        assert made.headers["X-Hutch-Warm"] == "1", "not from the pool"
        spawns.append(float(box["spawn_ms"]))
        api.delete(f"/v1/sandboxes/{box['id']}")
    return {"create_to_first_exec_ms": percentiles(firsts), "hand_out_ms": percentiles(spawns),
            "pool": f"gvisor:devbox:1:{SHAPE}={WARM}"}  # fmt: skip


def per_runtime(api: httpx.Client, home: Path, runtime: str, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ok_ = create(api, runtime)  # warm-up (disk template, the statx shim)
    api.delete(f"/v1/sandboxes/{ok_['id']}")

    firsts, made = [], []
    for _ in range(n):
        ms, box = timed(lambda: (b := create(api, runtime), run(api, b["id"], "true"))[0])
        firsts.append(ms)
        made.append(box["id"])
    out["create_to_first_exec_ms"] = percentiles(firsts)

    box = made[0]
    trips = [timed(lambda: run(api, box, "true"))[0] for _ in range(n * 5)]
    out["exec_round_trip_ms"] = percentiles(trips)

    pauses, resumes, sizes = [], [], []
    # All paused, then all resumed: a resume a moment after its pause would also wait for
    # the checkpointed Sentry to finish exiting (1-2 s on ptrace).
    for sandbox_id in made[:n]:
        ms, view = timed(lambda s=sandbox_id: ok(api.post(f"/v1/sandboxes/{s}/pause")))
        pauses.append(ms)
        sizes.append(du_mib(home / "snapshots" / sandbox_id))
        assert view["hibernated"] is (runtime == "gvisor"), view
    time.sleep(3)
    for sandbox_id in made[:n]:
        resumes.append(timed(lambda s=sandbox_id: ok(api.post(f"/v1/sandboxes/{s}/resume")))[0])
    out["pause_ms"] = percentiles(pauses)
    out["resume_ms"] = percentiles(resumes)
    if runtime == "gvisor":
        out["snapshot_mib_idle"] = percentiles(sizes)

    source = made[0]
    ok(api.post(f"/v1/sandboxes/{source}/pause"))
    forks, children = [], []
    for _ in range(max(3, n // 2)):
        ms, child = timed(lambda: (c := ok(api.post(f"/v1/sandboxes/{source}/fork", json={})),
                                   run(api, c["id"], "true"))[0])  # fmt: skip
        forks.append(ms)
        children.append(child["id"])
    out["fork_to_child_exec_ms"] = percentiles(forks)
    out["fork_mode"] = ok(api.get(f"/v1/sandboxes/{children[0]}"))["fork_mode"]
    for sandbox_id in made + children:
        api.delete(f"/v1/sandboxes/{sandbox_id}")
    return out


def steps_breakdown(lines: list[str]) -> dict[str, Any]:
    """The driver's ``steps wake|fork <id>: name=begin-end ... total=N ms`` log lines
    (:class:`hutch.host.drivers.gvisor_host.Steps`): p50 of each step's duration and of
    its end (from the driver's start), and of the driver's total, per kind."""
    spans: dict[str, dict[str, list[tuple[float, float]]]] = {}
    totals: dict[str, list[float]] = {}
    for line in lines:
        if " steps " not in line:
            continue
        kind, rest = line.split(" steps ", 1)[1].split(" ", 1)
        body, _, total = rest.split(": ", 1)[1].rpartition("total=")
        totals.setdefault(kind, []).append(float(total.split()[0]))
        for item in body.split():
            name, _, span = item.partition("=")
            begun, _, ended = span.partition("-")
            spans.setdefault(kind, {}).setdefault(name, []).append((float(begun), float(ended)))
    out: dict[str, Any] = {}
    for kind, named in spans.items():
        out[kind] = {"driver_total_ms": percentiles(totals[kind])}
        for name, values in named.items():
            durations = percentiles([e - b for b, e in values])["p50"]
            ends = percentiles([e for _, e in values])["p50"]
            out[kind][name] = {"ms_p50": durations, "ends_at_p50": ends}
    return out


def _p50(report: dict[str, Any], *path: str) -> float | None:
    value: Any = report
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if isinstance(value, dict):
        value = value.get("p50")
    return float(value) if isinstance(value, int | float) else None


# (figure, where in the report, goal, unit, its peer: (name, where in the report))
GOALS = [
    ("create -> first exec, warm pool", ("gvisor_warm", "create_to_first_exec_ms"), 250, "ms",
     ("bare runsc run of /bin/true", ("bare_runsc_run_true_ms",))),
    ("create -> first exec, cold", ("gvisor", "create_to_first_exec_ms"), 250, "ms",
     ("bare run --detach (idle python3, network)", ("bare_runsc_floors_net", "run_detached_ms"))),
    ("exec round trip", ("gvisor", "exec_round_trip_ms"), 10, "ms",
     ("vfork+execve of /bin/true inside gVisor (C)", ("spawn_floors", "c_vfork_dynamic_true_ms"))),
    ("hibernate", ("gvisor", "pause_ms"), 300, "ms",
     ("bare checkpoint (idle python3, network)", ("bare_runsc_floors_net", "checkpoint_ms"))),
    ("resume", ("gvisor", "resume_ms"), 300, "ms",
     ("bare restore (idle python3, network)", ("bare_runsc_floors_net", "restore_ms"))),
    ("resume, paired with its peer", ("gvisor", "resume_paired", "resume_ms"), 300, "ms",
     ("bare restore right beside each (idle python3, network)",
      ("gvisor", "resume_paired", "bare_restore_ms"))),
    ("fork -> child answering an exec", ("gvisor", "fork_to_child_exec_ms"), 500, "ms",
     ("bare restore (idle python3, network)", ("bare_runsc_floors_net", "restore_ms"))),
    ("host memory per hibernated sandbox, held (hutch RSS + page cache + kernel objects)",
     ("gvisor", "paused_memory", "held_mib_per_paused_sandbox"), 0.5, "MiB",
     ("per running sandbox", ("gvisor", "paused_memory",
                              "host_mem_available_drop_running_mib_per_sandbox"))),
    ("host memory per hibernated sandbox",
     ("gvisor", "paused_memory", "host_mem_available_drop_paused_mib_per_sandbox"), 0.5, "MiB",
     ("per running sandbox", ("gvisor", "paused_memory",
                              "host_mem_available_drop_running_mib_per_sandbox"))),
]  # fmt: skip


def against_goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each figure of issue 17 beside its goal and its peer of the same run (p50s)."""
    rows = []
    for figure, where, goal, unit, (peer, peer_where) in GOALS:
        value, floor = _p50(report, *where), _p50(report, *peer_where)
        if value is None:
            continue
        # A negative memory figure is the rest of the host moving (others' work): unread.
        rows.append({"figure": figure, "p50": value, "goal": goal, "unit": unit,
                     "met": value <= goal if value >= 0 else None, "peer": peer,
                     "peer_p50": floor,
                     "ratio_to_peer": round(value / floor, 2) if floor else None})  # fmt: skip
    return rows


def floors(report: dict[str, Any], n: int, platform_name: str) -> None:
    """The floors of the same run (``bench/gvisor_floors.py``) into ``report``."""
    report["bare_runsc_floors_net"] = bare_runsc_floors(
        IMAGES, max(3, n // 2), platform_name, PYTHON_IDLE, network=True
    )
    report["bare_runsc_floors_python"] = bare_runsc_floors(
        IMAGES, max(3, n // 2), platform_name, PYTHON_IDLE
    )
    report["spawn_floors"] = spawn_floors(IMAGES, platform_name)


def paired_resumes(api: httpx.Client, count: int, platform_name: str) -> dict[str, Any]:
    """Resume of an idle hibernated sandbox and a bare restore of an idle ``python3``
    (the same size, a network namespace: :class:`PairedRestore`), timed one right after
    the other, the order alternating, ``count`` times: the ratio of each pair, whose two
    figures met the same load."""
    bare = PairedRestore(IMAGES, platform_name)
    box = create(api, "gvisor")["id"]
    run(api, box, "true")
    resumes, restores, ratios = [], [], []
    try:
        for i in range(count):
            ok(api.post(f"/v1/sandboxes/{box}/pause"))
            image = bare.prepare()  # (also lets the hibernated Sentry exit: 1-2 s)
            if i % 2:
                restore_ms = bare.restore(image)
                resume_ms = timed(lambda: ok(api.post(f"/v1/sandboxes/{box}/resume")))[0]
            else:
                resume_ms = timed(lambda: ok(api.post(f"/v1/sandboxes/{box}/resume")))[0]
                restore_ms = bare.restore(image)
            resumes.append(resume_ms)
            restores.append(restore_ms)
            ratios.append(resume_ms / restore_ms)
    finally:
        bare.close()
        api.delete(f"/v1/sandboxes/{box}")
    return {"resume_ms": percentiles(resumes), "bare_restore_ms": percentiles(restores),
            "ratio_p50": round(statistics.median(ratios), 2),
            "ratios": [round(r, 2) for r in ratios]}  # fmt: skip


def focused(n: int, idle: int, out: Path) -> None:
    """``--focus``: gvisor's own figures and their floors, in one short run."""
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-gv-")) / "home"
    server = HutchProcess(home, "--log-level", "info", env={
        "HUTCH_DRIVER": "runc", "HUTCH_IMAGES_DIR": str(IMAGES),
        "HUTCH_LINK_POOL": "10.96.0.0/16", "HUTCH_MAX_RUNNING_PER_USER": "1000",
    }).wait_ready()  # fmt: skip
    assert server.admin_key
    platform_name = os.environ.get("HUTCH_GVISOR_PLATFORM", "ptrace")
    report: dict[str, Any] = {"benchmark": "gvisor --focus", "platform": platform_name,
                              "load_average_at_start": os.getloadavg()}  # fmt: skip
    try:
        with server.client(server.admin_key) as api:
            report["gvisor"] = per_runtime(api, home, "gvisor", n)
            report["gvisor"]["steps"] = steps_breakdown(server.stderr_lines)
            report["gvisor"]["paused_memory"] = paused_memory(
                api, home, "gvisor", idle, server.proc.pid
            )
            report["gvisor"]["resume_paired"] = paired_resumes(api, n, platform_name)
        floors(report, n, platform_name)
        report["against_goals"] = against_goals(report)
        report["load_average_at_end"] = os.getloadavg()
    finally:
        server.stop()
        remove_instance(home)
        shutil.rmtree(home.parent, ignore_errors=True)
    text = json.dumps(report, indent=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gvisor.json")
    parser.add_argument("--focus", action="store_true",
                        help="gvisor only: its create, exec, hibernate, resume, fork and memory "
                             "per hibernated sandbox, with the bare runsc floors (no runc, no "
                             "warm pool, no growth with memory)")  # fmt: skip
    args = parser.parse_args()
    n, idle = (6, 10) if args.quick else (20, 40)
    if args.focus:
        focused(n, idle, args.out)
        return

    run_cli(Path("/tmp"), "images", "build", env={"HUTCH_IMAGES_DIR": str(IMAGES)})
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-gv-")) / "home"
    server = HutchProcess(home, "--log-level", "info", env={
        "HUTCH_DRIVER": "runc", "HUTCH_IMAGES_DIR": str(IMAGES),
        "HUTCH_LINK_POOL": "10.96.0.0/16", "HUTCH_MAX_RUNNING_PER_USER": "1000",
        "HUTCH_WARM_POOL": f"gvisor:devbox:1:{SHAPE}={WARM}",
    }).wait_ready()  # fmt: skip
    assert server.admin_key
    version = subprocess.run(["runsc", "--version"], capture_output=True, text=True).stdout
    platform_name = os.environ.get("HUTCH_GVISOR_PLATFORM", "ptrace")
    report: dict[str, Any] = {
        "benchmark": "gvisor",
        "machine": {"cpus": os.cpu_count(), "mem_mib": read_memory().total_mib,
                    "kernel": platform.release(),
                    "runsc": version.splitlines()[0] if version else "?",
                    "gvisor_platform": platform_name,
                    "load_average_at_start": os.getloadavg()},
    }  # fmt: skip
    try:
        with server.client(server.admin_key) as api:
            wait_for_pool(home)  # its refills are not to run beside the cold figures
            for runtime in RUNTIMES:
                report[runtime] = per_runtime(api, home, runtime, n)
                if runtime == "gvisor":
                    # The driver's own steps of those resumes and forks (from its log).
                    report["gvisor"]["steps"] = steps_breakdown(server.stderr_lines)
                    report["gvisor_warm"] = warm_creates(api, home, n)
            floor = bare_runsc_runs(IMAGES, n)
            report["bare_runsc_run_true_ms"] = percentiles(floor)
            report["bare_runsc_floors"] = bare_runsc_floors(IMAGES, max(3, n // 2), platform_name)
            # The same with a Python process holding what the guest agent imports (a
            # checkpoint and restore grow with the memory and files a sandbox holds), with
            # and without a network; and one spawn inside gVisor, by how it is made.
            floors(report, n, platform_name)
            report["ratio_p50_gvisor_create_to_bare_runsc"] = round(
                report["gvisor"]["create_to_first_exec_ms"]["p50"] / statistics.median(floor), 2
            )
            report["ratio_p50_gvisor_warm_create_to_bare_runsc"] = round(
                report["gvisor_warm"]["create_to_first_exec_ms"]["p50"] / statistics.median(floor),
                2,
            )
            for runtime in RUNTIMES:
                report[runtime]["paused_memory"] = paused_memory(
                    api, home, runtime, idle, server.proc.pid
                )
            report["gvisor"]["pause_resume_by_memory_touched"] = memory_growth(api, home)
            report["gvisor"]["resume_paired"] = paired_resumes(api, max(6, n // 2), platform_name)
        report["against_goals"] = against_goals(report)
        report["machine"]["load_average_at_end"] = os.getloadavg()
    finally:
        server.stop()
        remove_instance(home)
        shutil.rmtree(home.parent, ignore_errors=True)
    text = json.dumps(report, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
