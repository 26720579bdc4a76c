"""The egress layer of a runc host: each sandbox's policy and meter in the firewall's
nftables table (:mod:`hutch.host.egress` says how the chains and sets are laid out)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from hutch.host.egress import (
    MIN_RESOLVED_TTL_S,
    EgressLayer,
    EgressSpec,
    KeepResolved,
    TrafficCounts,
    is_ipv4,
)
from hutch.host.egress_rules import (
    Resolved,
    _names,
    apply_script,
    policy_batch,
    remove_script,
    resolved_elements,
)
from hutch.host.firewall import Firewall
from hutch.host.link import host_interface
from hutch.host.nfnetlink import (
    NetlinkError,
    add_timed_elements,
    batch,
    counters,
    read_counter,
    read_quota,
)
from hutch.host.nft import nft, nft_json
from hutch.host.proc import CommandFailed

__all__ = ["EgressFirewall", "read_counters"]

log = logging.getLogger(__name__)


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
