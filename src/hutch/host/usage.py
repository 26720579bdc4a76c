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

__all__ = ["Usage", "UsageSources", "link_counters", "read_many", "read_usage"]

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


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 65536)
    except OSError:
        return None
    finally:
        os.close(fd)


def _int(path: str) -> int | None:
    raw = _read(path)
    if raw is None:
        return None
    raw = raw.strip()
    if raw == b"max":
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def _field(path: str, key: bytes) -> int | None:
    """``key``'s value in a flat-keyed file (``cpu.stat``, ``memory.stat``)."""
    raw = _read(path)
    if raw is None:
        return None
    if raw.startswith(key + b" "):
        at = 0
    else:
        at = raw.find(b"\n" + key + b" ")
        if at == -1:
            return None
        at += 1
    end = raw.find(b"\n", at)
    try:
        return int(raw[at + len(key) + 1 : end if end != -1 else None])
    except ValueError:
        return None


def _cgroup(cgroup: str, root: str, v2: bool) -> tuple[int, int, int | None, int] | None:
    """(cpu µs, working-set bytes, limit bytes or None, processes); None when it is gone."""
    if v2:
        directory = f"{root}/{cgroup}"
        cpu = _field(f"{directory}/cpu.stat", b"usage_usec")
        charged = _int(f"{directory}/memory.current")
        if cpu is None or charged is None:
            return None
        inactive = _field(f"{directory}/memory.stat", b"inactive_file") or 0
        limit = _int(f"{directory}/memory.max")
        processes = _int(f"{directory}/pids.current") or 0
        return cpu, max(charged - inactive, 0), limit, processes
    nanoseconds = _int(f"{root}/cpuacct/{cgroup}/cpuacct.usage")
    memory = f"{root}/memory/{cgroup}"
    charged = _int(f"{memory}/memory.usage_in_bytes")
    if nanoseconds is None or charged is None:
        return None
    inactive = _field(f"{memory}/memory.stat", b"total_inactive_file") or 0
    limit = _int(f"{memory}/memory.limit_in_bytes")
    processes = _int(f"{root}/pids/{cgroup}/pids.current") or 0
    limit = None if limit is None or limit >= _NO_LIMIT else limit
    return nanoseconds // 1000, max(charged - inactive, 0), limit, processes


def link_counters(proc_net_dev: str = "/proc/net/dev") -> dict[str, tuple[int, int]]:
    """``{interface: (received, sent)}`` for every interface of this network namespace, from
    one read (cheaper than two files per link)."""
    counters: dict[str, tuple[int, int]] = {}
    try:
        with open(proc_net_dev, "rb") as handle:
            lines = handle.read().splitlines()[2:]
    except OSError:
        return counters
    for line in lines:
        name, _, rest = line.partition(b":")
        fields = rest.split()
        if len(fields) >= 9:
            counters[name.strip().decode()] = (int(fields[0]), int(fields[8]))
    return counters


def read_usage(
    sources: UsageSources,
    *,
    cgroup_root: Path = CGROUP_ROOT,
    links: dict[str, tuple[int, int]] | None = None,
) -> Usage | None:
    """The sandbox's usage now; None when its cgroup is gone (stopped, hibernated).
    ``links`` is :func:`link_counters`, read once for many sandboxes."""
    return read_many([sources], cgroup_root=cgroup_root, links=links)[0]


def read_many(
    many: list[UsageSources],
    *,
    cgroup_root: Path = CGROUP_ROOT,
    links: dict[str, tuple[int, int]] | None = None,
) -> list[Usage | None]:
    """:func:`read_usage` of each, sharing one read of the links' counters."""
    root = str(cgroup_root)
    v2 = os.path.exists(f"{root}/cgroup.controllers")
    if links is None and any(sources.host_if for sources in many):
        links = link_counters()
    out: list[Usage | None] = []
    for sources in many:
        found = _cgroup(sources.cgroup, root, v2)
        if found is None:
            out.append(None)
            continue
        cpu, memory, limit, processes = found
        used = size = None
        if sources.disk is not None:
            with contextlib.suppress(OSError):
                disk = os.statvfs(sources.disk)
                size = disk.f_blocks * disk.f_frsize
                used = (disk.f_blocks - disk.f_bfree) * disk.f_frsize
        sent = received = None
        if sources.host_if is not None and links is not None and sources.host_if in links:
            # What the link's host end received, the sandbox sent.
            sent, received = links[sources.host_if]
        out.append(
            Usage(
                cpu_usec=cpu,
                mem_bytes=memory,
                mem_limit_bytes=limit,
                processes=processes,
                disk_used_bytes=used,
                disk_size_bytes=size,
                net_tx_bytes=sent,
                net_rx_bytes=received,
            )
        )
    return out
