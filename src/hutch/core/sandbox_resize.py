"""Growing a sandbox's writable disk while it runs (CREATEOS-API.md §3.8)."""

from __future__ import annotations

from hutch.core.errors import Conflict, InvalidInput, Unavailable
from hutch.core.identity import Principal
from hutch.core.sandbox_base import SandboxBase
from hutch.core.sandbox_status import SandboxStatus as S
from hutch.host.drivers.base import DriverError, SandboxMissing
from hutch.store.models import SandboxRecord

__all__ = ["SandboxResize"]


class SandboxResize(SandboxBase):
    async def resize(self, user: Principal, ident: str, disk_mib: int) -> SandboxRecord:
        """Grow the sandbox's disk to ``disk_mib`` MiB in place, running or paused: no
        restart, and the space shows inside at once. The stored size changes only once the
        disk has grown.

        Raises :class:`InvalidInput` when ``disk_mib`` is not larger than the disk or is over
        ``HUTCH_MAX_DISK_MIB``, :class:`Conflict` when the sandbox is neither running nor
        paused, :class:`Unavailable` when the host could not grow it (nothing changed then).
        """
        record = await self.get(user, ident)
        async with self._sandbox_locks[record.id]:
            record = await self._load(record.id)
            if disk_mib <= record.disk_mib:
                raise InvalidInput(
                    f"disk_mib must be larger than the disk's {record.disk_mib} MiB; "
                    "a disk only grows",
                    field="disk_mib",
                )
            maximum = self._settings.max_disk_mib
            if disk_mib > maximum:
                raise InvalidInput(
                    f"disk_mib may be at most {maximum} (HUTCH_MAX_DISK_MIB)", field="disk_mib"
                )
            if record.status not in (S.RUNNING, S.PAUSED):
                raise Conflict(
                    f"sandbox is {record.status}; only a running or paused sandbox's disk can grow",
                    field="status",
                )
            try:
                await self._host.driver.resize_disk(record.id, disk_mib)
            except SandboxMissing as exc:
                raise Conflict(f"the sandbox is not on its host: {exc}", field="status") from exc
            except DriverError as exc:
                raise Unavailable(
                    f"{exc}; the disk keeps its {record.disk_mib} MiB and every file"
                ) from exc
            return await self._update(record.id, disk_mib=disk_mib)
