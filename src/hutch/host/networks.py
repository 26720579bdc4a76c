"""Private networks on one host: a bridge per network, a veth pair per attachment.

Every ``ip`` call that builds or tears down a private network is in this module. A
network's bridge carries no address of the host's: members reach each other on it and
nothing else, and the firewall (:mod:`hutch.host.firewall`) drops whatever a member sends
to the host through it or tries to have routed beyond it. A member's interface inside its
sandbox is ``eth1``, ``eth2``…; the host end is enslaved to the bridge.

In a cluster, a network whose members sit on several hosts is one VXLAN segment between
exactly those hosts (:meth:`BridgeNetworks.join_peers`): a ``vxlan`` device per network on
each such host (the network's VNI, unique in the store; the host's cluster address as the local end)
is a port of the network's bridge, and one all-zeros FDB entry per peer host sends
broadcasts (ARP) to each of them (head-end replication); replies are learnt. Members are
checked against their own addresses at their own host's bridge (the firewall's bridge
table), so what arrives over the segment was checked where it was sent.

Interfaces are looked up in ``/proc/self/net/dev`` (this process's network namespace),
not ``/sys/class/net``, which shows the namespace that mounted it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import secrets
from abc import ABC, abstractmethod
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from hutch.host.link import netns_name
from hutch.host.proc import CommandFailed, run

__all__ = ["BridgeNetworks", "FakeNetworks", "NetworkError", "NetworkLayer"]

VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14


def _links() -> set[str]:
    """The interfaces of this process's network namespace."""
    with open("/proc/self/net/dev") as table:
        return {line.split(":", 1)[0].strip() for line in table.readlines()[2:] if ":" in line}


VNI_FIRST, VNI_LAST = 2, (1 << 24) - 1  # 24 bits; 0 and 1 are left out


def new_vni() -> int:
    """A VXLAN id for a new network, at random (the store's unique constraint on
    ``networks.vni`` refuses one in use, and the network's creation draws again)."""
    return secrets.randbelow(VNI_LAST - VNI_FIRST + 1) + VNI_FIRST


async def _vni_of(device: str) -> int | None:
    """The VXLAN id of an existing device (``ip -d link show``), None if unreadable."""
    shown = await run("ip", "-d", "-o", "link", "show", "dev", device, check=False)
    fields = shown.stdout.decode().split()
    for name, value in itertools.pairwise(fields):
        if name == "id" and value.isdigit():
            return int(value)
    return None


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

    async def join_peers(
        self, network_id: str, *, vni: int, local: IPv4Address, peers: set[IPv4Address]
    ) -> None:
        """Join the network's segment (VXLAN id ``vni``) with the hosts ``peers`` (a
        cluster); by default a layer has no way across hosts and does nothing."""
        return None

    async def allow_peers(self, peers: set[IPv4Address]) -> None:
        """Let exactly ``peers`` send this host VXLAN (a cluster); by default nothing."""
        return None

    member_mtu: int | None = None
    """The MTU of members' interfaces (a cluster's agent: its underlay's minus the VXLAN
    header, :data:`VXLAN_OVERHEAD`, so that frames cross hosts without IP fragments);
    None: the kernel's default (1500)."""


class BridgeNetworks(NetworkLayer):
    def __init__(self, *, tag: str) -> None:
        self.tag = tag
        self.table = f"hutch-{tag}"  # the firewall's bridge table (hutch.host.firewall)
        self.bridge_prefix = f"hn{tag[:4]}"
        self.port_prefix = f"hp{tag[:4]}"
        self.vxlan_prefix = f"hx{tag[:4]}"
        self._vnis: dict[str, int] = {}  # VXLAN devices seen or made here: their ids

    def bridge(self, network_id: str) -> str:
        # IFNAMSIZ is 16: "hn" + 4 of the instance tag + 8 of the id's hash = 14.
        return self.bridge_prefix + _hash(network_id)

    def port(self, sandbox_id: str, network_id: str) -> str:
        return self.port_prefix + _hash(f"{sandbox_id}/{network_id}")

    def vxlan(self, network_id: str) -> str:
        return self.vxlan_prefix + _hash(network_id)

    async def join_peers(
        self, network_id: str, *, vni: int, local: IPv4Address, peers: set[IPv4Address]
    ) -> None:
        """Make the network one segment with ``peers`` (the other hosts that have members
        of it): its VXLAN port (id ``vni``, the network's from the store) on this host's
        bridge, with exactly one flood entry per peer. No peers: no VXLAN port. Idempotent."""
        device = self.vxlan(network_id)
        present = device in await asyncio.to_thread(_links)
        if not peers:
            self._vnis.pop(device, None)
            if present:
                await run("ip", "link", "del", device, check=False)
            return
        bridge = await self._ensure_bridge(network_id)
        if present and self._vnis.get(device) != vni and await _vni_of(device) != vni:
            # Made with another id (by an older hutch, before VNIs came from the store).
            await run("ip", "link", "del", device, check=False)
            present = False
        if not present:
            try:
                await run("ip", "link", "add", device, "type", "vxlan", "id",
                          str(vni), "local", str(local), "dstport",
                          str(VXLAN_PORT))  # fmt: skip
            except CommandFailed as exc:
                if device not in await asyncio.to_thread(_links):
                    raise NetworkError(f"cannot create the VXLAN port: {exc.detail}") from exc
            await asyncio.to_thread(_disable_ipv6, device)
            await run("ip", "link", "set", device, "master", bridge, "up")
        self._vnis[device] = vni
        listed = await run("bridge", "fdb", "show", "dev", device)
        known = {
            IPv4Address(fields[fields.index("dst") + 1])
            for line in listed.stdout.decode().splitlines()
            if line.startswith("00:00:00:00:00:00") and "dst" in (fields := line.split())
        }
        script = "".join(
            f"fdb append 00:00:00:00:00:00 dev {device} dst {peer}\n" for peer in peers - known
        ) + "".join(
            f"fdb del 00:00:00:00:00:00 dev {device} dst {peer}\n" for peer in known - peers
        )
        if script:
            await run("bridge", "-batch", "-", input=script.encode())

    async def _ensure_bridge(self, network_id: str) -> str:
        bridge = self.bridge(network_id)
        if bridge in await asyncio.to_thread(_links):
            return bridge
        try:
            await run("ip", "link", "add", "name", bridge, "type", "bridge")
        except CommandFailed as exc:
            if bridge not in await asyncio.to_thread(_links):  # made meanwhile: fine
                raise NetworkError(f"cannot create the bridge: {exc.detail}") from exc
        # No IPv6 link-local address either: the host has no address on a private network.
        await asyncio.to_thread(_disable_ipv6, bridge)
        await run("ip", "link", "set", bridge, "up")
        return bridge

    async def allow_peers(self, peers: set[IPv4Address]) -> None:
        """Only ``peers`` may send VXLAN to this host (the firewall's ``overlay_peers``)."""
        elements = ", ".join(sorted(str(p) for p in peers))
        script = f"flush set inet {self.table} overlay_peers\n"
        if elements:
            script += f"add element inet {self.table} overlay_peers {{ {elements} }}\n"
        await run("nft", "-f", "-", input=script.encode())

    async def attach(
        self, sandbox_id: str, network_id: str, *, ifname: str, address: IPv4Interface
    ) -> None:
        port = self.port(sandbox_id, network_id)
        netns = netns_name(self.tag, sandbox_id)
        try:
            bridge = await self._ensure_bridge(network_id)
            await self._elements("add", port, address)
            mtu = f" mtu {self.member_mtu}" if self.member_mtu else ""
            await run("ip", "-batch", "-", input=(
                f"link add {port}{mtu} type veth peer name {ifname} address {_mac(address)}"
                f"{mtu} netns {netns}\n"
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
        return self.port(sandbox_id, network_id) in await asyncio.to_thread(_links)

    async def remove(self, network_id: str) -> None:
        await run("ip", "link", "del", self.vxlan(network_id), check=False)
        await run("ip", "link", "del", self.bridge(network_id), check=False)

    async def cleanup(self, keep: set[str]) -> list[str]:
        wanted = {self.bridge(n) for n in keep} | {self.vxlan(n) for n in keep}
        stale = sorted(set(self.bridges()) - wanted) + sorted(set(self.vxlans()) - wanted)
        for device in stale:
            await run("ip", "link", "del", device, check=False)
        return stale

    def bridges(self) -> list[str]:
        return sorted(name for name in _links() if name.startswith(self.bridge_prefix))

    def ports(self) -> list[str]:
        return sorted(name for name in _links() if name.startswith(self.port_prefix))

    def vxlans(self) -> list[str]:
        return sorted(name for name in _links() if name.startswith(self.vxlan_prefix))


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
