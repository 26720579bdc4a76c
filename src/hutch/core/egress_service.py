"""Sandboxes' egress policies and bandwidth: the store's record, the kernel's enforcement.

A sandbox's rules (``egress``) and quota (``bandwidth_quota_bytes``) live in its record;
whenever it runs here, :class:`EgressService` keeps the host's egress layer
(:mod:`hutch.host.egress`) in step with them: installed while it is created (the creating
listener, beside the driver's start, so before its first packet), when it resumes and
after a restart of hutch (the running listener, which ``announce_running`` calls for each
at a start), replaced live by a PUT or a recharge, removed when it pauses, fails or
is destroyed (the stop listener), its last counts written to the store first. The kernel
counters are written to the store every ``bandwidth_flush_interval_s`` and at shutdown.

:meth:`EgressService.policy_for_ip` is the DNS server's question "what may the sandbox at
this link address reach?", answered from memory; :meth:`EgressService.allow_resolved` puts
an answer's addresses in the kernel, under the sandbox's lock and checked against the rules
then in force (a lookup the old rules allowed, answered after a PUT removed them, adds
nothing the PUT's pruning would miss).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hutch.core.egress import DenySet, EgressPolicy, parse_rules
from hutch.core.errors import Conflict, InvalidInput, Unavailable
from hutch.core.identity import Principal
from hutch.core.sandbox_status import SandboxStatus as S
from hutch.core.sandboxes import SandboxService
from hutch.host.egress import EgressLayer, EgressSpec, TrafficCounts
from hutch.host.proc import CommandFailed
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.models import SandboxRecord

__all__ = ["BandwidthView", "EgressService"]

log = logging.getLogger(__name__)

_TERMINAL = (S.DESTROYED, S.FAILED, S.DESTROYING)
MAX_RECHARGE_BYTES = 1 << 50
MAX_QUOTA_BYTES = (1 << 63) - 1
"""The largest quota the store holds (a signed 64-bit column)."""


@dataclass(frozen=True, kw_only=True)
class BandwidthView:
    id: str
    quota_bytes: int
    used_bytes: int
    ingress_bytes: int
    capped: bool
    """Outbound internet traffic is being refused: the quota ran out (the packet that
    would have crossed it was refused, so ``used_bytes`` may stay just below it)."""

    @property
    def remaining_bytes(self) -> int:
        """Quota minus use (can go below zero by what was in flight); -1 if unmetered."""
        return -1 if self.quota_bytes < 0 else self.quota_bytes - self.used_bytes


class EgressService:
    def __init__(
        self, settings: Settings, db: Database, sandboxes: SandboxService, layer: EgressLayer
    ) -> None:
        self._settings = settings
        self._db = db
        self._sandboxes = sandboxes
        self._layer = layer
        self._deny: DenySet = settings.deny_set
        self._policies: dict[str, EgressPolicy] = {}  # link address -> policy
        self._ips: dict[str, str] = {}  # sandbox id -> link address
        self._at_ip: dict[str, str] = {}  # link address -> sandbox id
        self._locks: dict[str, asyncio.Lock] = {}
        sandboxes.on_creating(self._created)
        sandboxes.on_running(self._running)
        sandboxes.on_stop(self._stopped)

    @property
    def layer(self) -> EgressLayer:
        """The host's egress layer."""
        return self._layer

    def parse(self, rules: Sequence[str] | None) -> EgressPolicy:
        return parse_rules(
            rules, deny=self._deny, default_closed=self._settings.egress_default == "closed"
        )

    def policy_for_ip(self, ip: str) -> EgressPolicy | None:
        """The policy of the sandbox whose link address is ``ip`` while it runs here; None
        for any other address. From memory: cheap enough for every DNS query."""
        return self._policies.get(ip)

    async def allow_resolved(
        self,
        sandbox_ip: str,
        addresses: Iterable[str],
        port: int | None,
        ttl_s: float,
        *,
        name: str = "",
    ) -> bool:
        """The layer's ``allow_resolved`` (the DNS server's), under the sandbox's lock and
        only for what its rules allow now: the DNS server read the policy when the query
        came, and a PUT may have replaced it (and pruned the sets) while the upstream
        answered. Added after that, an address of a name no rule allows any more would stay
        allowed for as long as the upstream's TTL said. False: no sandbox with a policy at
        ``sandbox_ip``; True with nothing added when the rules allow no more on ``port``."""
        sandbox_id = self._at_ip.get(sandbox_ip)
        if sandbox_id is None:
            return False
        async with self._lock(sandbox_id):
            policy = self._policies.get(sandbox_ip)
            if policy is None or self._ips.get(sandbox_id) != sandbox_ip:
                return False
            if not policy.restricted:
                return True  # open: every address passes already
            ports = policy.ports_for(name)
            if ports is None or (port not in ports and None not in ports):
                return True
            return await self._layer.allow_resolved(sandbox_ip, addresses, port, ttl_s, name=name)

    # -- keeping the kernel in step -----------------------------------------------------

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    @contextlib.asynccontextmanager
    async def _live_record(self, record: SandboxRecord) -> AsyncIterator[SandboxRecord]:
        """The sandbox's stored record, in a transaction that commits what the block
        changes (nothing if it raises); :class:`Conflict` once the sandbox is gone."""
        async with self._db.sessions.begin() as session:
            current = await session.get(SandboxRecord, record.id)
            if current is None or current.status in _TERMINAL:
                status = record.status if current is None else current.status
                raise Conflict(f"sandbox is {status}", field="status")
            yield current

    def _spec(self, record: SandboxRecord, policy: EgressPolicy) -> EgressSpec:
        return EgressSpec(
            sandbox_id=record.id,
            ip=record.ip or "",
            restricted=policy.restricted,
            networks=policy.networks,
            domains=tuple(rule.text for rule in policy.domain_rules),
            quota_bytes=record.bandwidth_quota_bytes,
            used_bytes=record.bandwidth_used_bytes,
            ingress_bytes=record.bandwidth_ingress_bytes,
        )

    async def _install(self, record: SandboxRecord, *, replace: bool = False) -> None:
        try:
            policy = self.parse(record.egress)
        except InvalidInput:
            # Stored before the rules were checked (or the deny set grew): nothing passes.
            log.warning("sandbox %s has egress rules that are no longer valid", record.id)
            policy = EgressPolicy(restricted=True)
        keep = None
        if replace:

            def keep(name: str, port: int | None) -> bool:
                ports = policy.ports_for(name) if name else None
                return ports is not None and (None in ports or port in ports)

        await self._layer.apply(self._spec(record, policy), keep_resolved=keep)
        if record.ip:
            self._policies[record.ip] = policy
            self._ips[record.id] = record.ip
            self._at_ip[record.ip] = record.id

    async def _created(self, record: SandboxRecord) -> None:
        # Before the sandbox's first packet, beside the driver's start; the running
        # listener then finds it installed (and does nothing).
        if record.ip:
            async with self._lock(record.id):
                await self._install(record)

    async def _running(self, record: SandboxRecord) -> None:
        if record.status != S.RUNNING or not record.ip:
            return
        async with self._lock(record.id):
            await self._install(record)

    async def _stopped(self, sandbox_id: str) -> None:
        async with self._lock(sandbox_id):
            ip = self._ips.pop(sandbox_id, None)
            if ip is not None:
                self._policies.pop(ip, None)
                if self._at_ip.get(ip) == sandbox_id:
                    del self._at_ip[ip]
            counts = await self._layer.remove(sandbox_id)
            if counts is not None:
                await self._save({sandbox_id: counts})
        self._locks.pop(sandbox_id, None)

    async def _save(self, counts: dict[str, TrafficCounts]) -> None:
        """Store ``counts``, never below what is stored: the kernel's counters start from
        the store's and only grow, so a lower count is an older read (a flush that read the
        kernel before a stop saved the last counts) and would give those bytes back."""
        # Nothing sent or received: no count can be above the stored one (never below 0),
        # and an UPDATE that changes nothing still takes SQLite's write lock (every delete
        # of a sandbox that sent nothing wrote here).
        counts = {sid: c for sid, c in counts.items() if c.sent_bytes > 0 or c.received_bytes > 0}
        if counts:
            # In one go on the store's writer (:meth:`Database.write`): through the async
            # session the write lock was held across the event loop's turns (~120 ms each
            # under the 20-client load, the longest holder of the lock).
            await self._db.write(lambda session: _save_counts(session, counts))

    async def flush(self) -> None:
        """Write every installed sandbox's counters to the store (those that moved)."""
        counts = await self._layer.all_counts()
        if not counts:
            return
        async with self._db.sessions() as session:
            rows = await session.execute(
                select(
                    SandboxRecord.id,
                    SandboxRecord.bandwidth_used_bytes,
                    SandboxRecord.bandwidth_ingress_bytes,
                ).where(SandboxRecord.id.in_(list(counts)))
            )
            stored = {sid: (used, received) for sid, used, received in rows}
        moved = {
            sid: count
            for sid, count in counts.items()
            if sid in stored and stored[sid] != (count.sent_bytes, count.received_bytes)
        }
        if moved:
            await self._save(moved)

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.bandwidth_flush_interval_s)
            try:
                await self.flush()
            except Exception:
                log.warning("saving the bandwidth counters failed; will retry", exc_info=True)

    async def stop(self) -> None:
        """Save the counters one last time (the policies stay in the kernel until the next
        start replaces the table: a stopped hutch does not open its sandboxes)."""
        with contextlib.suppress(Exception):
            await self.flush()

    # -- the API --------------------------------------------------------------------------

    async def get(self, user: Principal, ident: str) -> SandboxRecord:
        return await self._sandboxes.get(user, ident)

    async def replace(
        self, user: Principal, ident: str, rules: Sequence[str] | None
    ) -> SandboxRecord:
        """Check and store ``rules``; if the sandbox runs here, enforce them at once (new
        connections follow them, open ones to places now refused are cut)."""
        policy = self.parse(rules)
        record = await self._sandboxes.get(user, ident)
        async with self._lock(record.id):
            async with self._live_record(record) as record:
                before = record.egress
                record.egress = [rule.text for rule in policy.rules]
            if record.status == S.RUNNING and record.id in self._ips:
                try:
                    await self._install(record, replace=True)
                except CommandFailed as exc:
                    # The kernel kept the old policy (one transaction): so does the store.
                    log.error("applying egress rules to %s failed: %s", record.id, exc.detail)
                    async with self._live_record(record) as record:
                        record.egress = before
                    raise Conflict(
                        "the new rules could not be applied; the old ones stay; try again"
                    ) from exc
        return record

    async def bandwidth(self, user: Principal, ident: str) -> BandwidthView:
        record = await self._sandboxes.get(user, ident)
        return await self._view(record)

    async def _view(self, record: SandboxRecord) -> BandwidthView:
        counts = None
        if record.id in self._ips:
            counts = await self._layer.counts(record.id)
        quota = record.bandwidth_quota_bytes
        used, received = record.bandwidth_used_bytes, record.bandwidth_ingress_bytes
        capped = quota >= 0 and used >= quota
        if counts is not None:
            used, received = max(used, counts.sent_bytes), max(received, counts.received_bytes)
            capped = quota >= 0 and (counts.capped or used >= quota)
        return BandwidthView(
            id=record.id, quota_bytes=quota, used_bytes=used, ingress_bytes=received, capped=capped
        )

    async def recharge(self, user: Principal, ident: str, add_bytes: int) -> BandwidthView:
        """Add ``add_bytes`` to the quota (a no-op on an unmetered sandbox); a capped
        sandbox's traffic flows again as soon as this returns."""
        if not 0 < add_bytes <= MAX_RECHARGE_BYTES:
            raise InvalidInput(
                f"add_bytes must be a positive number of bytes up to {MAX_RECHARGE_BYTES}",
                field="add_bytes",
            )
        record = await self._sandboxes.get(user, ident)
        async with self._lock(record.id):
            async with self._live_record(record) as record:
                if record.bandwidth_quota_bytes >= 0:
                    if record.bandwidth_quota_bytes + add_bytes > MAX_QUOTA_BYTES:
                        raise InvalidInput(
                            f"add_bytes would take the quota over {MAX_QUOTA_BYTES} bytes",
                            field="add_bytes",
                        )
                    record.bandwidth_quota_bytes += add_bytes
            if record.status == S.RUNNING and record.id in self._ips:
                try:
                    await self._install(record)
                except CommandFailed as exc:
                    # The kernel kept the old quota (one transaction): so does the store.
                    log.error("recharging %s failed: %s", record.id, exc.detail)
                    async with self._live_record(record) as record:
                        if record.bandwidth_quota_bytes >= 0:
                            record.bandwidth_quota_bytes -= add_bytes
                    raise Unavailable(
                        "the recharge could not be applied and was not made; try again"
                    ) from exc
        return await self._view(record)


def _save_counts(session: Session, counts: dict[str, TrafficCounts]) -> None:
    # Conditional UPDATEs, not a read then a write: two saves at once (a flush and a
    # stop) must not undo each other either.
    for sandbox_id, count in counts.items():
        for column, value in ((SandboxRecord.bandwidth_used_bytes, count.sent_bytes),
                              (SandboxRecord.bandwidth_ingress_bytes,
                               count.received_bytes)):  # fmt: skip
            session.execute(
                update(SandboxRecord)
                .where(SandboxRecord.id == sandbox_id, column < value)
                .values({column: value})
            )
