"""Private networks across hosts: each agent keeps its networks' VXLAN segments in step
with the store.

Every ``interval_s`` an agent of a cluster reads which hosts have live members of which
networks, and for each network with members on this host makes it one segment with the
other hosts that have members of it (:meth:`hutch.host.networks.BridgeNetworks.join_peers`:
a VXLAN port on the network's bridge, one flood entry per peer host); a network whose
last member here left loses its VXLAN port. A new member on another host is reachable
from here within one interval. Names resolve across hosts already: the DNS server answers
from the store (:func:`hutch.store.networks.peers_named`), whatever host a peer is on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import defaultdict
from ipaddress import IPv4Address
from urllib.parse import urlsplit

from sqlalchemy import select

from hutch.core.sandbox_status import LIVE_STATUSES
from hutch.host.agent import HostAgent
from hutch.host.networks import VXLAN_OVERHEAD, NetworkError
from hutch.host.proc import CommandFailed, run
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.models import Host, NetworkMember, NetworkRecord, SandboxRecord

__all__ = ["Overlay", "member_mtu", "overlay_address"]

log = logging.getLogger(__name__)


def overlay_address(settings: Settings) -> IPv4Address | None:
    """This host's end of its VXLAN segments: the address the control plane reaches it at
    (a name is looked up: blocking, call it in a thread)."""
    return _resolve(settings.agent_url or f"http://{settings.agent_listen}")


async def member_mtu(settings: Settings) -> int | None:
    """The MTU for members of private networks on a cluster's agent: the MTU of the
    interface holding this host's overlay address, less the VXLAN header (a member at
    1500 on a 1500 underlay would have every full frame split in two IP fragments
    between hosts); None when that interface is not found (the kernel's default).

    GRO is left as the host has it. On one machine's test cluster (veths between hosts'
    namespaces, GRO off as veths have it by default: a veth passes packets up without
    NAPI, where GRO runs, unless GRO or XDP is asked for) the VXLAN datagrams cross
    unsegmented, ~56 KB each (GSO all the way), so GRO has nothing to merge there and
    turning it on changed nothing measurable (bench/cluster_net.py); on real hosts the
    NIC, whose GRO is on by default, merges what comes off the wire."""
    local = await asyncio.to_thread(overlay_address, settings)
    if local is None:
        return None
    shown = await run("ip", "-o", "-4", "addr", "show", check=False)
    for line in shown.stdout.decode().splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3].split("/")[0] == str(local):
            link = await run("ip", "-o", "link", "show", "dev", fields[1].split("@")[0],
                             check=False)  # fmt: skip
            words = link.stdout.decode().split()
            if "mtu" in words and words[words.index("mtu") + 1].isdigit():
                return int(words[words.index("mtu") + 1]) - VXLAN_OVERHEAD
    log.warning("no interface holds %s: private networks keep the default MTU", local)
    return None


_RESOLVED_FOR_S = 30.0
_resolved: dict[str, tuple[float, IPv4Address | None]] = {}


def _resolve(url: str | None) -> IPv4Address | None:
    """The IPv4 address of a URL's host: a literal as it is, a name as the resolver says
    (kept for 30 s); None (with a warning) when there is none. Blocking."""
    host = urlsplit(url or "").hostname or ""
    try:
        return IPv4Address(host)
    except ValueError:
        pass
    now = time.monotonic()
    kept = _resolved.get(host)
    if kept is not None and now - kept[0] < _RESOLVED_FOR_S:
        return kept[1]
    try:
        found: IPv4Address | None = IPv4Address(
            socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
        )
    except (OSError, IndexError, ValueError) as exc:
        if kept is None or kept[1] is not None:  # once, not every interval
            log.warning("private networks cannot span to or from %r: no IPv4 address for "
                        "%r (%s)", url, host, exc)  # fmt: skip
        found = None
    _resolved[host] = (now, found)
    return found


class Overlay:
    def __init__(self, settings: Settings, db: Database, host: HostAgent) -> None:
        self._settings = settings
        self._db = db
        self._host = host
        self._joined: set[str] = set()
        self._allowed: set[IPv4Address] | None = None

    async def sync_once(self) -> None:
        local = await asyncio.to_thread(overlay_address, self._settings)
        if local is None:
            return
        here = self._host.host_id
        async with self._db.sessions() as session:
            rows = await session.execute(
                select(NetworkMember.network_id, NetworkRecord.vni, SandboxRecord.host_id)
                .join(SandboxRecord, SandboxRecord.id == NetworkMember.sandbox_id)
                .join(NetworkRecord, NetworkRecord.id == NetworkMember.network_id)
                .where(SandboxRecord.status.in_(LIVE_STATUSES))
                .distinct()
            )
            hosts = await session.execute(
                select(Host.id, Host.address).where(Host.address.is_not(None))
            )
            registered = dict(hosts.tuples().all())
        addresses = await asyncio.to_thread(
            lambda: {host_id: _resolve(address) for host_id, address in registered.items()}
        )
        members: defaultdict[str, set[str]] = defaultdict(set)
        vnis: dict[str, int] = {}
        for network_id, vni, host_id in rows:
            vnis[network_id] = vni
            if host_id is not None:
                members[network_id].add(host_id)
        # Each network's VXLAN id is its own (unique in the store: hutch.store.models.
        # NetworkRecord.vni), so no two networks ever share a segment between hosts.
        wanted = {network_id for network_id, on in members.items() if here in on}
        # The firewall lets VXLAN in from the hosts this one shares a network with, only.
        allowed = {
            a for n in wanted for h in members[n] - {here}
            if (a := addresses.get(h)) is not None and a != local
        }  # fmt: skip
        if allowed != self._allowed:
            await self._host.networks.allow_peers(allowed)
            self._allowed = allowed
        for network_id in wanted | self._joined:
            others = members.get(network_id, set()) - {here} if network_id in wanted else set()
            peers = {a for h in others if (a := addresses.get(h)) is not None and a != local}
            try:
                await self._host.networks.join_peers(
                    network_id, vni=vnis.get(network_id, 0), local=local, peers=peers
                )
            except (CommandFailed, NetworkError) as exc:
                log.warning("could not join network %s across hosts: %s", network_id, exc)
                continue
            if peers:
                self._joined.add(network_id)
            else:
                self._joined.discard(network_id)

    async def run_forever(self, interval_s: float) -> None:
        while True:
            try:
                await self.sync_once()
            except Exception:
                log.warning("syncing networks across hosts failed; will retry", exc_info=True)
            await asyncio.sleep(interval_s)
