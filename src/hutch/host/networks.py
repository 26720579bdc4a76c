"""Private networks on one host: a bridge per network, a veth pair per attachment.

Every ``ip`` call that builds or tears down a private network is in this module. A
network's bridge carries no address of the host's: members reach each other on it and
nothing else, and the firewall (:mod:`hutch.host.firewall`) drops whatever a member sends
to the host through it or tries to have routed beyond it. A member's interface inside its
sandbox is ``eth1``, ``eth2``…; the host end is enslaved to the bridge.

:class:`NetworkLayer` is the seam for later multi-host work: a VXLAN layer can join the
same bridges across hosts without the services above noticing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from abc import ABC, abstractmethod
from ipaddress import IPv4Interface
from pathlib import Path

from hutch.host.link import netns_name
from hutch.host.proc import CommandFailed, run

__all__ = ["BridgeNetworks", "FakeNetworks", "NetworkError", "NetworkLayer"]

SYS_NET = Path("/sys/class/net")


class NetworkError(Exception):
    """Plumbing a network failed; the message says why."""


class NetworkLayer(ABC):
    @abstractmethod
    async def attach(
        self, sandbox_id: str, network_id: str, *, ifname: str, address: IPv4Interface
    ) -> None:
        """Give the sandbox an interface ``ifname`` with ``address`` on the network, up.
        All-or-nothing. Raises :class:`NetworkError`."""

    @abstractmethod
    async def detach(
        self, sandbox_id: str, network_id: str, *, ifname: str, address: IPv4Interface
    ) -> None:
        """Remove that interface and what admits its traffic. A missing one is success."""

    @abstractmethod
    async def admit(self, sandbox_id: str, network_id: str, *, address: IPv4Interface) -> None:
        """Let an existing member's traffic onto the network again (after the firewall was
        installed afresh, at a start)."""

    @abstractmethod
    async def attached(self, sandbox_id: str, network_id: str, *, ifname: str) -> bool:
        """Whether the interface is there (recovery re-attaches the ones that are not)."""

    @abstractmethod
    async def remove(self, network_id: str) -> None:
        """Remove the network's segment from this host. A missing one is success."""

    @abstractmethod
    async def cleanup(self, keep: set[str]) -> list[str]:
        """Remove the segments of every network not in ``keep``; return what was removed."""


class BridgeNetworks(NetworkLayer):
    def __init__(self, *, tag: str) -> None:
        self.tag = tag
        self.table = f"hutch-{tag}"  # the firewall's bridge table (hutch.host.firewall)
        self.bridge_prefix = f"hn{tag[:4]}"
        self.port_prefix = f"hp{tag[:4]}"

    def bridge(self, network_id: str) -> str:
        # IFNAMSIZ is 16: "hn" + 4 of the instance tag + 8 of the id's hash = 14.
        return self.bridge_prefix + _hash(network_id)

    def port(self, sandbox_id: str, network_id: str) -> str:
        return self.port_prefix + _hash(f"{sandbox_id}/{network_id}")

    async def _ensure_bridge(self, network_id: str) -> str:
        bridge = self.bridge(network_id)
        if (SYS_NET / bridge).exists():
            return bridge
        try:
            await run("ip", "link", "add", "name", bridge, "type", "bridge")
        except CommandFailed as exc:
            if not (SYS_NET / bridge).exists():  # another attach made it meanwhile: fine
                raise NetworkError(f"cannot create the bridge: {exc.detail}") from exc
        # No IPv6 link-local address either: the host has no address on a private network.
        await asyncio.to_thread(_disable_ipv6, bridge)
        await run("ip", "link", "set", bridge, "up")
        return bridge

    async def attach(
        self, sandbox_id: str, network_id: str, *, ifname: str, address: IPv4Interface
    ) -> None:
        port = self.port(sandbox_id, network_id)
        netns = netns_name(self.tag, sandbox_id)
        try:
            bridge = await self._ensure_bridge(network_id)
            await self._elements("add", port, address)
            await run("ip", "-batch", "-", input=(
                f"link add {port} type veth peer name {ifname} address {_mac(address)} "
                f"netns {netns}\n"
                f"link set {port} master {bridge}\n"
                f"link set {port} up\n"
            ).encode())  # fmt: skip
            await asyncio.to_thread(_disable_ipv6, port)
            await run("ip", "-n", netns, "-batch", "-", input=(
                f"addr add {address.with_prefixlen} dev {ifname}\nlink set {ifname} up\n"
            ).encode())  # fmt: skip
        except (CommandFailed, NetworkError) as exc:
            await run("ip", "link", "del", port, check=False)
            await self._elements("delete", port, address, check=False)
            detail = exc.detail if isinstance(exc, CommandFailed) else str(exc)
            raise NetworkError(f"cannot attach the sandbox to the network: {detail}") from exc

    async def detach(
        self, sandbox_id: str, network_id: str, *, ifname: str, address: IPv4Interface
    ) -> None:
        port = self.port(sandbox_id, network_id)
        # Deleting either end of a veth pair deletes both.
        await run("ip", "link", "del", port, check=False)
        await self._elements("delete", port, address, check=False)

    async def admit(self, sandbox_id: str, network_id: str, *, address: IPv4Interface) -> None:
        try:
            await self._elements("add", self.port(sandbox_id, network_id), address)
        except CommandFailed as exc:
            raise NetworkError(f"cannot admit a member's traffic: {exc.detail}") from exc

    async def _elements(
        self, verb: str, port: str, address: IPv4Interface, *, check: bool = True
    ) -> None:
        """The member's (port, IPv4) and (port, MAC) pairs in the firewall's bridge table:
        frames from its port with any other source are dropped."""
        script = (
            f'{verb} element bridge {self.table} member_ips {{ "{port}" . {address.ip} }}\n'
            f'{verb} element bridge {self.table} member_macs {{ "{port}" . {_mac(address)} }}\n'
        )
        await run("nft", "-f", "-", input=script.encode(), check=check)

    async def attached(self, sandbox_id: str, network_id: str, *, ifname: str) -> bool:
        return (SYS_NET / self.port(sandbox_id, network_id)).exists()

    async def remove(self, network_id: str) -> None:
        await run("ip", "link", "del", self.bridge(network_id), check=False)

    async def cleanup(self, keep: set[str]) -> list[str]:
        wanted = {self.bridge(network_id) for network_id in keep}
        stale = sorted(set(self.bridges()) - wanted)
        for bridge in stale:
            await run("ip", "link", "del", bridge, check=False)
        return stale

    def bridges(self) -> list[str]:
        return sorted(p.name for p in SYS_NET.iterdir() if p.name.startswith(self.bridge_prefix))

    def ports(self) -> list[str]:
        return sorted(p.name for p in SYS_NET.iterdir() if p.name.startswith(self.port_prefix))


class FakeNetworks(NetworkLayer):
    """Bookkeeping only, for the fake driver: fake sandboxes have no network of their own."""

    def __init__(self) -> None:
        self.interfaces: dict[tuple[str, str], str] = {}

    async def attach(
        self, sandbox_id: str, network_id: str, *, ifname: str, address: IPv4Interface
    ) -> None:
        self.interfaces[(sandbox_id, network_id)] = ifname

    async def detach(
        self, sandbox_id: str, network_id: str, *, ifname: str, address: IPv4Interface
    ) -> None:
        self.interfaces.pop((sandbox_id, network_id), None)

    async def admit(self, sandbox_id: str, network_id: str, *, address: IPv4Interface) -> None:
        pass

    async def attached(self, sandbox_id: str, network_id: str, *, ifname: str) -> bool:
        return (sandbox_id, network_id) in self.interfaces

    async def remove(self, network_id: str) -> None:
        pass

    async def cleanup(self, keep: set[str]) -> list[str]:
        return []


def _mac(address: IPv4Interface) -> str:
    """A member's MAC: locally administered, its IPv4 address in the low four bytes (the
    address is unique in the store, so the MAC is unique on every bridge)."""
    return "02:42:" + ":".join(f"{byte:02x}" for byte in address.ip.packed)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _disable_ipv6(interface: str) -> None:
    path = Path("/proc/sys/net/ipv6/conf") / interface / "disable_ipv6"
    with contextlib.suppress(OSError):  # no IPv6 on this host at all
        path.write_text("1")
