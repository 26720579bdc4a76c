"""The drivers of one host, by runtime: a sandbox is run by ``runc`` or by ``gvisor``.

:class:`HostRuntimes` is itself a :class:`~hutch.host.drivers.base.Driver`: each call goes
to the driver of the sandbox's runtime (chosen at create, ``SandboxSpec.runtime``; later
read from the ``runtime`` file the gvisor driver leaves in the sandbox's directory), and
listing and cleanup cover both. The two share the host's sandbox directory, link pool,
firewall and cgroup parent, so one host's sandboxes of both kinds live side by side.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from hutch.host.drivers.base import (
    Driver,
    DriverCapabilities,
    DriverError,
    RuntimeInfo,
    SandboxSpec,
)
from hutch.host.drivers.gvisor import GvisorDriver
from hutch.host.drivers.runc import RuncDriver
from hutch.host.guest import GuestClient
from hutch.host.snapshot import CapturedLayer, SnapshotStats
from hutch.host.usage import UsageSources

__all__ = ["HostRuntimes"]


class HostRuntimes(Driver):
    """runc always; gvisor when the host's runsc works (``gvisor_error`` says why not)."""

    def __init__(self, runc: RuncDriver, gvisor: GvisorDriver | None) -> None:
        self.runc = runc
        self.gvisor = gvisor
        self.gvisor_error: str | None = None if gvisor else "not configured"
        self.capabilities = runc.capabilities
        # What the rest of the host agent reads of "the" driver: the shared plumbing.
        self.tag = runc.tag
        self.sandboxes = runc.sandboxes
        self.sockets = runc.sockets
        self.firewall = runc.firewall
        self.home = runc.home
        self.images = runc.images

    async def prepare(self, *, dns_port: int | None = None) -> None:
        await self.runc.prepare(dns_port=dns_port)
        if self.gvisor is not None:
            try:
                await self.gvisor.prepare(dns_port=dns_port)
                self.gvisor_error = None
            except DriverError as exc:
                self.gvisor_error = str(exc)

    def available(self) -> dict[str, str | None]:
        """Each runtime this host knows, with why it cannot run sandboxes (None: it can)."""
        return {"runc": None, "gvisor": self.gvisor_error}

    def for_runtime(self, runtime: str) -> Driver:
        if runtime == "runc":
            return self.runc
        if runtime == "gvisor":
            if self.gvisor is None or self.gvisor_error is not None:
                raise DriverError(f"the gvisor runtime is not available on this host: "
                                  f"{self.gvisor_error}")  # fmt: skip
            return self.gvisor
        raise DriverError(f"unknown runtime {runtime!r}")

    def runtime_of(self, sandbox_id: str) -> str:
        marker = self.runc.sandboxes / sandbox_id / "runtime"
        try:
            return marker.read_text().strip() or "runc"
        except OSError:
            return "runc"

    def _of(self, sandbox_id: str) -> Driver:
        if self.runtime_of(sandbox_id) == "gvisor" and self.gvisor is not None:
            return self.gvisor
        return self.runc

    async def create(self, spec: SandboxSpec) -> RuntimeInfo:
        return await self.for_runtime(spec.runtime).create(spec)

    async def restart(self, spec: SandboxSpec) -> RuntimeInfo:
        return await self._of(spec.id).restart(spec)

    async def destroy(self, sandbox_id: str) -> None:
        driver = self._of(sandbox_id)
        await driver.destroy(sandbox_id)
        if driver is self.runc and self.gvisor is not None and self.gvisor_error is None:
            await self.gvisor.destroy(sandbox_id)  # a gvisor leftover whose marker went

    async def get(self, sandbox_id: str) -> RuntimeInfo | None:
        return await self._of(sandbox_id).get(sandbox_id)

    async def list_sandboxes(self) -> list[RuntimeInfo]:
        found = await self.runc.list_sandboxes()
        if self.gvisor is not None and self.gvisor_error is None:
            found += await self.gvisor.list_sandboxes()
        return found

    async def pause(self, sandbox_id: str) -> None:
        await self._of(sandbox_id).pause(sandbox_id)

    async def resume(self, sandbox_id: str) -> None:
        await self._of(sandbox_id).resume(sandbox_id)

    async def rename(self, sandbox_id: str, hostname: str) -> None:
        await self._of(sandbox_id).rename(sandbox_id, hostname)

    async def cleanup(self, keep: set[str]) -> list[str]:
        removed: set[str] = set()
        if self.gvisor is not None and self.gvisor_error is None:
            # Its own first (runsc's state, the socket directories), then the shared rest.
            removed |= set(await self.gvisor.cleanup(keep))
        removed |= set(await self.runc.cleanup(keep))
        return sorted(removed)

    async def resize_disk(self, sandbox_id: str, disk_mib: int) -> None:
        await self._of(sandbox_id).resize_disk(sandbox_id, disk_mib)

    async def disk_mib(self, sandbox_id: str) -> int:
        return await self._of(sandbox_id).disk_mib(sandbox_id)

    async def open_port(
        self, sandbox_id: str, port: int, *, own_address: str | None = None
    ) -> socket.socket:
        return await self._of(sandbox_id).open_port(sandbox_id, port, own_address=own_address)

    async def snapshot(self, sandbox_id: str, build: Path) -> SnapshotStats:
        return await self._of(sandbox_id).snapshot(sandbox_id, build)

    @asynccontextmanager
    async def capture_layer(
        self, sandbox_id: str, *, quiesced: bool = False
    ) -> AsyncIterator[CapturedLayer]:
        async with self._of(sandbox_id).capture_layer(sandbox_id, quiesced=quiesced) as captured:
            yield captured

    def writable_layer(self, sandbox_id: str) -> Path:
        driver = self._of(sandbox_id)
        assert isinstance(driver, RuncDriver)
        return driver.writable_layer(sandbox_id)

    def agent_socket(self, sandbox_id: str) -> Path:
        return self._of(sandbox_id).agent_socket(sandbox_id)

    def guest(self, sandbox_id: str) -> GuestClient:
        return self._of(sandbox_id).guest(sandbox_id)

    def usage_sources(self, sandbox_id: str) -> UsageSources | None:
        return self._of(sandbox_id).usage_sources(sandbox_id)

    async def hibernate(self, sandbox_id: str, snapshot: Path) -> None:
        await self._of(sandbox_id).hibernate(sandbox_id, snapshot)

    async def recover_snapshot(self, sandbox_id: str, snapshot: Path) -> bool:
        return await self._of(sandbox_id).recover_snapshot(sandbox_id, snapshot)

    async def wake(self, spec: SandboxSpec, snapshot: Path) -> RuntimeInfo:
        return await self._of(spec.id).wake(spec, snapshot)

    async def fork(
        self, source_id: str, spec: SandboxSpec, snapshot: Path | None = None
    ) -> RuntimeInfo:
        return await self.for_runtime(spec.runtime).fork(source_id, spec, snapshot)

    def capabilities_of(self, sandbox_id: str) -> DriverCapabilities:
        return self._of(sandbox_id).capabilities

    async def leftovers(self) -> dict[str, list[str]]:
        found = await self.runc.leftovers()
        if self.gvisor is not None and self.gvisor_error is None:
            found["runsc"] = [info.id for info in await self.gvisor.list_sandboxes()]
        return found

    async def uninstall(self) -> None:
        await self.runc.uninstall()
