"""``hutch host cleanup``: destroy everything a hutch home left on this host.

A stopped hutch leaves its sandboxes running (the next start adopts them), and with them
their mounts, network namespaces, links, bridges, nftables tables and preview proxy. An
operator who moves or removes an install, or whose pools clash with it (see
:mod:`hutch.host.ownership`), removes all of it with this; never while an agent of that
home runs (its lock says so).
"""

from __future__ import annotations

from pathlib import Path

from hutch.host.drivers.base import DriverError
from hutch.host.drivers.gvisor import GvisorDriver
from hutch.host.drivers.runc import RuncDriver
from hutch.host.networks import BridgeNetworks
from hutch.host.ownership import HomeLock
from hutch.host.proc import CommandFailed, run

__all__ = ["cleanup_home"]


async def cleanup_home(home: Path) -> dict[str, list[str]]:
    """Destroy the sandboxes, bridges, firewall tables and proxy of the hutch ``home``;
    return what was there. HomeInUse if an agent of that home is running."""
    with HomeLock(home).held():
        gvisor = GvisorDriver(home, images=home)
        if _gvisor_left_anything(gvisor):
            try:
                await gvisor.prepare()
                await gvisor.cleanup(set())  # its own first (runsc's state, sockets)
            except (DriverError, CommandFailed, OSError):
                pass  # no usable runsc here: it has no sandboxes either
        runc = RuncDriver(home, images=home)
        found = await runc.leftovers()
        await runc.cleanup(set())
        await BridgeNetworks(tag=runc.tag).cleanup(set())
        await run("pkill", "-TERM", "-f", f"nginx -c {home}/proxy/nginx.conf", check=False)
        await runc.uninstall()
    return {kind: items for kind, items in found.items() if items}


def _gvisor_left_anything(gvisor: GvisorDriver) -> bool:
    """Whether the home has a trace of a gvisor sandbox: runsc's state, a sandbox marked
    gvisor, or its sockets (what :meth:`GvisorDriver.cleanup` looks for). Asking runsc
    itself costs a second of starting it several times, and most homes never ran one."""

    def entries(directory: Path) -> list[Path]:
        return list(directory.iterdir()) if directory.is_dir() else []

    return bool(
        entries(gvisor.runc_root)
        or any((d / "runtime").exists() for d in entries(gvisor.sandboxes))
        or any(d.is_dir() and d.name.startswith("sb_") for d in entries(gvisor.sockets))
    )
