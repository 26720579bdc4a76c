"""Sandboxes: create, find, change, pause, resume and destroy them, and recover after a crash.

The store is the record of what users asked for; the host agent's driver is what really
runs. Every status change is written before the step that follows it, so a control plane
killed at any point finds, at its next start, enough to finish or undo what it was doing
(:meth:`SandboxService.recover`). Operations on one sandbox are serialised by a lock.
"""

from __future__ import annotations

from hutch.core.errors import InvalidInput, NotFound
from hutch.core.identity import Principal
from hutch.core.sandbox_exec import SandboxExec
from hutch.core.sandbox_fork import SandboxForks
from hutch.core.sandbox_move import SandboxMoves
from hutch.core.sandbox_recovery import SandboxRecovery
from hutch.core.sandbox_requests import (
    ExecCommand,
    ExecResult,
    ForkOptions,
    SandboxCreate,
    SandboxPatch,
    Spawned,
    Transition,
)
from hutch.core.sandbox_resize import SandboxResize
from hutch.core.sandbox_snapshot import SandboxSnapshot
from hutch.core.sandbox_status import SandboxStatus as S
from hutch.core.sandbox_wake import SandboxWake
from hutch.store import sandboxes as store
from hutch.store.models import SandboxRecord

__all__ = [
    "ExecCommand",
    "ExecResult",
    "ForkOptions",
    "SandboxCreate",
    "SandboxPatch",
    "SandboxService",
    "Spawned",
    "Transition",
]


class SandboxService(
    SandboxRecovery,
    SandboxForks,
    SandboxWake,
    SandboxMoves,
    SandboxExec,
    SandboxResize,
    SandboxSnapshot,
):
    """Every operation on sandboxes. Its parts live in their own modules: the shared state
    (:mod:`~hutch.core.sandbox_base`), lifecycle (:mod:`~hutch.core.sandbox_lifecycle`), exec
    and files (:mod:`~hutch.core.sandbox_exec`), recovery and monitoring
    (:mod:`~hutch.core.sandbox_recovery`), disk growth (:mod:`~hutch.core.sandbox_resize`),
    snapshots (:mod:`~hutch.core.sandbox_snapshot`), wake on traffic
    (:mod:`~hutch.core.sandbox_wake`), moves between hosts
    (:mod:`~hutch.core.sandbox_move`); the reading of lists is here."""

    async def get_by_ip(self, user: Principal, ip: str) -> SandboxRecord:
        async with self._db.sessions() as session:
            record = await store.find_by_ip(session, user.user_id, ip)
        if record is None:
            raise NotFound(f"no sandbox of yours has the address {ip}", field="ip")
        return record

    async def list_sandboxes(
        self, user: Principal, *, status: str | None, limit: int, offset: int
    ) -> tuple[list[SandboxRecord], int]:
        statuses = None
        if status:
            statuses = [part.strip() for part in status.split(",") if part.strip()]
            unknown = [s for s in statuses if s not in S.__members__.values()]
            if unknown:
                known = ", ".join(s.value for s in S)
                raise InvalidInput(f"unknown status {unknown[0]!r}; one of {known}", field="status")
        async with self._db.sessions() as session:
            records, total = await store.list_for_user(
                session, user.user_id, statuses=statuses, limit=limit, offset=offset
            )
        return list(records), total
