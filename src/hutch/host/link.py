"""A sandbox's network namespace and its point-to-point link to the host.

The link is the sandbox's only way out: its default route is the host end of the link.
The firewall decides what passes (:mod:`hutch.host.firewall`): the host's previews in,
DNS to hutch's server, and the internet under the sandbox's egress policy
(:mod:`hutch.host.egress`); nothing to the host itself or to other sandboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path

from hutch.host.drivers.base import LinkAddress
from hutch.host.proc import CommandFailed, CommandResult
from hutch.host.rtnl import add_netns_with_veth, delete_link, delete_netns
from hutch.host.uts import in_own_thread

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
        """Make the netns and the veth pair, addressed and up (over netlink, in a thread of
        its own: :mod:`hutch.host.rtnl`). On failure, call remove(). Raises
        :class:`CommandFailed` (as the ``ip`` commands it replaces would)."""

        def make() -> None:
            add_netns_with_veth(
                self.netns,
                self.host_if,
                host=address.host,
                sandbox=address.sandbox,
                prefix=address.network.prefixlen,
            )

        try:
            await in_own_thread(make)
        except OSError as exc:
            argv = ("netlink", "netns", self.netns)
            raise CommandFailed(argv, CommandResult(1, b"", str(exc).encode())) from exc

    async def remove(self) -> None:
        """Delete the netns (and with it the veth pair). A missing one is fine."""

        def take_down() -> None:
            with contextlib.suppress(OSError):
                delete_netns(self.netns)
            with contextlib.suppress(OSError):
                delete_link(self.host_if)

        await asyncio.to_thread(take_down)


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
