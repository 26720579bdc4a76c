"""The driver interface: what every way of running a sandbox promises.

A driver runs sandboxes on one host. The contract, checked for every driver by one
conformance suite (``tests/integration/test_driver_conformance.py``):

- ``create`` is all-or-nothing. It returns once the sandbox's guest agent answers; if it
  raises, nothing of the sandbox is left on the host (no mount, netns, cgroup, process).
- ``destroy`` removes everything of a sandbox. Destroying a missing sandbox succeeds, so
  it is idempotent and safe to retry after a crash.
- ``pause`` and ``resume`` freeze and thaw every process of the sandbox; repeating either
  is a no-op. On a missing sandbox they raise :class:`SandboxMissing`.
- ``rename`` changes the hostname of a running or paused sandbox: the one its kernel
  reports and the one in its ``/etc/hostname`` and ``/etc/hosts``.
- ``get`` and ``list_sandboxes`` report what really runs on the host, not what was asked for, so
  the host agent can reconcile the store with them after a restart.
- ``resize_disk`` grows the writable disk of a running or paused sandbox in place: no
  restart, programs inside see the new size at once, every file stays. It only grows; a
  size at or below the current one is a :class:`DriverError`. If it raises, the disk keeps
  its old size and its files. ``disk_mib`` reports the size the disk has now.
- ``open_port`` connects to a TCP port inside the sandbox (tunnels, SSH), never to one
  of the host's own.
- ``cleanup`` removes leftovers of sandboxes not in ``keep``: processes, mounts, netns,
  cgroups, state. It is how a host recovers from being killed mid-operation.
- ``hibernate`` (drivers whose capabilities say ``hibernate``) writes every process of a
  running sandbox to a snapshot directory and stops it, so its memory returns to the host;
  its disk stays. ``wake`` starts it again from that snapshot: the same processes carry on.
  A snapshot directory is complete only once ``hibernate`` returned: a failed or cut one is
  never used (the driver writes it elsewhere and renames it into place).
- ``fork`` makes a new sandbox from a paused one: a copy of its disk, and, from a snapshot,
  its processes (``hibernate`` drivers), or a fresh start on the copied files (the others).
"""

from __future__ import annotations

import os
import socket
import tempfile
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING

from hutch.host.guest import GuestClient
from hutch.host.usage import UsageSources

if TYPE_CHECKING:
    from hutch.host.snapshot import CapturedLayer, SnapshotStats

__all__ = [
    "Driver",
    "DriverCapabilities",
    "DriverError",
    "LinkAddress",
    "RuntimeInfo",
    "RuntimeState",
    "SandboxMissing",
    "SandboxSpec",
    "socket_dir",
]


class DriverError(Exception):
    """A driver operation failed; the message says why in words a user can act on."""


class SandboxMissing(DriverError):
    """No sandbox with that id runs on this host."""


@dataclass(frozen=True, kw_only=True)
class LinkAddress:
    """The point-to-point link between the host and a sandbox."""

    network: IPv4Network
    host: IPv4Address
    sandbox: IPv4Address


@dataclass(frozen=True, kw_only=True)
class SandboxSpec:
    id: str
    hostname: str
    rootfs: str
    vcpu: int
    mem_mib: int
    disk_mib: int
    link: LinkAddress
    env: Mapping[str, str] = field(default_factory=dict)
    pids_limit: int = 1024
    runtime: str = "runc"
    """Which driver runs it (``runc`` or ``gvisor``), when the host has several."""
    on_link: Callable[[], Awaitable[None]] | None = field(default=None, compare=False)
    """Called once the sandbox's network namespace exists and before its first process
    starts (drivers whose kernel reads its interfaces only at start join networks here)."""


class RuntimeState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass(frozen=True, kw_only=True)
class RuntimeInfo:
    id: str
    state: RuntimeState
    pid: int | None


@dataclass(frozen=True, kw_only=True)
class DriverCapabilities:
    name: str
    isolated: bool
    """Whether a sandbox is isolated from the host (false only for the fake driver)."""
    disk_limit: bool
    memory_limit: bool
    hibernate: bool = False
    """Whether a pause writes the sandbox's memory to disk and stops it (``hibernate``)."""
    live_networks: bool = True
    """Whether a running sandbox can join or leave a private network (else only at create)."""


class Driver(ABC):
    capabilities: DriverCapabilities

    @abstractmethod
    async def create(self, spec: SandboxSpec) -> RuntimeInfo:
        """Start a sandbox; return once its guest agent answers. All-or-nothing."""

    @abstractmethod
    async def destroy(self, sandbox_id: str) -> None:
        """Remove everything of the sandbox. A missing sandbox is success."""

    @abstractmethod
    async def restart(self, spec: SandboxSpec) -> RuntimeInfo:
        """Start a sandbox whose init died (or that is stuck) again from its disk: files
        stay, processes are gone; return once its guest agent answers. Raises
        :class:`SandboxMissing` if nothing of it is left, :class:`DriverError` if it does
        not start (and then leaves its disk as it was, for another try)."""

    @abstractmethod
    async def get(self, sandbox_id: str) -> RuntimeInfo | None:
        """What runs on the host under this id, or None."""

    @abstractmethod
    async def list_sandboxes(self) -> list[RuntimeInfo]:
        """Every sandbox of this driver on the host, running, paused or stopped."""

    @abstractmethod
    async def pause(self, sandbox_id: str) -> None:
        """Freeze every process. Idempotent. Raises :class:`SandboxMissing`."""

    @abstractmethod
    async def resume(self, sandbox_id: str) -> None:
        """Thaw every process. Idempotent. Raises :class:`SandboxMissing`."""

    @abstractmethod
    async def rename(self, sandbox_id: str, hostname: str) -> None:
        """Give the sandbox a new hostname. Raises :class:`SandboxMissing`."""

    @abstractmethod
    async def cleanup(self, keep: set[str]) -> list[str]:
        """Remove the leftovers of every sandbox not in ``keep``; return what was removed."""

    @abstractmethod
    async def resize_disk(self, sandbox_id: str, disk_mib: int) -> None:
        """Grow the sandbox's writable disk to ``disk_mib`` MiB, online. Raises
        :class:`DriverError` (nothing changed) when that is not larger or the growth fails,
        :class:`SandboxMissing` when the sandbox is not on this host."""

    @abstractmethod
    async def disk_mib(self, sandbox_id: str) -> int:
        """The size of the sandbox's writable disk now, in MiB. Raises :class:`SandboxMissing`."""

    @abstractmethod
    async def open_port(
        self, sandbox_id: str, port: int, *, own_address: str | None = None
    ) -> socket.socket:
        """A TCP connection to ``port`` inside the sandbox, as a program in it would make:
        its loopback first, then ``own_address`` (its address as the store knows it, never
        one read from the sandbox's files) if given. Raises :class:`~hutch.host.ports.PortClosed`
        when nothing accepts there, :class:`SandboxMissing` when the sandbox is gone."""

    async def snapshot(self, sandbox_id: str, build: Path) -> SnapshotStats:
        """Make ``build/rootfs``, an image of the sandbox's filesystem now (its image and
        its writes merged), while it keeps running: frozen at most while its writable
        layer is copied, and never left frozen; a paused sandbox stays paused. ``build``
        must not exist; on failure it is gone again. Raises :class:`SandboxMissing`, or
        :class:`DriverError` (also when this driver cannot snapshot)."""
        raise DriverError(f"the {self.capabilities.name} driver cannot snapshot a sandbox")

    @asynccontextmanager
    async def capture_layer(
        self, sandbox_id: str, *, quiesced: bool = False
    ) -> AsyncIterator[CapturedLayer]:
        """A copy of the sandbox's writable layer as it is now, for the block (removed
        after it), taken while it keeps running: frozen at most while the copy is made, and
        never left frozen; a paused sandbox stays paused. ``quiesced``: the caller has made
        sure nothing in the sandbox writes (the template builder, between steps, after
        killing what a step left running), so it is not frozen. The copy is a lower
        directory in overlayfs's format above the sandbox's image. One at a time per
        sandbox. Raises :class:`SandboxMissing`, or :class:`DriverError` (also when this
        driver cannot)."""
        raise DriverError(f"the {self.capabilities.name} driver cannot snapshot a sandbox")
        yield  # an async generator, for the context manager

    async def hibernate(self, sandbox_id: str, snapshot: Path) -> None:
        """Write the running sandbox to ``snapshot`` (a directory that must not exist; it
        exists, complete, only if this returns) and stop it; its disk and network stay.
        Raises :class:`DriverError` if it cannot (the sandbox is then still running, or, if
        the runtime failed midway, stopped with its disk kept)."""
        raise DriverError(f"the {self.capabilities.name} runtime cannot hibernate a sandbox")

    async def wake(self, spec: SandboxSpec, snapshot: Path) -> RuntimeInfo:
        """Start a hibernated sandbox again from ``snapshot``: its processes carry on.
        Raises :class:`DriverError` (it stays stopped, the snapshot kept)."""
        raise DriverError(f"the {self.capabilities.name} runtime cannot hibernate a sandbox")

    async def recover_snapshot(self, sandbox_id: str, snapshot: Path) -> bool:
        """After a restart of the host agent that cut a hibernate or a wake short: bring
        a sandbox that still runs back to answering, remove a partial snapshot (never
        used), and say whether the sandbox runs."""
        info = await self.get(sandbox_id)
        return info is not None and info.state != RuntimeState.STOPPED

    async def fork(
        self, source_id: str, spec: SandboxSpec, snapshot: Path | None = None
    ) -> RuntimeInfo:
        """Make the sandbox ``spec`` from the paused sandbox ``source_id``: a copy of its
        disk, and its processes from ``snapshot`` if given, else a fresh start. The source
        is left as it was. All-or-nothing, like :meth:`create`."""
        raise DriverError(f"the {self.capabilities.name} runtime cannot fork a sandbox")

    @abstractmethod
    def agent_socket(self, sandbox_id: str) -> Path:
        """Where the host reaches the sandbox's guest agent."""

    def guest(self, sandbox_id: str) -> GuestClient:
        return GuestClient(self.agent_socket(sandbox_id))

    def usage_sources(self, sandbox_id: str) -> UsageSources | None:
        """Where the sandbox's usage is read (:mod:`hutch.host.usage`); None: nowhere."""
        return None

    def runtime_of(self, sandbox_id: str) -> str:
        """Which runtime runs the sandbox (drivers that hold several say which)."""
        return self.capabilities.name

    def capabilities_of(self, sandbox_id: str) -> DriverCapabilities:
        """What the driver of this sandbox's runtime can do."""
        return self.capabilities


def socket_dir(tag: str) -> Path:
    """A short directory for an instance's agent sockets (unix socket paths are limited to
    108 bytes, and a home directory can be long)."""
    base = (
        Path("/run/hutch")
        if os.geteuid() == 0
        else Path(tempfile.gettempdir()) / (f"hutch-{os.geteuid()}")
    )
    return base / tag
