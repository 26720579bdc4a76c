"""What the gvisor driver adds to the contract: hibernate, wake and fork, on real runsc."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
from collections.abc import AsyncIterator
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest

from hutch.core.ids import new_id
from hutch.host.addresses import LinkPool
from hutch.host.drivers import gvisor_base
from hutch.host.drivers.base import DriverError, RuntimeState, SandboxSpec
from hutch.host.drivers.gvisor import CannotHibernate, GvisorDriver
from hutch.host.drivers.gvisor_host import CPU_ANNOTATION
from hutch.host.drivers.runc import RuncDriver
from hutch.host.guest import ExecExit, ExecOutput, ExecRequest

pytestmark = pytest.mark.anyio

_pools = itertools.count()
# Written to a temporary file and renamed, so a reader never sees it half-written.
COUNTER = (
    "i=0; while true; do i=$((i+1)); echo $i > /workspace/.count; "
    "mv /workspace/.count /workspace/count; sleep 0.05; done"
)


@pytest.fixture
async def gvisor(tmp_path: Path, images: Path) -> AsyncIterator[GvisorDriver]:
    driver = GvisorDriver(tmp_path / "home", images=images)
    await driver.prepare()
    yield driver
    await driver.cleanup(set())
    await RuncDriver(tmp_path / "home", images=images).cleanup(set())


@pytest.fixture
def pool() -> LinkPool:
    return LinkPool(IPv4Network(f"10.108.{next(_pools) % 200}.0/24"))  # no e2e test's


def spec_for(pool: LinkPool, **overrides: object) -> SandboxSpec:
    sandbox_id = new_id("sb_")
    values: dict[str, object] = {
        "id": sandbox_id, "hostname": "brave-otter", "rootfs": "devbox:1", "vcpu": 1,
        "mem_mib": 256, "disk_mib": 512, "link": pool.allocate(sandbox_id), "runtime": "gvisor",
    }  # fmt: skip
    values.update(overrides)
    return SandboxSpec(**values)  # type: ignore[arg-type]


async def sh(driver: GvisorDriver, sandbox_id: str, script: str) -> str:
    out = bytearray()
    async for event in driver.guest(sandbox_id).exec(ExecRequest(argv=["/bin/sh", "-c", script])):
        if isinstance(event, ExecOutput):
            out.extend(event.data)
        else:
            assert isinstance(event, ExecExit) and event.exit_code == 0, (event, out)
    return out.decode()


def cpu_quota(driver: GvisorDriver, sandbox_id: str) -> tuple[int, int]:
    """The (quota, period) on the sandbox's cgroup, in µs (-1: none)."""
    root, parent = Path("/sys/fs/cgroup"), driver.cgroup_parent.strip("/")
    if (root / "cgroup.controllers").exists():
        quota, period = (root / parent / sandbox_id / "cpu.max").read_text().split()
        return (-1 if quota == "max" else int(quota)), int(period)
    cgroup = root / "cpu" / parent / sandbox_id
    return (int((cgroup / "cpu.cfs_quota_us").read_text()),
            int((cgroup / "cpu.cfs_period_us").read_text()))  # fmt: skip


async def count(driver: GvisorDriver, sandbox_id: str) -> int:
    return int((await sh(driver, sandbox_id, "cat /workspace/count")).strip())


async def start_counter(driver: GvisorDriver, sandbox_id: str) -> int:
    pid = await driver.guest(sandbox_id).spawn(
        ExecRequest(argv=["/bin/sh", "-c", COUNTER]), log="/tmp/counter.log"
    )
    for _ in range(200):
        if "count" in await sh(driver, sandbox_id, "ls /workspace"):
            break
        await asyncio.sleep(0.05)
    return pid


async def test_hibernate_stops_it_and_wake_continues_the_same_processes(
    gvisor: GvisorDriver, pool: LinkPool, tmp_path: Path
) -> None:
    spec = spec_for(pool)
    await gvisor.create(spec)
    # The shape's CPU quota is the sandbox's (hutch sets it once runsc has started it).
    assert cpu_quota(gvisor, spec.id) == (100_000, 100_000)
    pid = await start_counter(gvisor, spec.id)
    await sh(gvisor, spec.id, "echo kept > /workspace/file; echo mem > /tmp/in-memory")
    snapshot = tmp_path / "snap"
    await gvisor.hibernate(spec.id, snapshot)
    assert (snapshot / "checkpoint.img").stat().st_size > 0
    assert not snapshot.with_name("snap.partial").exists()
    info = await gvisor.get(spec.id)
    assert info is None or info.state == RuntimeState.STOPPED  # no runsc process left
    stopped_at = int((gvisor._dir(spec.id) / "rootfs" / "workspace" / "count").read_text())
    await asyncio.sleep(0.5)
    assert int((gvisor._dir(spec.id) / "rootfs" / "workspace" / "count").read_text()) == stopped_at

    woke = await gvisor.wake(spec, snapshot)
    assert woke.state == RuntimeState.RUNNING
    assert cpu_quota(gvisor, spec.id) == (100_000, 100_000)  # again, after the restore
    assert await sh(gvisor, spec.id, "cat /workspace/file /tmp/in-memory") == "kept\nmem\n"
    assert "while true" in await sh(gvisor, spec.id, f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    first = await count(gvisor, spec.id)
    await asyncio.sleep(0.3)
    assert await count(gvisor, spec.id) > first >= stopped_at


def cached_bytes(path: Path) -> int:
    """How much of ``path`` is in the host's page cache (util-linux's fincore)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return int(out.split()[0])


async def test_a_hibernated_sandbox_leaves_none_of_its_files_in_the_host_memory(
    gvisor: GvisorDriver, pool: LinkPool, tmp_path: Path
) -> None:
    spec = spec_for(pool)
    await gvisor.create(spec)
    await sh(gvisor, spec.id, "head -c 3000000 /dev/urandom > /workspace/data; sync")
    snapshot = tmp_path / "snap"
    await gvisor.hibernate(spec.id, snapshot)
    await gvisor._settled(spec.id)  # (what a checkpoint leaves goes in the background)
    disk = gvisor._dir(spec.id) / "disk.img"
    assert (snapshot / "checkpoint.img").stat().st_size > 0
    assert cached_bytes(disk) == cached_bytes(snapshot / "checkpoint.img") == 0
    await gvisor.wake(spec, snapshot)  # read back from the disk
    assert (await sh(gvisor, spec.id, "wc -c < /workspace/data")).strip() == "3000000"


async def test_twenty_hibernate_cycles_lose_nothing(
    gvisor: GvisorDriver, pool: LinkPool, tmp_path: Path
) -> None:
    spec = spec_for(pool)
    await gvisor.create(spec)
    await start_counter(gvisor, spec.id)
    last = 0
    for cycle in range(20):
        await sh(gvisor, spec.id, f"echo {cycle} >> /workspace/cycles")
        snapshot = tmp_path / f"snap-{cycle}"
        await gvisor.hibernate(spec.id, snapshot)
        await gvisor.wake(spec, snapshot)
        now = await count(gvisor, spec.id)
        assert now >= last
        last = now
    lines = (await sh(gvisor, spec.id, "cat /workspace/cycles")).split()
    assert lines == [str(i) for i in range(20)]


async def test_open_tcp_connection_refuses_hibernate_and_keeps_it_running(
    gvisor: GvisorDriver, pool: LinkPool, tmp_path: Path
) -> None:
    spec = spec_for(pool)
    await gvisor.create(spec)
    holder = (
        "import socket,time\ns=socket.socket();s.bind(('127.0.0.1',7001));s.listen()\n"
        "c=socket.create_connection(('127.0.0.1',7001))\na,_=s.accept()\ntime.sleep(600)"
    )
    await gvisor.guest(spec.id).spawn(
        ExecRequest(argv=["/usr/bin/python3", "-c", holder]), log="/tmp/holder.log"
    )
    # The connection (to port 7001, established), not the listener's line alone, which
    # comes first: hibernating between the two would not be refused.
    for _ in range(100):
        if " 0100007F:1B59 01 " in await sh(gvisor, spec.id, "cat /proc/net/tcp"):
            break
        await asyncio.sleep(0.05)
    with pytest.raises(CannotHibernate, match="open TCP connection"):
        await gvisor.hibernate(spec.id, tmp_path / "snap")
    assert not (tmp_path / "snap").exists()
    assert await sh(gvisor, spec.id, "echo still") == "still\n"


async def test_fork_continues_the_processes_in_a_copy_with_its_own_address(
    gvisor: GvisorDriver, pool: LinkPool, tmp_path: Path
) -> None:
    source = spec_for(pool)
    await gvisor.create(source)
    await start_counter(gvisor, source.id)
    await sh(gvisor, source.id, "echo before > /workspace/shared")
    snapshot = tmp_path / "snap"
    await gvisor.hibernate(source.id, snapshot)
    children = [spec_for(pool, hostname=f"child-{i}") for i in range(2)]
    await asyncio.gather(*(gvisor.fork(source.id, child, snapshot) for child in children))
    for i, child in enumerate(children):
        assert cpu_quota(gvisor, child.id) == (100_000, 100_000)
        assert await sh(gvisor, child.id, "cat /workspace/shared") == "before\n"
        await sh(gvisor, child.id, f"echo {i} > /workspace/mine")
        assert (await sh(gvisor, child.id, "hostname")).strip() == f"child-{i}"
    assert await sh(gvisor, children[0].id, "cat /workspace/mine") == "0\n"
    assert await sh(gvisor, children[1].id, "cat /workspace/mine") == "1\n"
    first = [await count(gvisor, c.id) for c in children]
    await asyncio.sleep(0.3)
    later = [await count(gvisor, c.id) for c in children]
    assert all(after > before for after, before in zip(later, first, strict=True))
    # The source is untouched: still hibernated, and wakes with its own files.
    await gvisor.wake(source, snapshot)
    assert "mine" not in await sh(gvisor, source.id, "ls /workspace")


async def test_fork_without_snapshot_is_a_fresh_start_on_a_copy_of_the_files(
    gvisor: GvisorDriver, pool: LinkPool
) -> None:
    source = spec_for(pool)
    await gvisor.create(source)
    await sh(gvisor, source.id, "echo copied > /workspace/f")
    await gvisor.pause(source.id)
    child = spec_for(pool, hostname="fresh")
    await gvisor.fork(source.id, child)
    assert await sh(gvisor, child.id, "cat /workspace/f") == "copied\n"
    with pytest.raises(DriverError):
        await gvisor.fork("sb_missing", spec_for(pool))


# -- a CPU quota the kernel refuses (review2 1.5) ------------------------------------------
# 500 µs per 100 ms: below the kernel's least quota (1 ms), so the write of the sandbox's
# cpu.max (cgroup v2) or cpu.cfs_quota_us (v1) fails with EINVAL, as any failed write would.
REFUSED_QUOTA = "500 100000"


def refuse_quota_in(directory: Path) -> None:
    """Make the bundle at ``directory`` hold a CPU quota the kernel refuses."""
    config = json.loads((directory / "config.json").read_text())
    config["annotations"][CPU_ANNOTATION] = REFUSED_QUOTA
    (directory / "config.json").write_text(json.dumps(config))


def refuse_quotas(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every bundle made from now on holds a quota the kernel refuses."""
    real = gvisor_base._hold_cpu_quota

    def hold(config: dict[str, Any]) -> bool:
        changed = real(config)
        config["annotations"][CPU_ANNOTATION] = REFUSED_QUOTA
        return changed

    monkeypatch.setattr(gvisor_base, "_hold_cpu_quota", hold)


@pytest.fixture
def refused_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    refuse_quotas(monkeypatch)


def runsc_processes(sandbox_id: str) -> list[int]:
    """Host processes whose command line names the sandbox (runsc's own: sandbox, gofer)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if sandbox_id.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


async def test_a_create_whose_cpu_quota_cannot_be_set_fails_and_leaves_nothing_running(
    gvisor: GvisorDriver, pool: LinkPool, refused_quota: None
) -> None:
    spec = spec_for(pool)
    with pytest.raises(DriverError, match="CPU quota could not be set"):
        await gvisor.create(spec)
    assert await gvisor.get(spec.id) is None
    assert runsc_processes(spec.id) == []
    assert not gvisor._dir(spec.id).exists()


async def test_a_wake_whose_cpu_quota_cannot_be_set_fails_and_a_later_wake_continues(
    gvisor: GvisorDriver, pool: LinkPool, tmp_path: Path
) -> None:
    spec = spec_for(pool)
    await gvisor.create(spec)
    await start_counter(gvisor, spec.id)
    snapshot = tmp_path / "snap"
    await gvisor.hibernate(spec.id, snapshot)
    stopped_at = int((gvisor._dir(spec.id) / "rootfs" / "workspace" / "count").read_text())
    kept = (gvisor._dir(spec.id) / "config.json").read_text()
    refuse_quota_in(gvisor._dir(spec.id))
    with pytest.raises(DriverError, match="CPU quota could not be set"):
        await gvisor.wake(spec, snapshot)
    # Not running without its limit: stopped again, its snapshot kept.
    info = await gvisor.get(spec.id)
    assert info is None or info.state == RuntimeState.STOPPED
    assert runsc_processes(spec.id) == []
    assert (snapshot / "checkpoint.img").exists()
    (gvisor._dir(spec.id) / "config.json").write_text(kept)
    await gvisor.wake(spec, snapshot)
    assert cpu_quota(gvisor, spec.id) == (100_000, 100_000)
    first = await count(gvisor, spec.id)
    await asyncio.sleep(0.3)
    assert await count(gvisor, spec.id) > first >= stopped_at


async def test_a_fork_whose_cpu_quota_cannot_be_set_fails_and_leaves_no_child(
    gvisor: GvisorDriver, pool: LinkPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = spec_for(pool)
    await gvisor.create(source)
    snapshot = tmp_path / "snap"
    await gvisor.hibernate(source.id, snapshot)
    refuse_quotas(monkeypatch)  # (the bundles made from here on: the child's)
    child = spec_for(pool, hostname="child")
    with pytest.raises(DriverError, match="CPU quota could not be set"):
        await gvisor.fork(source.id, child, snapshot)
    assert await gvisor.get(child.id) is None
    assert runsc_processes(child.id) == []
    assert not gvisor._dir(child.id).exists()
