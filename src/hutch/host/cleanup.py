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
