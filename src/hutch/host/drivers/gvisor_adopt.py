"""A hibernated gVisor sandbox taken in from another host (a cluster's drain,
:mod:`hutch.cluster.drain`; the service's side is :mod:`hutch.core.sandbox_move`).

Only its data comes from elsewhere: its disk file (``disk.img``, the draining host's
copy, checked against the digest that host sent) and, at its first wake, its memory
snapshot from the snapshot store. Everything this host runs it with is made here, from
the store's record, as a create or a fork makes it: the OCI bundle (``config.json``: its
mounts, hooks, capabilities and namespaces are this host's own, never a file that came
from the bucket), its ``/etc`` names for its new address, its recorded addresses, and
the marker that says which driver runs it. The disk is left unmounted, as a hibernate
leaves it; a wake mounts it and restores the snapshot with this bundle.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from hutch.host.drivers.base import DriverError, SandboxSpec
from hutch.host.drivers.gvisor import GvisorDriver
from hutch.host.drivers.gvisor_host import _record_link, _write_names_in_place
from hutch.host.link import SandboxLink
from hutch.host.proc import CommandFailed
from hutch.host.storage import SandboxRootfs

__all__ = ["disk_file", "leaving_disk", "take_in"]


def disk_file(driver: GvisorDriver, sandbox_id: str) -> Path:
    """Where a sandbox's disk file is on this host (its directory's ``disk.img``)."""
    return SandboxRootfs(driver._dir(sandbox_id), templates=driver.templates).disk


async def leaving_disk(driver: GvisorDriver, sandbox_id: str) -> Path:
    """The disk file of a hibernated sandbox about to leave, once what its checkpoint
    left behind is gone (it is unmounted in the background after the checkpoint)."""
    await driver._settled(sandbox_id)
    disk = disk_file(driver, sandbox_id)
    if not await asyncio.to_thread(disk.is_file):
        raise DriverError(f"nothing of sandbox {sandbox_id} is left on this host")
    return disk


async def take_in(driver: GvisorDriver, spec: SandboxSpec) -> None:
    """Make everything around ``spec.id``'s disk file (already in its directory) that a
    wake needs, as a create would (``spec`` is the store's record with this host's link).
    Raises DriverError; the caller removes the directory on failure."""
    directory = driver._dir(spec.id)
    image, spec = driver._image(spec)  # the image must be here (the drain fetches it)
    disk = SandboxRootfs(directory, templates=driver.templates)
    link = SandboxLink(tag=driver.tag, sandbox_id=spec.id)

    def files() -> None:
        if not disk.disk.is_file() or disk.disk.is_symlink():
            raise DriverError(f"sandbox {spec.id} has no disk file to take in")
        for made in (disk.layer, disk.rootfs, directory / "etc"):
            made.mkdir()
        _write_names_in_place(directory / "etc", spec.hostname, str(spec.link.sandbox))
        (directory / "etc" / "resolv.conf").write_text(
            f"nameserver {spec.link.host}\noptions timeout:1 attempts:2\n"
        )
        # The kernel's hostname in the snapshot may be older than the record's (a rename
        # while it was hibernated there): set at its first wake, as after a fork.
        (directory / "hostname.pending").write_text(spec.hostname + "\n")
        # Its address here: what a wake puts back and a pause's connection check reads.
        _record_link(directory / "addresses.json", spec)
        # (HostRuntimes picks a sandbox's driver by this file.)
        (directory / "runtime").write_text("gvisor\n")

    try:
        await asyncio.to_thread(files)
        # The bundle reads the image through the mounted disk (is there a Python in it?),
        # as a fork's does; the disk goes back to unmounted, as hibernated.
        await disk.mount(image=image.lowers)
        try:
            config = await driver._bundle(spec, directory, disk, link)
        finally:
            await disk.unmount()
        await asyncio.to_thread((directory / "config.json").write_text, json.dumps(config))
    except CommandFailed as exc:
        raise DriverError(f"{exc.argv[0]} failed: {exc.detail}") from exc
    except OSError as exc:
        raise DriverError(f"the moved sandbox's files could not be made: {exc}") from exc
