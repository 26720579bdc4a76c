"""The driver contract (hutch.host.drivers.base), checked against every driver."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
from collections.abc import AsyncIterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from hutch.core.ids import new_id
from hutch.host.addresses import LinkPool
from hutch.host.drivers.base import Driver, DriverError, RuntimeState, SandboxMissing, SandboxSpec
from hutch.host.drivers.fake import FakeDriver
from hutch.host.drivers.gvisor import GvisorDriver
from hutch.host.drivers.runc import RuncDriver
from hutch.host.guest import ExecExit, ExecOutput, ExecRequest

pytestmark = pytest.mark.anyio

_pools = itertools.count()


@pytest.fixture(params=["fake", "runc", "gvisor"])
async def driver(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Driver]:
    if request.param == "fake":
        fake = FakeDriver(tmp_path / "fake")
        yield fake
        await fake.cleanup(set())
        return
    images: Path = request.getfixturevalue("images")
    runc = (
        GvisorDriver(tmp_path / "home", images=images)
        if request.param == "gvisor"
        else RuncDriver(tmp_path / "home", images=images)
    )
    await runc.prepare()
    yield runc
    await runc.cleanup(set())
    await runc.uninstall()


def same_driver(driver: Driver) -> Driver:
    """A new instance of the driver on the same home (as after a restart)."""
    if isinstance(driver, GvisorDriver):
        return GvisorDriver(driver.home, images=driver.images)
    if isinstance(driver, RuncDriver):
        return RuncDriver(driver.home, images=driver.images)
    assert isinstance(driver, FakeDriver)
    return FakeDriver(driver.state_dir)


@pytest.fixture
def pool() -> LinkPool:
    return LinkPool(IPv4Network(f"10.90.{next(_pools) % 200}.0/24"))


def spec_for(pool: LinkPool, **overrides: object) -> SandboxSpec:
    sandbox_id = new_id("sb_")
    values: dict[str, object] = {
        "id": sandbox_id,
        "hostname": "brave-otter",
        "rootfs": "devbox:1",
        "vcpu": 1,
        "mem_mib": 256,
        "disk_mib": 512,
        "link": pool.allocate(sandbox_id),
        "env": {"GREETING": "hi"},
    }
    values.update(overrides)
    return SandboxSpec(**values)  # type: ignore[arg-type]


async def output_of(driver: Driver, sandbox_id: str, script: str) -> str:
    out = bytearray()
    async for event in driver.guest(sandbox_id).exec(ExecRequest(argv=["/bin/sh", "-c", script])):
        if isinstance(event, ExecOutput):
            out.extend(event.data)
        else:
            assert isinstance(event, ExecExit) and event.exit_code == 0, event
    return out.decode()


async def test_create_returns_a_running_sandbox_whose_agent_answers(
    driver: Driver, pool: LinkPool
) -> None:
    spec = spec_for(pool)
    info = await driver.create(spec)
    assert info.state == RuntimeState.RUNNING
    assert (await driver.guest(spec.id).ping())["ok"]
    assert await output_of(driver, spec.id, 'echo "$GREETING"') == "hi\n"
    listed = await driver.list_sandboxes()
    assert [i.id for i in listed] == [spec.id]
    got = await driver.get(spec.id)
    assert got is not None and got.state == RuntimeState.RUNNING


async def test_destroy_removes_it_and_is_idempotent(driver: Driver, pool: LinkPool) -> None:
    spec = spec_for(pool)
    await driver.create(spec)
    await driver.destroy(spec.id)
    assert await driver.get(spec.id) is None
    assert await driver.list_sandboxes() == []
    await driver.destroy(spec.id)
    await driver.destroy("sb_never_existed")


async def test_pause_and_resume_are_idempotent(driver: Driver, pool: LinkPool) -> None:
    spec = spec_for(pool)
    await driver.create(spec)
    await driver.pause(spec.id)
    await driver.pause(spec.id)
    paused = await driver.get(spec.id)
    assert paused is not None and paused.state == RuntimeState.PAUSED
    await driver.resume(spec.id)
    await driver.resume(spec.id)
    resumed = await driver.get(spec.id)
    assert resumed is not None and resumed.state == RuntimeState.RUNNING
    assert await output_of(driver, spec.id, "echo back") == "back\n"


async def test_rename_changes_the_hostname_running_or_paused(
    driver: Driver, pool: LinkPool
) -> None:
    spec = spec_for(pool)
    await driver.create(spec)
    host_name = socket.gethostname()

    async def etc_hostname() -> bytes:
        download = await driver.guest(spec.id).read_file("/etc/hostname")
        return b"".join([chunk async for chunk in download.chunks])

    assert await etc_hostname() == b"brave-otter\n"
    await driver.rename(spec.id, "calm-heron")
    assert await etc_hostname() == b"calm-heron\n"
    await driver.pause(spec.id)
    await driver.rename(spec.id, "quiet-lynx")
    await driver.resume(spec.id)
    assert await etc_hostname() == b"quiet-lynx\n"
    if driver.capabilities.isolated:
        assert await output_of(driver, spec.id, "hostname; cat /proc/sys/kernel/hostname") == (
            "quiet-lynx\nquiet-lynx\n"
        )
        hosts = await output_of(driver, spec.id, "cat /etc/hosts")
        assert f"{spec.link.sandbox}\tquiet-lynx" in hosts and "brave-otter" not in hosts
    assert socket.gethostname() == host_name
    with pytest.raises(SandboxMissing):
        await driver.rename("sb_missing", "x")


async def test_pause_of_a_missing_sandbox_raises(driver: Driver) -> None:
    with pytest.raises(SandboxMissing):
        await driver.pause("sb_missing")
    with pytest.raises(SandboxMissing):
        await driver.resume("sb_missing")


async def test_a_failed_create_leaves_nothing(driver: Driver, pool: LinkPool) -> None:
    spec = spec_for(pool, rootfs="no-such-image")
    if isinstance(driver, FakeDriver):
        driver.fail_next_create = "injected failure"
        spec = spec_for(pool)
    with pytest.raises(DriverError):
        await driver.create(spec)
    assert await driver.list_sandboxes() == []
    assert await driver.get(spec.id) is None
    if isinstance(driver, RuncDriver):
        assert all(not v for v in (await driver.leftovers()).values())


async def test_creating_the_same_id_twice_fails_and_keeps_the_first(
    driver: Driver, pool: LinkPool
) -> None:
    spec = spec_for(pool)
    await driver.create(spec)
    with pytest.raises(DriverError):
        await driver.create(spec)
    assert await output_of(driver, spec.id, "echo still") == "still\n"


async def test_a_new_instance_sees_the_same_sandboxes_and_cleanup_keeps_only_known(
    driver: Driver, pool: LinkPool
) -> None:
    kept, dropped = spec_for(pool), spec_for(pool, hostname="calm-heron")
    await asyncio.gather(driver.create(kept), driver.create(dropped))
    again = same_driver(driver)
    if isinstance(again, GvisorDriver):
        await again.prepare()
    assert sorted(i.id for i in await again.list_sandboxes()) == sorted([kept.id, dropped.id])
    removed = await again.cleanup({kept.id})
    assert dropped.id in removed
    assert [i.id for i in await again.list_sandboxes()] == [kept.id]
    assert await output_of(again, kept.id, "echo alive") == "alive\n"


async def test_restart_starts_a_dead_sandbox_again_from_its_disk(
    driver: Driver, pool: LinkPool
) -> None:
    spec = spec_for(pool)
    first = await driver.create(spec)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"written before the crash\n"

    await driver.guest(spec.id).write_file("/kept.txt", chunks())
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    for _ in range(500):
        info = await driver.get(spec.id)
        if info is not None and info.state == RuntimeState.STOPPED:
            break
        await asyncio.sleep(0.01)
    assert info is not None and info.state == RuntimeState.STOPPED
    again = await driver.restart(spec)
    assert again.state == RuntimeState.RUNNING and again.pid != first.pid
    download = await driver.guest(spec.id).read_file("/kept.txt")
    assert b"".join([c async for c in download.chunks]) == b"written before the crash\n"
    assert await output_of(driver, spec.id, 'echo "$GREETING"') == "hi\n"
    await driver.restart(spec)  # a running one is started again too: one init, agent up
    assert (await driver.guest(spec.id).ping())["ok"]
    assert [i.id for i in await driver.list_sandboxes()] == [spec.id]
    await driver.destroy(spec.id)
    with pytest.raises(SandboxMissing):
        await driver.restart(spec)


async def test_resize_disk_grows_it_online_running_or_paused_and_only_grows(
    driver: Driver, pool: LinkPool
) -> None:
    spec = spec_for(pool, disk_mib=300)
    started = await driver.create(spec)
    await output_of(driver, spec.id, "echo kept > /tmp/before-resize")
    assert await driver.disk_mib(spec.id) == 300

    await driver.resize_disk(spec.id, 400)
    assert await driver.disk_mib(spec.id) == 400
    for smaller_or_same in (400, 399, 1):
        with pytest.raises(DriverError):
            await driver.resize_disk(spec.id, smaller_or_same)
        assert await driver.disk_mib(spec.id) == 400

    await driver.pause(spec.id)
    await driver.resize_disk(spec.id, 512)
    await driver.resume(spec.id)
    assert await driver.disk_mib(spec.id) == 512
    assert await output_of(driver, spec.id, "cat /tmp/before-resize") == "kept\n"
    now = await driver.get(spec.id)
    assert now is not None and now.pid == started.pid  # not restarted
    if driver.capabilities.disk_limit:
        # The sandbox itself sees the new size at once.
        size = await output_of(driver, spec.id, "df -m --output=size / | tail -1")
        assert 480 <= int(size) <= 512, size

    with pytest.raises(SandboxMissing):
        await driver.resize_disk("sb_missing", 1024)
    with pytest.raises(SandboxMissing):
        await driver.disk_mib("sb_missing")
