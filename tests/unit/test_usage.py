"""Reading a sandbox's usage from both cgroup layouts, and the metrics ring."""

from __future__ import annotations

from pathlib import Path

from hutch.core.metrics import Sample, _Ring
from hutch.host.usage import UsageSources, read_usage

SOURCES = UsageSources(cgroup="hutch-abc/sb_1", disk=None, host_if=None)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_working_set_limit_and_processes(tmp_path: Path) -> None:
    write(tmp_path / "cgroup.controllers", "cpu memory pids\n")
    group = tmp_path / "hutch-abc" / "sb_1"
    write(group / "cpu.stat", "usage_usec 1234567\nuser_usec 1000000\n")
    write(group / "memory.current", "300000000\n")
    write(group / "memory.stat", "anon 200000000\ninactive_file 50000000\nactive_file 1\n")
    write(group / "memory.max", "268435456\n")
    write(group / "pids.current", "7\n")
    usage = read_usage(SOURCES, cgroup_root=tmp_path)
    assert usage is not None
    assert (usage.cpu_usec, usage.mem_bytes, usage.mem_limit_bytes, usage.processes) == (
        1234567, 250000000, 268435456, 7,
    )  # fmt: skip
    write(group / "memory.max", "max\n")
    unlimited = read_usage(SOURCES, cgroup_root=tmp_path)
    assert unlimited is not None and unlimited.mem_limit_bytes is None


def test_cgroup_v1_reads_each_controller(tmp_path: Path) -> None:
    write(tmp_path / "cpuacct" / "hutch-abc" / "sb_1" / "cpuacct.usage", "5000000000\n")
    memory = tmp_path / "memory" / "hutch-abc" / "sb_1"
    write(memory / "memory.usage_in_bytes", "100000000\n")
    write(memory / "memory.stat", "cache 5\ntotal_inactive_file 30000000\n")
    write(memory / "memory.limit_in_bytes", "9223372036854771712\n")
    write(tmp_path / "pids" / "hutch-abc" / "sb_1" / "pids.current", "3\n")
    usage = read_usage(SOURCES, cgroup_root=tmp_path)
    assert usage is not None
    assert (usage.cpu_usec, usage.mem_bytes, usage.mem_limit_bytes, usage.processes) == (
        5000000, 70000000, None, 3,
    )  # fmt: skip


def test_a_sandbox_without_a_cgroup_has_no_usage(tmp_path: Path) -> None:
    write(tmp_path / "cgroup.controllers", "cpu\n")
    assert read_usage(SOURCES, cgroup_root=tmp_path) is None
    assert read_usage(SOURCES, cgroup_root=tmp_path / "v1-nothing") is None


def sample(at: float, disk: int | None = None) -> Sample:
    return Sample(timestamp=at, cpu_used_pct=12.5, cpu_count=2, mem_used_bytes=1 << 33,
                  mem_total_bytes=None, processes=4, disk_used_bytes=disk,
                  disk_total_bytes=10, net_tx_bytes=1 << 40, net_rx_bytes=0)  # fmt: skip


def test_the_ring_keeps_the_last_samples_in_order_and_round_trips_them() -> None:
    ring = _Ring(3)
    assert ring.last() is None and list(ring) == []
    for at in range(1, 6):
        ring.add(sample(float(at), disk=at))
    assert [s.timestamp for s in ring] == [3.0, 4.0, 5.0]
    last = ring.last()
    assert last == sample(5.0, disk=5)
    assert sample(1.0).mem_total_bytes is None and _Ring(1).last() is None
