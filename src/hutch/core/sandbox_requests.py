"""What callers ask of sandboxes: the option objects, and the checks they share."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hutch.core.disks import DiskRef
from hutch.core.errors import InvalidInput

__all__ = [
    "ENV_KEY",
    "MAX_AUTO_PAUSE_S",
    "MAX_DISK_MIB",
    "MAX_PATH",
    "MIN_DISK_MIB",
    "ExecCommand",
    "ExecResult",
    "SandboxCreate",
    "SandboxPatch",
    "Spawned",
    "check_env",
]


ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
MIN_DISK_MIB = 256
MAX_DISK_MIB = 1024 * 1024
MAX_AUTO_PAUSE_S = 30 * 24 * 3600
MAX_PATH = 4096


@dataclass(frozen=True, kw_only=True)
class SandboxCreate:
    shape: str
    rootfs: str | None = None
    name: str | None = None
    disk_mib: int | None = None
    envs: Mapping[str, str] = field(default_factory=dict)
    egress: Sequence[str] = ()
    ingress_enabled: bool = False
    auto_pause_after_seconds: int | None = None
    host_id: str | None = None
    networks: Sequence[str] = ()
    disks: Sequence[DiskRef] = ()
    timeout_s: float | None = None
    """Destroy the sandbox this long after it starts (None: it lives until deleted)."""


@dataclass(frozen=True, kw_only=True)
class Spawned:
    """A background process: its handle, its pid inside, and where its output goes."""

    id: str
    pid: int
    log_path: str


@dataclass(frozen=True, kw_only=True)
class SandboxPatch:
    """Fields to change; those left None stay as they are."""

    name: str | None = None
    auto_pause_after_seconds: int | None = None
    ingress_enabled: bool | None = None


@dataclass(frozen=True, kw_only=True)
class ExecCommand:
    cmd: str
    args: Sequence[str] | None = None
    stdin: bytes | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout_s: float | None = None

    @property
    def argv(self) -> list[str]:
        """With ``args``, run ``cmd`` itself; without, run ``cmd`` as a shell command line."""
        if self.args is None:
            return ["/bin/sh", "-c", self.cmd]
        return [self.cmd, *self.args]


@dataclass(frozen=True, kw_only=True)
class ExecResult:
    stdout: str
    stderr: str
    exit_code: int | None
    error: str | None
    exec_ms: int


def check_env(env: Mapping[str, str], *, field: str) -> None:
    for key, value in env.items():
        if not ENV_KEY.fullmatch(key):
            raise InvalidInput(f"env name {key[:64]!r} is not a valid variable name", field=field)
        if "\0" in value:
            raise InvalidInput(f"env {key} contains a NUL byte", field=field)
