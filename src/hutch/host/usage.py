"""What a sandbox uses right now, read from the kernel: its cgroup (CPU time, memory,
processes), its writable layer's filesystem (disk) and its link's host end (traffic).

Both cgroup layouts are read: v2 (one tree, Debian 12's default) and v1 (a tree per
controller). Memory is the working set, as ``docker stats`` and cAdvisor count it: what the
cgroup charges minus the file cache the kernel may drop at once (``inactive_file``).
Reading one sandbox is a handful of small file reads and one ``statvfs``: no process is run.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Usage", "UsageSources", "read_usage"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
_NO_LIMIT = 1 << 60  # cgroup v1 says "no limit" with a number near 2**63


@dataclass(frozen=True, kw_only=True)
class UsageSources:
    """Where one sandbox's usage is read from."""

    cgroup: str
    """The sandbox's cgroup path under each hierarchy, e.g. ``hutch-1a2b3c/sb_…``."""
    disk: Path | None
    """The mount point of its writable layer."""
    host_if: str | None
    """The host end of its link: what the host receives is what the sandbox sent."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Usage:
    cpu_usec: int
    mem_bytes: int
    mem_limit_bytes: int | None
    processes: int
    disk_used_bytes: int | None
    disk_size_bytes: int | None
    net_tx_bytes: int | None
    """Sent by the sandbox (received by the link's host end)."""
    net_rx_bytes: int | None


def _int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat(path: Path, key: str) -> int | None:
    try:
        with path.open() as lines:
            for line in lines:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        return None
    return None


def _cgroup(sources: UsageSources, root: Path) -> tuple[int, int, int | None, int] | None:
    """(cpu µs, working-set bytes, limit bytes or None, processes); None when it is gone."""
    if (root / "cgroup.controllers").exists():  # v2
        directory = root / sources.cgroup
        cpu = _stat(directory / "cpu.stat", "usage_usec")
        charged = _int(directory / "memory.current")
        if cpu is None or charged is None:
            return None
        inactive = _stat(directory / "memory.stat", "inactive_file") or 0
        limit = _int(directory / "memory.max")
        processes = _int(directory / "pids.current") or 0
        return cpu, max(charged - inactive, 0), limit, processes
    nanoseconds = _int(root / "cpuacct" / sources.cgroup / "cpuacct.usage")
    memory = root / "memory" / sources.cgroup
    charged = _int(memory / "memory.usage_in_bytes")
    if nanoseconds is None or charged is None:
        return None
    inactive = _stat(memory / "memory.stat", "total_inactive_file") or 0
    limit = _int(memory / "memory.limit_in_bytes")
    processes = _int(root / "pids" / sources.cgroup / "pids.current") or 0
    limit = None if limit is None or limit >= _NO_LIMIT else limit
    return nanoseconds // 1000, max(charged - inactive, 0), limit, processes


def read_usage(sources: UsageSources, *, cgroup_root: Path = CGROUP_ROOT) -> Usage | None:
    """The sandbox's usage now; None when its cgroup is gone (stopped, hibernated)."""
    found = _cgroup(sources, cgroup_root)
    if found is None:
        return None
    cpu, memory, limit, processes = found
    used = size = None
    if sources.disk is not None:
        with contextlib.suppress(OSError):
            disk = os.statvfs(sources.disk)
            size = disk.f_blocks * disk.f_frsize
            used = (disk.f_blocks - disk.f_bfree) * disk.f_frsize
    sent = received = None
    if sources.host_if is not None:
        counters = Path("/sys/class/net") / sources.host_if / "statistics"
        sent, received = _int(counters / "rx_bytes"), _int(counters / "tx_bytes")
    return Usage(
        cpu_usec=cpu,
        mem_bytes=memory,
        mem_limit_bytes=limit,
        processes=processes,
        disk_used_bytes=used,
        disk_size_bytes=size,
        net_tx_bytes=sent,
        net_rx_bytes=received,
    )
