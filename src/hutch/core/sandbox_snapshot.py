"""Taking a running sandbox's filesystem for a snapshot (the templates' snapshot route,
:mod:`hutch.core.snapshots`): under the sandbox's lock, so it is not paused, resumed or
destroyed meanwhile, and with the driver freezing it only while its layer is copied."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from hutch.core.errors import Conflict, Unavailable
from hutch.core.identity import Principal
from hutch.core.sandbox_base import SandboxBase
from hutch.core.sandbox_status import SandboxStatus as S
from hutch.host.drivers.base import DriverError, SandboxMissing
from hutch.host.snapshot import CapturedLayer
from hutch.store.models import SandboxRecord

__all__ = ["SandboxSnapshot"]


class SandboxSnapshot(SandboxBase):
    @asynccontextmanager
    async def captured_layer(
        self, user: Principal, ident: str
    ) -> AsyncIterator[tuple[SandboxRecord, CapturedLayer]]:
        """The sandbox's record and a copy of its writable layer as it is now, for the
        block. The sandbox keeps running (paused stays paused). Raises NotFound,
        :class:`Conflict` unless it is running or paused, :class:`Unavailable` when the
        host could not copy it (the sandbox is as it was)."""
        record = await self.get(user, ident)
        async with self._sandbox_locks[record.id]:
            record = await self._load(record.id)
            if record.status not in (S.RUNNING, S.PAUSED):
                raise Conflict(
                    f"sandbox is {record.status}; only a running or paused sandbox can be snapshot",
                    field="status",
                )
            try:
                async with self._host.driver.capture_layer(record.id) as captured:
                    yield record, captured
            except SandboxMissing as exc:
                raise Conflict(f"the sandbox is not on its host: {exc}", field="status") from exc
            except DriverError as exc:
                raise Unavailable(f"{exc}; the sandbox runs on as it was") from exc
