"""The create path's use of the host's warm pool (:mod:`hutch.host.warm_pool`).

A create that matches a pool entry takes a prepared sandbox: its id and link become the
new sandbox's, the store record is written as for a cold create, and the sandbox is given
its name and environment in place while the egress policy is installed beside it (as
beside the driver's start on the cold path). Everything after (networks, disks, the
running listeners: ingress, SSH keys, self-signal) is the same code for both. A prepared
sandbox that cannot be handed out is destroyed and the same sandbox (id, link, record)
is started cold instead.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from hutch.core.catalog import Shape
from hutch.core.sandbox_base import SandboxBase
from hutch.core.sandbox_requests import SandboxCreate
from hutch.host.drivers.base import SandboxSpec
from hutch.host.warm_pool import Prepared, WarmUnusable
from hutch.store.models import SandboxRecord

__all__ = ["Created", "SandboxWarm"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Created:
    """A create's outcome: the sandbox, and whether it came from the warm pool."""

    record: SandboxRecord
    warm: bool


class SandboxWarm(SandboxBase):
    """Taking and handing out the warm pool's sandboxes on create."""

    def _take_warm(
        self, request: SandboxCreate, *, runtime: str, rootfs: str, shape: Shape, disk_mib: int
    ) -> Prepared | None:
        """A prepared sandbox for this create, or None (no match, or none ready). Only
        creates of a pool's runtime, image and shape with the shape's default disk match;
        template builds never do (their sandboxes are the builder's), nor, on a runtime
        that joins its networks only before its start (gvisor), one with networks."""
        if request.build_of is not None or disk_mib != shape.default_disk_mib:
            return None
        if request.networks and runtime != "runc":
            return None
        return self._host.warm.take(runtime, rootfs, shape.id)

    async def _start_warm(
        self, prepared: Prepared, spec: SandboxSpec, record: SandboxRecord
    ) -> bool:
        """Hand ``prepared`` out as ``spec`` (egress installed beside it); if it cannot
        be, destroy it and start ``spec`` cold. True: it was handed out. Raises what a
        cold start raises."""
        try:
            handed, _ = await asyncio.gather(
                self._host.warm.hand_out(prepared, spec), self._creating(record),
                return_exceptions=True,
            )  # fmt: skip
        except BaseException:  # cancelled: nothing of it stays (as a cold create)
            await asyncio.shield(self._host.driver.destroy(spec.id))
            raise
        if not isinstance(handed, BaseException):
            return True
        await asyncio.shield(self._host.driver.destroy(spec.id))
        if not isinstance(handed, WarmUnusable):
            raise handed
        log.warning("%s; starting %s cold", handed, spec.id)
        await self._host.driver.create(spec)
        return False
