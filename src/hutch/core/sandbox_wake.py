"""Wake on traffic: a paused sandbox with ``auto_resume`` resumed for a request to one of
its preview or ingress URLs (the proxy holds the request meanwhile, :mod:`hutch.core.previews`).
Exec, files and processes wake it through :meth:`SandboxLifecycle._auto_resume` instead."""

from __future__ import annotations

import logging

from hutch.core.errors import Conflict
from hutch.core.identity import Principal
from hutch.core.sandbox_lifecycle import SandboxLifecycle
from hutch.core.sandbox_status import SandboxStatus as S
from hutch.store import sandboxes as store
from hutch.store.models import SandboxRecord

__all__ = ["SandboxWake"]

log = logging.getLogger(__name__)


class SandboxWake(SandboxLifecycle):
    async def wakes_on_traffic(self, sandbox_id: str) -> bool:
        """Whether a request to the sandbox's previews is to wake it: it is pausing or
        paused, with ``auto_resume``."""
        record = await self._load(sandbox_id)
        return bool(record.auto_resume) and record.status in (S.PAUSING, S.PAUSED)

    async def wake_for_traffic(self, sandbox_id: str) -> None:
        """Resume the sandbox for a request to its previews, on its owner's behalf (the
        owner's running cap applies). Raises :class:`Conflict` when it does not wake on
        traffic, and what a resume raises when it cannot be resumed."""
        record = await self._load(sandbox_id)
        if record.status == S.RUNNING:
            return
        if not record.auto_resume:
            raise Conflict(f"sandbox {record.name} is {record.status} and does not wake on "
                           "traffic (auto_resume is off)", field="status")  # fmt: skip
        log.info("waking %s for a preview request (auto_resume)", sandbox_id)
        owner = Principal(user_id=record.user_id, user_name="", is_admin=False, key_id="")
        await self.resume_transition(owner, sandbox_id)

    async def paused_waking(self) -> list[SandboxRecord]:
        """This host's paused sandboxes that wake on traffic (their ingress is routed,
        asleep, at a start)."""
        async with self._db.sessions() as session:
            records = await store.live_on_host(session, self._host.host_id)
        return [r for r in records if r.status == S.PAUSED and r.auto_resume]
