"""Snapshots of running runc sandboxes: the merged filesystem becomes a new image, the
sandbox keeps running (frozen only while its layer is copied)."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import AsyncIterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from hutch.core.ids import new_id
from hutch.host.addresses import LinkPool
from hutch.host.drivers.base import DriverError, RuntimeState, SandboxMissing, SandboxSpec
from hutch.host.drivers.runc import RuncDriver
from hutch.host.images import COMPLETE_MARKER, image_dir, image_rootfs
from hutch.host.proc import run
from tests.support.guest import sh

pytestmark = pytest.mark.anyio

_pools = itertools.count()


@pytest.fixture
def own_images(tmp_path: Path, images: Path) -> Path:
    """An images directory of the test's own, with the shared devbox:1 in it."""
    mine = tmp_path / "images"
    mine.mkdir()
    (mine / "devbox_1").symlink_to(images / "devbox_1")
    return mine


@pytest.fixture
async def runc(tmp_path: Path, own_images: Path) -> AsyncIterator[RuncDriver]:
    driver = RuncDriver(tmp_path / "home", images=own_images)
    await driver.prepare()
    yield driver
    await driver.cleanup(set())
    await driver.uninstall()


def spec_for(rootfs: str) -> SandboxSpec:
    sandbox_id = new_id("sb_")
    pool = LinkPool(IPv4Network(f"10.92.{next(_pools) % 200}.0/24"))
    return SandboxSpec(id=sandbox_id, hostname="snap-test", rootfs=rootfs, vcpu=1, mem_mib=256,
                       disk_mib=512, link=pool.allocate(sandbox_id))  # fmt: skip


def register(images: Path, name: str, build: Path) -> None:
    """Make a snapshot build an image the driver can start (what the template store does)."""
    (build / COMPLETE_MARKER).write_text(json.dumps({"name": name}))
    (image_dir(images, name) / "current").symlink_to(build.name)


CHANGES = """
set -e
echo written after boot > /root/new.txt
echo changed motd > /etc/motd
rm /etc/debian_version
rm -rf /usr/share/doc && mkdir /usr/share/doc && echo only-me > /usr/share/doc/only
ln -s /etc/hostname /root/link
echo s > /root/suid && chmod 4755 /root/suid
echo u > /root/owned && chown 1000:1000 /root/owned
mkdir -p /srv/tree/a/b && echo deep > /srv/tree/a/b/c
mv /srv/tree /srv/moved
"""


async def test_a_snapshot_holds_the_sandboxs_changes_and_the_source_keeps_running(
    runc: RuncDriver, own_images: Path
) -> None:
    source = spec_for("devbox:1")
    await runc.create(source)
    await sh(runc, source.id, CHANGES)
    await sh(runc, source.id, "setsid sh -c 'while :; do echo t >> /tmp/ticks; sleep 0.05; done' "
                              "</dev/null >/dev/null 2>&1 &")  # fmt: skip
    build = image_dir(own_images, "snap:1") / "v1"
    stats = await runc.snapshot(source.id, build)
    print(f"snapshot: frozen {stats.frozen_ms:.1f} ms, total {stats.total_ms:.0f} ms, "
          f"{stats.changed_paths} paths")  # fmt: skip

    # The source runs on, its background loop too, and can still change its files.
    assert (await runc.get(source.id)).state == RuntimeState.RUNNING  # type: ignore[union-attr]
    ticks = int(await sh(runc, source.id, "wc -l < /tmp/ticks"))
    await sh(runc, source.id, "sleep 0.3; echo later > /root/after.txt")
    assert int(await sh(runc, source.id, "wc -l < /tmp/ticks")) > ticks
    assert not list(runc._dir(source.id).glob("layer/.snapshot-*"))

    register(own_images, "snap:1", build)
    copy = spec_for("snap:1")
    await runc.create(copy)
    seen = await sh(
        runc,
        copy.id,
        "cat /root/new.txt /etc/motd /usr/share/doc/only /srv/moved/a/b/c; readlink /root/link; "
        "ls /usr/share/doc; test -e /etc/debian_version && echo debian_version-back; "
        "test -e /srv/tree && echo old-tree-back; test -e /root/after.txt && echo too-late; "
        "stat -c '%a %u:%g' /root/suid /root/owned; test -x /usr/bin/git && echo base-files",
    )
    assert seen.splitlines() == [
        "written after boot",
        "changed motd",
        "only-me",
        "deep",
        "/etc/hostname",
        "only",
        "4755 0:0",
        "644 1000:1000",
        "base-files",
    ]
    # The base image is untouched, and the snapshot shares its unchanged files.
    base = image_rootfs(own_images, "devbox:1")
    assert base is not None
    assert (base / "etc/debian_version").exists()
    assert (base / "etc/motd").read_text() != "changed motd\n"
    assert os.stat(base / "usr/bin/git").st_ino == os.stat(build / "rootfs/usr/bin/git").st_ino
    assert os.stat(base / "etc/motd").st_ino != os.stat(build / "rootfs/etc/motd").st_ino


async def test_a_paused_sandbox_is_snapshot_without_freezing_and_stays_paused(
    runc: RuncDriver, own_images: Path
) -> None:
    source = spec_for("devbox:1")
    await runc.create(source)
    await sh(runc, source.id, "echo paused-state > /root/p.txt")
    await runc.pause(source.id)
    build = image_dir(own_images, "snap:2") / "v1"
    stats = await runc.snapshot(source.id, build)
    assert stats.frozen_ms == 0
    assert (await runc.get(source.id)).state == RuntimeState.PAUSED  # type: ignore[union-attr]
    assert (build / "rootfs/root/p.txt").read_text() == "paused-state\n"


async def test_snapshot_of_a_missing_sandbox_or_into_an_existing_build_fails_cleanly(
    runc: RuncDriver, own_images: Path
) -> None:
    with pytest.raises(SandboxMissing):
        await runc.snapshot("sb_nope", own_images / "x" / "v1")
    source = spec_for("devbox:1")
    await runc.create(source)
    taken = own_images / "taken"
    taken.mkdir()
    with pytest.raises(DriverError, match="exists already"):
        await runc.snapshot(source.id, taken)
    assert (await runc.get(source.id)).state == RuntimeState.RUNNING  # type: ignore[union-attr]


async def test_a_layer_copy_left_by_a_crash_is_swept_at_the_next_start(
    runc: RuncDriver, tmp_path: Path, own_images: Path
) -> None:
    source = spec_for("devbox:1")
    await runc.create(source)
    await sh(runc, source.id, "echo x > /root/x")
    layer = runc._dir(source.id) / "layer"
    # What a server killed between the copy and its removal leaves: a read-only snapshot.
    await run("btrfs", "subvolume", "snapshot", "-r", str(layer), str(layer / ".snapshot-1-2"))
    assert (layer / ".snapshot-1-2" / "upper" / "root" / "x").exists()
    again = RuncDriver(tmp_path / "home", images=own_images)
    await again.prepare()
    assert not (layer / ".snapshot-1-2").exists()
    assert await sh(runc, source.id, "cat /root/x") == "x\n"
