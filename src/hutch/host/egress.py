"""Each sandbox's egress policy and bandwidth meter, in hutch's own nftables table.

The firewall (:mod:`hutch.host.firewall`) sends everything a sandbox starts towards the
outside through its ``egress`` chain: the platform deny set and TCP port 25 are refused
there, then ``iifname vmap @egress_links`` jumps, in one hash lookup, to the sandbox's
own chain; a sandbox with no entry is refused. Per sandbox (``<if>`` is the host end of
its link, ``hv…``):

- ``e_<if>``: its own source address only (a forged one is dropped), then open, or the
  policy: ``a_<if>`` (block . protocol 0-255: every port and protocol), ``ap_<if>``
  (block . port), and the addresses its DNS lookups allowed, ``d_<if>`` and ``dp_<if>``
  (with timeouts; see :meth:`EgressFirewall.allow_resolved`). Anything else is refused.
- ``m_<if>``: the meter: the named quota ``q_<if>`` of what is left (refused when it runs
  out), then the ``tx_<if>`` counter and accept. Replies coming back count in ``rx_<if>``.

The control plane's cost must not grow with the number of sandboxes. Counters and quotas
are read from the kernel one object at a time (:mod:`hutch.host.nfnetlink`), not through
``nft list``, which fetches the whole ruleset first. Changes go through libnftables, whose
cache fetch for a transaction covers the table's chains, sets and objects, and the
elements of every set that is a plain (not concatenated) interval set: no per-sandbox
set is one (``a_<if>`` is concatenated with the protocol for that reason), so those
elements are never fetched.

Everything is evaluated on every forwarded packet, not only the first of a connection,
so a new policy cuts open connections to places it no longer allows (the next packet the
sandbox sends gets a TCP reset). Refusals are fast: a TCP reset, else ICMP
admin-prohibited. All of one sandbox's state changes in ONE ``nft -f`` transaction. The
sandbox cannot see any of it: it has no CAP_NET_ADMIN, and this is the host's namespace.

The counters start from the values the store had (``used_bytes``/``ingress_bytes``), so
they survive a restart of hutch; the firewall keeps the old table's counters at a start
(:attr:`Firewall.salvaged`) in case they are newer than the store's.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, collapse_addresses
from typing import Any

from hutch.host.firewall import Firewall
from hutch.host.link import host_interface
from hutch.host.nfnetlink import (
    NetlinkError,
    add_timed_elements,
    batch,
    counters,
    flush_message,
    keys_message,
    ranges_message,
    read_counter,
    read_quota,
)
from hutch.host.nft import nft, nft_json
from hutch.host.proc import CommandFailed

__all__ = [
    "EgressFirewall",
    "EgressLayer",
    "EgressSpec",
    "FakeEgress",
    "KeepResolved",
    "Resolved",
    "TrafficCounts",
    "apply_script",
    "is_ipv4",
    "policy_batch",
    "remove_script",
    "resolved_elements",
]

log = logging.getLogger(__name__)

MIN_RESOLVED_TTL_S = 60

KeepResolved = Callable[[str, int | None], bool]
"""``(name, port or None) -> keep?`` for resolved addresses when a policy is replaced."""


@dataclass(frozen=True, kw_only=True)
class EgressSpec:
    """A sandbox's policy and meter as the kernel holds them."""

    sandbox_id: str
    ip: str
    """The sandbox's end of its link: the source of its packets and of its DNS queries."""
    restricted: bool
    networks: Sequence[tuple[IPv4Network, int | None]] = ()
    """Blocks it may reach when restricted: ``(block, port)``, port None for every port."""
    domains: Sequence[str] = ()
    """Its domain rules (enforced through :meth:`EgressLayer.allow_resolved`); a change
    here re-applies the policy, pruning what the old rules' lookups allowed."""
    quota_bytes: int = -1
    """Outbound bytes allowed in all; -1 is unmetered."""
    used_bytes: int = 0
    ingress_bytes: int = 0
    """Where the counters start when they are first made (from the store)."""

    def policy_key(self) -> tuple[object, ...]:
        return (self.ip, self.restricted, tuple(self.networks), tuple(self.domains),
                self.quota_bytes)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class TrafficCounts:
    sent_bytes: int
    """Outbound internet bytes that passed (what the quota is charged against)."""
    received_bytes: int
    """Inbound bytes of the sandbox's internet connections."""
    capped: bool = False
    """Whether the quota has run out: outbound internet packets are refused."""


class EgressLayer(ABC):
    """Where policies are enforced: nftables for runc, bookkeeping for the fake driver."""

    @abstractmethod
    async def apply(self, spec: EgressSpec, *, keep_resolved: KeepResolved | None = None) -> None:
        """Install or replace the sandbox's policy and quota, atomically and live.
        Resolved addresses stay unless ``keep_resolved`` says no. Raises CommandFailed."""

    @abstractmethod
    async def remove(self, sandbox_id: str) -> TrafficCounts | None:
        """Remove everything of the sandbox; return its last counts (None: nothing there)."""

    @abstractmethod
    async def counts(self, sandbox_id: str) -> TrafficCounts | None:
        """The sandbox's counters now (None when it has no policy installed)."""

    @abstractmethod
    async def all_counts(self) -> dict[str, TrafficCounts]:
        """Every installed sandbox's counters, by sandbox id, in one read."""

    @abstractmethod
    async def allow_resolved(
        self,
        sandbox_ip: str,
        addresses: Iterable[str],
        port: int | None,
        ttl_s: float,
        *,
        name: str = "",
    ) -> bool:
        """Let the sandbox whose link address is ``sandbox_ip`` reach ``addresses`` (IPv4
        strings; others are skipped) on ``port`` (TCP and UDP), or on every port and
        protocol when ``port`` is None, for ``max(ttl_s, 60)`` seconds; re-adding one
        refreshes its timeout. ``name`` is the resolved name: when the policy is replaced,
        entries whose name no rule allows any more are removed. Returns False, adding
        nothing, when ``sandbox_ip`` is no sandbox with a policy here. The elements are in
        the kernel when this returns (call it before the DNS answer leaves)."""

    @abstractmethod
    def installed(self) -> set[str]:
        """The sandbox ids with a policy installed."""


def _names(ifname: str) -> dict[str, str]:
    kinds = ("e", "m", "a", "ap", "d", "dp", "q", "tx", "rx")
    return {kind: f"{kind}_{ifname}" for kind in kinds}


def apply_script(
    table: str,
    ifname: str,
    spec: EgressSpec,
    *,
    used_now: int,
    seed_sent: int,
    seed_received: int,
    prune: Sequence[Resolved] = (),
) -> str:
    """The one transaction that installs or replaces a sandbox's policy and meter.

    ``used_now`` is the sandbox's current outbound count (the quota rule starts there);
    ``seed_*`` are the counters' starting values if they do not exist yet; ``prune`` lists
    resolved elements to remove.
    """
    n = _names(ifname)
    t = f"inet {table}"
    any_port = [f"{net} . 0-255" for net in _merged(spec.networks, None)]
    ports = sorted({port for _, port in spec.networks if port is not None})
    with_port = [f"{net} . {port}" for port in ports for net in _merged(spec.networks, port)]
    lines = [
        f"add counter {t} {n['tx']} {{ packets 0 bytes {seed_sent} ; }}",
        f"add counter {t} {n['rx']} {{ packets 0 bytes {seed_received} ; }}",
        f"add set {t} {n['a']} {{ type ipv4_addr . inet_proto ; flags interval ; }}",
        f"flush set {t} {n['a']}",
        f"add set {t} {n['ap']} {{ type ipv4_addr . inet_service ; flags interval ; }}",
        f"flush set {t} {n['ap']}",
        f"add set {t} {n['d']} {{ type ipv4_addr ; flags timeout ; }}",
        f"add set {t} {n['dp']} {{ type ipv4_addr . inet_service ; flags timeout ; }}",
    ]
    if any_port:
        lines.append(f"add element {t} {n['a']} {{ {', '.join(any_port)} }}")
    if with_port:
        lines.append(f"add element {t} {n['ap']} {{ {', '.join(with_port)} }}")
    lines += [f"delete element {t} {r.set_name} {{ {r.element} }}" for r in prune]
    # The quota is made anew each time (its use starting from the counter, not from what
    # it refused): added first so that it exists to be deleted, once no rule uses it.
    lines += [
        f"add chain {t} {n['m']}",
        f"add quota {t} {n['q']} {{ over 0 bytes ; }}",
        f"flush chain {t} {n['m']}",
        f"delete quota {t} {n['q']}",
    ]
    if spec.quota_bytes >= 0:
        # The kernel refuses a quota used beyond its size; at its size it is used up.
        used = min(used_now, spec.quota_bytes)
        lines += [
            f"add quota {t} {n['q']} {{ over {spec.quota_bytes} bytes used {used} bytes ; }}",
            f'add rule {t} {n["m"]} quota name "{n["q"]}" goto refuse',
        ]
    lines.append(f'add rule {t} {n["m"]} counter name "{n["tx"]}" accept')
    lines += [f"add chain {t} {n['e']}", f"flush chain {t} {n['e']}"]
    # Root inside has CAP_NET_RAW: a packet with any source but its own would leave
    # unmasqueraded (or as another sandbox's).
    # The chain is the same for every policy, so that a PUT changes set elements only
    # (EgressFirewall.apply does that over netlink): open is membership of egress_open.
    lines += [
        f"add rule {t} {n['e']} ip saddr != {IPv4Address(spec.ip)} drop",
        f"add rule {t} {n['e']} iifname @egress_open goto {n['m']}",
        f"add rule {t} {n['e']} ip daddr . meta l4proto @{n['a']} goto {n['m']}",
        f"add rule {t} {n['e']} ip daddr @{n['d']} goto {n['m']}",
        f"add rule {t} {n['e']} meta l4proto {{ tcp, udp }} ip daddr . th dport "
        f"@{n['ap']} goto {n['m']}",
        f"add rule {t} {n['e']} meta l4proto {{ tcp, udp }} ip daddr . th dport "
        f"@{n['dp']} goto {n['m']}",
        f"add rule {t} {n['e']} goto refuse",
        f'add element {t} egress_open {{ "{ifname}" }}',
    ]
    if spec.restricted:
        lines.append(f'delete element {t} egress_open {{ "{ifname}" }}')
    lines += [
        f'add element {t} egress_links {{ "{ifname}" : goto {n["e"]} }}',
        f'add element {t} ingress_counters {{ "{ifname}" : "{n["rx"]}" }}',
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Resolved:
    """An element a DNS answer put in a sandbox's ``d_``/``dp_`` set."""

    set_name: str
    address: str
    port: int | None

    @property
    def element(self) -> str:
        return self.address if self.port is None else f"{self.address} . {self.port}"

    @property
    def key(self) -> bytes:
        return _key(self.address, self.port)


def _key(address: str | IPv4Address, port: int | None) -> bytes:
    """An element's key as the kernel holds it: in a concatenation every field takes 4
    bytes (a port 2, in network order, then padding)."""
    packed = IPv4Address(address).packed
    return packed if port is None else packed + port.to_bytes(2, "big") + b"\0\0"


def policy_batch(
    table: str, ifname: str, spec: EgressSpec, *, was_open: bool, prune: Sequence[Resolved]
) -> list[tuple[int, int, bytes]]:
    """A policy's blocks, its openness and stale resolved elements, as netlink messages
    (:func:`hutch.host.nfnetlink.batch`) for a sandbox whose chains :func:`apply_script`
    made: its sets emptied and filled again, in one transaction."""
    n = _names(ifname)
    any_port = [(_key(net[0], None) + b"\0\0\0\0", _key(net[-1], None) + b"\xff\0\0\0")
                for net in _merged(spec.networks, None)]  # fmt: skip
    with_port = [(_key(net[0], port), _key(net[-1], port))
                 for port in sorted({p for _, p in spec.networks if p is not None})
                 for net in _merged(spec.networks, port)]  # fmt: skip
    messages = [flush_message(table, n["a"]), flush_message(table, n["ap"])]
    if any_port:
        messages += ranges_message(table, n["a"], any_port)
    if with_port:
        messages += ranges_message(table, n["ap"], with_port)
    name = ifname.encode().ljust(16, b"\0")  # an ifname key is IFNAMSIZ bytes
    if was_open and spec.restricted:
        messages += keys_message(table, "egress_open", [name], add=False)
    elif not was_open and not spec.restricted:
        messages += keys_message(table, "egress_open", [name], add=True)
    for set_name in sorted({r.set_name for r in prune}):
        keys = [r.key for r in prune if r.set_name == set_name]
        messages += keys_message(table, set_name, keys, add=False)
    return messages


def _merged(
    networks: Sequence[tuple[IPv4Network, int | None]], port: int | None
) -> list[IPv4Network]:
    """The blocks with ``port``, overlaps merged: an interval set refuses overlapping
    elements (rules such as ``198.51.0.0/16`` and ``198.51.100.0/24`` together)."""
    return list(collapse_addresses(net for net, p in networks if p == port))


def remove_script(table: str, ifname: str) -> str:
    n = _names(ifname)
    t = f"inet {table}"
    return "\n".join([
        f'delete element {t} egress_links {{ "{ifname}" }}',
        f'delete element {t} ingress_counters {{ "{ifname}" }}',
        f'add element {t} egress_open {{ "{ifname}" }}',  # so that it exists to be deleted
        f'delete element {t} egress_open {{ "{ifname}" }}',
        f"flush chain {t} {n['e']}",
        f"flush chain {t} {n['m']}",
        f"delete chain {t} {n['e']}",
        f"delete chain {t} {n['m']}",
        f"add quota {t} {n['q']} {{ over 0 bytes ; }}",  # so that it exists to be deleted
        f"delete quota {t} {n['q']}",
        *(f"delete set {t} {n[kind]}" for kind in ("a", "ap", "d", "dp")),
        f"delete counter {t} {n['tx']}",
        f"delete counter {t} {n['rx']}",
    ]) + "\n"  # fmt: skip


def resolved_elements(
    ifname: str, addresses: Sequence[str], port: int | None
) -> tuple[str, list[bytes]]:
    """The set that DNS-resolved ``addresses`` go in (with ``port``, or every port) and
    their keys as the kernel holds them (:func:`hutch.host.nfnetlink.add_timed_elements`)."""
    n = _names(ifname)
    return n["d"] if port is None else n["dp"], [_key(a, port) for a in addresses]


@dataclass
class _Installed:
    sandbox_id: str
    ifname: str
    spec: EgressSpec


class EgressFirewall(EgressLayer):
    """The nftables side, in the firewall's ``inet`` table."""

    def __init__(self, firewall: Firewall, *, tag: str) -> None:
        self._firewall = firewall
        self._tag = tag
        self._by_id: dict[str, _Installed] = {}
        self._by_ip: dict[str, _Installed] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def table(self) -> str:
        return self._firewall.table

    def ifname(self, sandbox_id: str) -> str:
        return host_interface(self._tag, sandbox_id)

    def installed(self) -> set[str]:
        return set(self._by_id)

    async def _nft(self, script: str) -> None:
        await nft(script)

    async def apply(self, spec: EgressSpec, *, keep_resolved: KeepResolved | None = None) -> None:
        lock = self._locks.setdefault(spec.sandbox_id, asyncio.Lock())
        async with lock:
            ifname = self.ifname(spec.sandbox_id)
            current = self._by_id.get(spec.sandbox_id)
            if current is not None and current.spec.policy_key() == spec.policy_key():
                return
            salvaged = self._firewall.salvaged
            seed_sent = max(spec.used_bytes, salvaged.get(f"tx_{ifname}", 0))
            seed_received = max(spec.ingress_bytes, salvaged.get(f"rx_{ifname}", 0))
            used_now = seed_sent
            prune: list[Resolved] = []
            if current is not None:
                if keep_resolved is not None and current.spec.domains != spec.domains:
                    prune = await self._stale_resolved(ifname, keep_resolved)
                if await self._replace_sets(current, spec, prune):
                    self._by_id[spec.sandbox_id] = replace(current, spec=spec)
                    self._by_ip[spec.ip] = self._by_id[spec.sandbox_id]
                    return
                if prune and keep_resolved is not None:
                    # Refused, say, for an element that expired since it was listed: the
                    # script would delete it too (and be refused alike), so list again.
                    prune = await self._stale_resolved(ifname, keep_resolved)
                counts = await self.counts(spec.sandbox_id)
                used_now = counts.sent_bytes if counts else seed_sent
            script = apply_script(
                self.table,
                ifname,
                spec,
                used_now=used_now,
                seed_sent=seed_sent,
                seed_received=seed_received,
                prune=prune,
            )
            await self._nft(script)
            if current is not None and current.spec.ip != spec.ip:
                self._by_ip.pop(current.spec.ip, None)
            installed = _Installed(sandbox_id=spec.sandbox_id, ifname=ifname, spec=spec)
            self._by_id[spec.sandbox_id] = installed
            self._by_ip[spec.ip] = installed

    async def _replace_sets(
        self, current: _Installed, spec: EgressSpec, prune: Sequence[Resolved]
    ) -> bool:
        """A new policy for an installed sandbox whose address and quota stay: only set
        elements change, sent straight to the kernel (no libnftables cache to fetch, which
        grows with the table). False, changing nothing, when it cannot be done this way."""
        if (current.spec.ip, current.spec.quota_bytes) != (spec.ip, spec.quota_bytes):
            return False
        messages = policy_batch(self.table, current.ifname, spec,
                                was_open=not current.spec.restricted, prune=prune)  # fmt: skip
        try:
            await batch(messages)
        except NetlinkError as exc:
            # Say a resolved element expired since it was listed: the script path then.
            log.info("replacing %s's sets over netlink failed (%s)", spec.sandbox_id, exc)
            return False
        return True

    async def _stale_resolved(self, ifname: str, keep: KeepResolved) -> list[Resolved]:
        n = _names(ifname)
        stale = []
        for set_name in (n["d"], n["dp"]):
            for element in await self._elements(set_name):
                value, comment = element.get("val"), str(element.get("comment", ""))
                if isinstance(value, dict) and "concat" in value:
                    address, port = value["concat"]
                    if not keep(comment, int(port)):
                        stale.append(Resolved(set_name, str(address), int(port)))
                elif isinstance(value, str) and not keep(comment, None):
                    stale.append(Resolved(set_name, value, None))
        return stale

    async def _elements(self, set_name: str) -> list[dict[str, Any]]:
        listed = await nft_json(f"list set inet {self.table} {set_name}")
        if listed is None:
            return []
        elements: list[dict[str, Any]] = []
        for item in listed.get("nftables", []):
            for element in item.get("set", {}).get("elem", []):
                if isinstance(element, dict) and "elem" in element:
                    elements.append(element["elem"])
                else:
                    elements.append({"val": element})
        return elements

    async def remove(self, sandbox_id: str) -> TrafficCounts | None:
        lock = self._locks.setdefault(sandbox_id, asyncio.Lock())
        async with lock:
            installed = self._by_id.get(sandbox_id)
            if installed is None:
                return None
            sent, received = await asyncio.gather(
                self._counter(f"tx_{installed.ifname}"), self._counter(f"rx_{installed.ifname}")
            )
            counts = None
            if sent is not None and received is not None:
                counts = TrafficCounts(sent_bytes=sent, received_bytes=received)
            try:
                await self._nft(remove_script(self.table, installed.ifname))
            except CommandFailed:
                log.warning("removing the egress policy of %s failed", sandbox_id, exc_info=True)
            self._by_id.pop(sandbox_id, None)
            if self._by_ip.get(installed.spec.ip) is installed:
                self._by_ip.pop(installed.spec.ip, None)
            self._locks.pop(sandbox_id, None)
            return counts

    async def counts(self, sandbox_id: str) -> TrafficCounts | None:
        ifname = self.ifname(sandbox_id)
        sent, received, capped = await asyncio.gather(
            self._counter(f"tx_{ifname}"), self._counter(f"rx_{ifname}"), self._capped(ifname)
        )
        if sent is None or received is None:
            return None
        return TrafficCounts(sent_bytes=sent, received_bytes=received, capped=capped)

    async def _capped(self, ifname: str) -> bool:
        """Whether the meter's quota has run out (the packet that would cross it was refused,
        so the counter alone stays just below the quota)."""
        try:
            quota = await read_quota(self.table, f"q_{ifname}")
        except NetlinkError:
            log.warning("reading the quota of %s failed", ifname, exc_info=True)
            return False
        return quota is not None and (quota.depleted or quota.consumed_bytes >= quota.limit_bytes)

    async def _counter(self, name: str) -> int | None:
        try:
            return await read_counter(self.table, name)
        except NetlinkError:
            log.warning("reading the counter %s failed", name, exc_info=True)
            return None

    async def all_counts(self) -> dict[str, TrafficCounts]:
        found_counters = await read_counters(self.table)
        found = {}
        for sandbox_id, installed in list(self._by_id.items()):
            sent = found_counters.get(f"tx_{installed.ifname}")
            received = found_counters.get(f"rx_{installed.ifname}")
            if sent is not None and received is not None:
                found[sandbox_id] = TrafficCounts(sent_bytes=sent, received_bytes=received)
        return found

    async def allow_resolved(
        self,
        sandbox_ip: str,
        addresses: Iterable[str],
        port: int | None,
        ttl_s: float,
        *,
        name: str = "",
    ) -> bool:
        installed = self._by_ip.get(sandbox_ip)
        if installed is None:
            return False
        good = sorted({str(a) for a in addresses if is_ipv4(a)})
        if not good:
            return True
        ttl = max(int(ttl_s), MIN_RESOLVED_TTL_S)
        set_name, keys = resolved_elements(installed.ifname, good, port)
        # Straight to the kernel (NetlinkError if refused): the answer is waiting for it.
        await add_timed_elements(self.table, set_name, keys, ttl * 1000, name.replace('"', ""))
        return True


async def read_counters(table: str) -> dict[str, int]:
    """Every named counter of ``inet table``, by name (bytes); empty when there is none
    (or when the kernel would not say)."""
    try:
        return await counters(table)
    except NetlinkError:
        log.warning("reading the counters of %s failed", table, exc_info=True)
        return {}


def is_ipv4(address: object) -> bool:
    """Whether ``address`` (or its string) is an IPv4 address."""
    try:
        IPv4Address(str(address))
    except ValueError:
        return False
    return True


class FakeEgress(EgressLayer):
    """Bookkeeping only, for the fake driver (its sandboxes share the host's network)."""

    def __init__(self) -> None:
        self.specs: dict[str, EgressSpec] = {}
        self.resolved: dict[str, set[tuple[str, int | None]]] = {}

    def installed(self) -> set[str]:
        return set(self.specs)

    async def apply(self, spec: EgressSpec, *, keep_resolved: KeepResolved | None = None) -> None:
        self.specs[spec.sandbox_id] = spec

    async def remove(self, sandbox_id: str) -> TrafficCounts | None:
        counts = await self.counts(sandbox_id)
        self.specs.pop(sandbox_id, None)
        return counts

    async def counts(self, sandbox_id: str) -> TrafficCounts | None:
        spec = self.specs.get(sandbox_id)
        if spec is None:
            return None
        return TrafficCounts(sent_bytes=spec.used_bytes, received_bytes=spec.ingress_bytes)

    async def all_counts(self) -> dict[str, TrafficCounts]:
        return {sid: c for sid in self.specs if (c := await self.counts(sid)) is not None}

    async def allow_resolved(
        self,
        sandbox_ip: str,
        addresses: Iterable[str],
        port: int | None,
        ttl_s: float,
        *,
        name: str = "",
    ) -> bool:
        spec = next((s for s in self.specs.values() if s.ip == sandbox_ip), None)
        if spec is None:
            return False
        entries = self.resolved.setdefault(spec.sandbox_id, set())
        entries.update((str(a), port) for a in addresses if is_ipv4(a))
        return True
