"""A sandbox's network namespace and its point-to-point link to the host.

The link is the sandbox's only way out: its default route is the host end of the link.
The firewall decides what passes (:mod:`hutch.host.firewall`): the host's previews in,
DNS to hutch's server, and the internet under the sandbox's egress policy
(:mod:`hutch.host.egress`); nothing to the host itself or to other sandboxes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from hutch.host.drivers.base import LinkAddress
from hutch.host.proc import run

__all__ = ["SandboxLink", "list_netns"]

NETNS_DIR = Path("/run/netns")


class SandboxLink:
    def __init__(self, *, tag: str, sandbox_id: str) -> None:
        self.netns = netns_name(tag, sandbox_id)
        self.host_if = host_interface(tag, sandbox_id)

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    async def create(self, address: LinkAddress) -> None:
        """Make the netns and the veth pair, addressed and up. On failure, call remove()."""
        prefix = address.network.prefixlen
        host_batch = (
            f"netns add {self.netns}\n"
            f"link add {self.host_if} type veth peer name eth0 netns {self.netns}\n"
            f"addr add {address.host}/{prefix} dev {self.host_if}\n"
            f"link set {self.host_if} up\n"
        )
        await run("ip", "-batch", "-", input=host_batch.encode())
        guest_batch = (
            f"link set lo up\naddr add {address.sandbox}/{prefix} dev eth0\nlink set eth0 up\n"
            f"route add default via {address.host} dev eth0\n"
        )
        await run("ip", "-n", self.netns, "-batch", "-", input=guest_batch.encode())

    async def remove(self) -> None:
        """Delete the netns (and with it the veth pair). A missing one is fine."""
        if self.netns_path.exists():
            await run("ip", "netns", "del", self.netns, check=False)
        await run("ip", "link", "del", self.host_if, check=False)


def netns_name(tag: str, sandbox_id: str) -> str:
    return f"hutch-{tag}-{sandbox_id}"


def host_interface(tag: str, sandbox_id: str) -> str:
    # IFNAMSIZ is 16: "hv" + 4 of the instance tag + 8 of the id's hash = 14.
    return "hv" + tag[:4] + hashlib.sha256(sandbox_id.encode()).hexdigest()[:8]


def list_netns(tag: str) -> dict[str, str]:
    """``{sandbox_id: netns name}`` for this instance's namespaces on the host."""
    prefix = f"hutch-{tag}-"
    if not NETNS_DIR.is_dir():
        return {}
    return {
        path.name[len(prefix) :]: path.name
        for path in NETNS_DIR.iterdir()
        if path.name.startswith(prefix)
    }
