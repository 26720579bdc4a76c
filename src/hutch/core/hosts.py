"""The hosts of the cluster, as users see them in ``/v1/hosts``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from hutch.core.sandbox_status import LIVE_STATUSES
from hutch.store import hosts as host_store
from hutch.store import sandboxes as sandbox_store
from hutch.store.db import Database
from hutch.store.models import utcnow

__all__ = ["HostService", "HostView"]


@dataclass(frozen=True, kw_only=True)
class HostView:
    id: str
    status: str
    free_mib: int
    vm_count: int
    rootfses: list[str]
    runtimes: list[str]
    labels: dict[str, str]
    address: str | None


class HostService:
    def __init__(self, db: Database, *, dead_after_s: float) -> None:
        self._db = db
        self._dead_after = timedelta(seconds=dead_after_s)

    async def built_rootfses(self) -> set[str]:
        """Images built on at least one host that is not dead."""
        now = utcnow()
        async with self._db.sessions() as session:
            hosts = await host_store.list_hosts(session, limit=None, offset=0)
        return {
            name
            for host in hosts
            if host.status != "dead" and now - host.heartbeat_at <= self._dead_after
            for name in host.rootfses
        }

    async def list(self, *, limit: int | None, offset: int) -> tuple[list[HostView], int]:
        """A page of hosts and the total count. A host that stopped heartbeating is ``dead``.

        ``vm_count`` counts every sandbox that occupies the host (running, paused or in
        between), since each holds memory there.
        """
        now = utcnow()
        async with self._db.sessions() as session:
            hosts = await host_store.list_hosts(session, limit=limit, offset=offset)
            total = await host_store.count_hosts(session)
            counts = await sandbox_store.count_on_hosts(session, LIVE_STATUSES)
        views = [
            HostView(
                id=host.id,
                status="dead" if now - host.heartbeat_at > self._dead_after else host.status,
                free_mib=host.free_mib,
                vm_count=counts.get(host.id, 0),
                rootfses=list(host.rootfses),
                runtimes=list(host.runtimes or []),
                labels=dict(host.labels or {}),
                address=host.address,
            )
            for host in hosts
        ]
        return views, total
