"""The statuses a sandbox moves through, and how they group for counts and caps."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["LIVE_STATUSES", "TERMINAL_STATUSES", "SandboxStatus"]


class SandboxStatus(StrEnum):
    CREATING = "creating"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    RESUMING = "resuming"
    FORKING = "forking"
    ERROR = "error"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"
    FAILED = "failed"


TERMINAL_STATUSES: frozenset[SandboxStatus] = frozenset(
    {SandboxStatus.DESTROYED, SandboxStatus.FAILED}
)
"""A sandbox in one of these is gone from its host for good."""

LIVE_STATUSES: tuple[SandboxStatus, ...] = tuple(
    s for s in SandboxStatus if s not in TERMINAL_STATUSES
)
"""Every status in which a sandbox still occupies its host."""
