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

This module is the interface (:class:`EgressLayer`, its spec and counts, the fake
driver's bookkeeping); the scripts and netlink messages are :mod:`hutch.host.egress_rules`,
the nftables layer of a runc host :mod:`hutch.host.egress_firewall`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

__all__ = [
    "MIN_RESOLVED_TTL_S",
    "EgressLayer",
    "EgressSpec",
    "FakeEgress",
    "KeepResolved",
    "TrafficCounts",
    "is_ipv4",
]


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
