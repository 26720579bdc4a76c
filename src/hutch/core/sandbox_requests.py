"""What callers ask of sandboxes: the option objects, and the checks they share."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hutch.core.disks import DiskRef
from hutch.core.errors import InvalidInput
from hutch.store.models import SandboxRecord

__all__ = [
    "ENV_KEY",
    "MAX_AUTO_PAUSE_S",
    "MAX_ENVS",
    "MAX_ENVS_BYTES",
    "MAX_ENV_VALUE_BYTES",
    "MAX_PATH",
    "MIN_DISK_MIB",
    "ExecCommand",
    "ExecResult",
    "ForkOptions",
    "SandboxCreate",
    "SandboxPatch",
    "Spawned",
    "Transition",
    "check_env",
    "check_envs",
]


ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
MIN_DISK_MIB = 256
MAX_AUTO_PAUSE_S = 24 * 3600
MAX_PATH = 4096
# CreateOS's limits on a sandbox's envs (values are UTF-8 bytes; the total counts names too).
MAX_ENVS = 64
MAX_ENV_VALUE_BYTES = 4096
MAX_ENVS_BYTES = 64 * 1024


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
    """Must name this host if given (hutch runs one host per control plane)."""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    """Placement labels the host must carry (``HUTCH_HOST_LABELS``)."""
    region: str | None = None
    """Must be this deployment's region if given."""
    ssh_pubkeys: Sequence[str] = ()
    """OpenSSH public keys; normalised and deduplicated (:mod:`hutch.core.sshkeys`)."""
    bandwidth_quota_bytes: int | None = None
    """CreateOS refuses a quota at create (the deployment's default applies): non-zero is a
    400; it is accepted only as 0 or absent."""
    networks: Sequence[str] = ()
    disks: Sequence[DiskRef] = ()
    timeout_s: float | None = None
    """Destroy the sandbox this long after it starts (None: it lives until deleted)."""
    runtime: str | None = None
    """``runc`` or ``gvisor``; None: ``HUTCH_DEFAULT_RUNTIME``."""
    auto_resume: bool = False
    """Resume it when an exec, a file or a process request finds it paused."""
    build_of: str | None = None
    """Set by the template builder (never from a request body): the template this sandbox
    builds. It is then the platform's: hidden from its owner's list and reads, and not
    counted toward the owner's running cap (builds have their own,
    ``HUTCH_TEMPLATE_BUILDS_PER_USER``)."""


@dataclass(frozen=True, kw_only=True)
class ForkOptions:
    """A fork's overrides; a field left None is inherited from the source."""

    start_paused: bool = False
    ssh_pubkeys: Sequence[str] | None = None
    egress: Sequence[str] | None = None
    ingress_enabled: bool | None = None
    envs: Mapping[str, str] | None = None
    bandwidth_quota_bytes: int | None = None


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
    disable_auto_pause: bool = False
    """Turn auto-pause off (an absent ``auto_pause_after_seconds`` means "unchanged")."""
    ingress_enabled: bool | None = None
    auto_resume: bool | None = None


@dataclass(frozen=True, kw_only=True)
class Transition:
    """A lifecycle step's outcome: the sandbox, and whether the step changed its status
    (False: it was already where the step leads, an idempotent no-op)."""

    record: SandboxRecord
    happened: bool


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


def check_envs(envs: Mapping[str, str], *, field: str = "envs") -> None:
    """A sandbox's envs: valid names, and within CreateOS's count and size limits."""
    check_env(envs, field=field)
    if len(envs) > MAX_ENVS:
        raise InvalidInput(f"at most {MAX_ENVS} envs (got {len(envs)})", field=field)
    total = 0
    for key, value in envs.items():
        size = len(value.encode())
        if size > MAX_ENV_VALUE_BYTES:
            raise InvalidInput(
                f"env {key} is {size} bytes; a value is at most {MAX_ENV_VALUE_BYTES}", field=field
            )
        total += len(key.encode()) + size
    if total > MAX_ENVS_BYTES:
        raise InvalidInput(
            f"envs are {total} bytes together; at most {MAX_ENVS_BYTES}", field=field
        )
