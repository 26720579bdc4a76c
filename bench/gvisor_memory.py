"""The memory side of ``bench/gvisor.py``: host memory per paused sandbox (MemAvailable,
the kernel's own memory, hutch's RSS, the page cache of a sandbox's files, and what the
host still keeps: mounts, network namespaces, veths, cgroups) and gvisor pause/resume as
the memory a sandbox really uses grows; with the small API helpers both modules use.
Not run alone: ``bench/gvisor.py`` calls it.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from hutch.host.machine import read_memory

IMAGES = Path(os.environ.get("HUTCH_IMAGES_DIR", "/var/cache/hutch-test-images"))
SHAPE = "s-1vcpu-256mb"


def timed(call: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return (time.perf_counter() - started) * 1000, result


def ok(response: httpx.Response) -> dict[str, Any]:
    response.raise_for_status()
    data: dict[str, Any] = response.json()["data"]
    return data


def create(api: httpx.Client, runtime: str, shape: str = SHAPE) -> dict[str, Any]:
    return ok(api.post("/v1/sandboxes", json={"shape": shape, "disk_mib": 1024,
                                              "runtime": runtime}))  # fmt: skip


def run(api: httpx.Client, sandbox_id: str, cmd: str) -> dict[str, Any]:
    result: dict[str, Any] = ok(
        api.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": cmd, "timeout_secs": 120})
    )["result"]
    return result


def du_mib(path: Path) -> float:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0
    return round(total / 2**20, 2)


def meminfo_kib() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        if rest.split():
            fields[name] = int(rest.split()[0])
    return fields


KERNEL_FIELDS = ("SUnreclaim", "SReclaimable", "Percpu", "KernelStack", "PageTables", "Shmem")


def tree_rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` and its descendants (hutch serve, its host
    agent and what they keep running), in MiB; runsc's processes excluded."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(proc.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            if b"runsc" in Path(f"/proc/{current}/cmdline").read_bytes().split(b"\0")[0]:
                continue
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 2)


def kept_by(home: Path, made: list[str]) -> dict[str, int]:
    """What the host still holds for the sandboxes ``made``: mounts, network namespaces,
    veths (host ends), cgroups."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                           check=False).stdout  # fmt: skip
    netns = [n.name for n in Path("/run/netns").iterdir()] if Path("/run/netns").is_dir() else []
    cgroups = [c.name for c in Path("/sys/fs/cgroup").glob("hutch-*/*") if c.is_dir()]
    host_ifs = {host_interface(home, s) for s in made}
    return {
        "mounts": sum(1 for line in Path("/proc/mounts").read_text().splitlines()
                      if str(home) in line and any(s in line for s in made)),
        "netns": sum(1 for n in netns if any(n.endswith(s) for s in made)),
        "veths": sum(1 for line in links.splitlines()
                     if line.split(":")[1].strip().split("@")[0] in host_ifs),
        "cgroups": sum(1 for c in cgroups if c in made),
    }  # fmt: skip


def host_interface(home: Path, sandbox_id: str) -> str:
    from hutch.host.drivers.runc import instance_tag
    from hutch.host.link import host_interface as named

    return named(instance_tag(home), sandbox_id)


def runtime_rss_mib(home: Path, ids: list[str]) -> float:
    """Resident memory of the runsc processes (Sentry and gofer) of sandboxes ``ids``
    (not the warm pool's), in MiB."""
    total = 0
    marks = [f"sandboxes/{sandbox_id}".encode() for sandbox_id in ids]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if str(home / "runsc").encode() not in cmdline:
                continue
            if not any(mark in cmdline for mark in marks):
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 2)


def paused_memory(
    api: httpx.Client, home: Path, runtime: str, count: int, server_pid: int
) -> dict[str, Any]:
    """MemAvailable with ``count`` paused sandboxes against before they were made, and
    what is left: the kernel's own memory (slab, per-CPU, page tables, shmem), hutch's
    processes (RSS), and what the host still holds for them. A round of ``count`` made,
    paused and deleted comes first: hutch's processes grow by ~2 MiB per sandbox the
    first time they serve that many (heap arenas, caches), once, not per sandbox kept.
    ``held_per_paused_sandbox_kib`` adds up what each holds, object by object (hutch's
    RSS growth in the measured round, the page cache of its files), which the rest of a
    busy host does not move as it moves MemAvailable."""
    for sandbox_id in [create(api, runtime)["id"] for _ in range(count)]:
        ok(api.post(f"/v1/sandboxes/{sandbox_id}/pause"))
        api.delete(f"/v1/sandboxes/{sandbox_id}")
    time.sleep(2)
    before, kernel_before = read_memory().available_mib, meminfo_kib()
    rss_before = tree_rss_mib(server_pid)
    made = [create(api, runtime)["id"] for _ in range(count)]
    time.sleep(3)
    running, running_rss = read_memory().available_mib, runtime_rss_mib(home, made)
    for sandbox_id in made:
        ok(api.post(f"/v1/sandboxes/{sandbox_id}/pause"))
    # A hibernate's leftovers go in the background (the Sentry takes 1-2 s to exit, more
    # with many at once) and a namespace's memory is freed by the kernel a moment after it
    # is removed: wait until they are gone (or a minute), then a little more.
    deadline = time.monotonic() + 60
    while runtime == "gvisor" and time.monotonic() < deadline:
        left = kept_by(home, made)
        if left["netns"] == left["mounts"] == left["cgroups"] == 0:
            break
        time.sleep(0.5)
    time.sleep(3)
    paused, paused_rss = read_memory().available_mib, runtime_rss_mib(home, made)
    kernel_after, rss_after = meminfo_kib(), tree_rss_mib(server_pid)
    kept = kept_by(home, made)
    cached = page_cache_kib([home / d / s for d in ("sandboxes", "snapshots") for s in made])
    for sandbox_id in made:
        api.delete(f"/v1/sandboxes/{sandbox_id}")
    # The same readings once they are destroyed, a few seconds later: less drift from the
    # rest of the host than against the first ones (what destroy frees beyond a hibernate).
    time.sleep(4)
    destroyed, kernel_gone = read_memory().available_mib, meminfo_kib()
    rss_gone = tree_rss_mib(server_pid)
    left = {field: round((kernel_after.get(field, 0) - kernel_before.get(field, 0)) / count)
            for field in KERNEL_FIELDS}  # fmt: skip
    left["hutch_rss"] = round((rss_after - rss_before) * 1024 / count)
    against_destroyed = {
        field: round((kernel_after.get(field, 0) - kernel_gone.get(field, 0)) / count)
        for field in KERNEL_FIELDS
    }
    against_destroyed["hutch_rss"] = round((rss_after - rss_gone) * 1024 / count)
    against_destroyed["MemAvailable"] = round((destroyed - paused) * 1024 / count)
    return {
        "sandboxes": count,
        "host_mem_available_drop_running_mib_per_sandbox": round((before - running) / count, 2),
        "host_mem_available_drop_paused_mib_per_sandbox": round((before - paused) / count, 2),
        "runsc_rss_running_mib_per_sandbox": round(running_rss / count, 2),
        "runsc_rss_paused_mib_per_sandbox": round(paused_rss / count, 2),
        # What is left, per paused sandbox (KiB): kernel memory by kind, and hutch's RSS.
        "left_per_paused_sandbox_kib": left,
        # Paused against destroyed (KiB per sandbox; MemAvailable: how much less there was).
        "paused_minus_destroyed_kib": against_destroyed,
        "kept_while_paused": kept,
        "held_per_paused_sandbox_kib": {
            "hutch_rss": left["hutch_rss"],
            "page_cache_of_its_files": round(cached / count),
            "mounts_netns_veths_cgroups": sum(kept.values()),
        },
        "held_mib_per_paused_sandbox": round(
            (max(0, left["hutch_rss"]) + cached / count) / 1024, 3
        ),
    }


def page_cache_kib(directories: list[Path]) -> int:
    """How much of the files under ``directories`` is in the page cache (fincore)."""
    files = [str(f) for d in directories if d.is_dir() for f in d.rglob("*") if f.is_file()]
    if not files:
        return 0
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", *files],
                         capture_output=True, text=True, check=False).stdout  # fmt: skip
    return sum(int(v) for v in out.split() if v.isdigit()) // 1024


def memory_growth(api: httpx.Client, home: Path) -> list[dict[str, Any]]:
    rows = []
    for touched in (64, 256, 1024):
        box = create(api, "gvisor", shape="s-2vcpu-4gb")
        # Random bytes: memory that does not compress (gVisor's image is compressed).
        hold = (f"setsid python3 -c 'import os, time; n = {touched} * 2**20; b = bytearray(n)\n"
                "for i in range(0, n, 2**20): b[i:i + 2**20] = os.urandom(2**20)\n"
                "open(\"/tmp/held\", \"w\").close(); time.sleep(3600)' "
                ">/dev/null 2>&1 </dev/null &")  # fmt: skip
        sandbox_id = box["id"]
        run(api, sandbox_id, hold)
        for _ in range(600):
            if run(api, sandbox_id, "test -e /tmp/held")["exit_code"] == 0:
                break
            time.sleep(0.2)
        pause_ms, view = timed(lambda s=sandbox_id: ok(api.post(f"/v1/sandboxes/{s}/pause")))
        size = du_mib(home / "snapshots" / sandbox_id)
        time.sleep(3)
        resume_ms, _ = timed(lambda s=sandbox_id: ok(api.post(f"/v1/sandboxes/{s}/resume")))
        rows.append({"touched_mib": touched, "hibernated": view["hibernated"],
                     "pause_ms": round(pause_ms, 1), "resume_ms": round(resume_ms, 1),
                     "snapshot_mib": size})  # fmt: skip
        api.delete(f"/v1/sandboxes/{box['id']}")
    return rows
