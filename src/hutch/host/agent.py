"""The host agent: runs this machine's sandboxes and reports the machine to the control plane.

In ``hutch serve`` it runs inside the API process. It owns the sandbox driver and the pool
of link addresses, and writes a heartbeat with the host's free memory and built images
every ``heartbeat_interval_s``; a host whose heartbeat is older than ``host_dead_after_s``
is shown as ``dead``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from sqlalchemy.orm import Session

from hutch.cluster.joiner import Joiner, JoinFailed, local_templates
from hutch.host.addresses import LinkPool
from hutch.host.disks import DiskMounts, FakeDiskMounts, S3fsMounts
from hutch.host.dns import DnsServer, Resolver
from hutch.host.dns_upstream import configured_forwarder
from hutch.host.drivers.base import Driver
from hutch.host.drivers.fake import FakeDriver
from hutch.host.drivers.gvisor import GvisorDriver
from hutch.host.drivers.runc import RuncDriver
from hutch.host.drivers.runtimes import HostRuntimes
from hutch.host.egress import EgressLayer, FakeEgress
from hutch.host.egress_firewall import EgressFirewall
from hutch.host.images import built_images
from hutch.host.machine import host_address, read_memory
from hutch.host.networks import VXLAN_PORT, BridgeNetworks, FakeNetworks, NetworkLayer
from hutch.host.ownership import HomeInUse, HomeLock, host_clashes
from hutch.host.proc import CommandFailed
from hutch.host.warm_pool import WarmPool
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.models import Host, utcnow

__all__ = ["HostAgent", "HostUnusable"]

log = logging.getLogger(__name__)


class HostUnusable(Exception):
    """This machine cannot run sandboxes as configured; the message says what to do."""


class HostAgent:
    def __init__(self, settings: Settings, db: Database) -> None:
        self._settings = settings
        self._db = db
        self.host_id = settings.host_id or host_address()
        self.runtimes: HostRuntimes | None = None
        self.driver: Driver
        if settings.driver == "runc":
            runc = RuncDriver(settings.home, images=settings.images_path)
            gvisor = GvisorDriver(
                settings.home,
                images=settings.images_path,
                runsc=settings.runsc,
                platform=settings.gvisor_platform,
            )
            self.driver = self.runtimes = HostRuntimes(runc, gvisor)
        else:
            self.driver = FakeDriver(settings.home / "fake-sandboxes")
        self.networks: NetworkLayer = (
            BridgeNetworks(tag=self.driver.tag)
            if isinstance(self.driver, HostRuntimes)
            else FakeNetworks()
        )
        self.dns: DnsServer | None = None
        # Sandboxes' internet: the firewall lets them out (NAT) past the deny set, through
        # each one's policy (hutch.host.egress).
        self.egress: EgressLayer = FakeEgress()
        if isinstance(self.driver, HostRuntimes):
            self.driver.firewall.link_pool = settings.link_pool
            self.driver.firewall.egress_deny = settings.deny_set.networks
            self.egress = EgressFirewall(self.driver.firewall, tag=self.driver.tag)
            if settings.control_url:  # networks span hosts: VXLAN only from peer hosts
                self.driver.firewall.overlay_port = VXLAN_PORT
        self.disks: DiskMounts = (
            S3fsMounts(sandboxes=self.driver.sandboxes, secrets=self.driver.sockets / "s3")
            if isinstance(self.driver, HostRuntimes)
            else FakeDiskMounts()
        )
        self.links = LinkPool(settings.link_pool)
        # Sandboxes prepared before anyone asks (HUTCH_WARM_POOL); started after recovery.
        self.warm = WarmPool(
            settings.warm_pool_entries,
            runtimes=self.driver if isinstance(self.driver, HostRuntimes) else None,
            links=self.links,
            pids_limit=settings.pids_limit,
        )
        self._lock = HomeLock(settings.home)
        self._started_at = utcnow()
        self._task: asyncio.Task[None] | None = None
        # A cluster's agent (hutch agent --control URL) joins and heartbeats over HTTP.
        self.joiner: Joiner | None = None
        if settings.control_url:
            self.joiner = Joiner(settings, host_id=self.host_id, runtimes=[])

    async def start(self, resolve: Resolver | None = None) -> None:
        """Start the DNS server (private networks' names from ``resolve``, the rest
        forwarded upstream: hutch.host.dns), prepare the driver, register this host
        (status ``active``) and start heartbeating."""
        if isinstance(self.driver, HostRuntimes):
            await self._own_the_host()
            try:
                dns_port = None
                if resolve is not None:
                    forwarder = await configured_forwarder(
                        self._settings.dns_upstream, timeout_s=self._settings.dns_upstream_timeout_s
                    )
                    self.dns = DnsServer(resolve, forwarder=forwarder)
                    dns_port = await self.dns.start()
                await self.driver.prepare(dns_port=dns_port)
            except (CommandFailed, OSError) as exc:
                self._stop_dns()
                self._lock.release()
                raise HostUnusable(
                    f"cannot prepare the runc driver ({exc}); hutch needs root, runc and "
                    "nftables (make run installs them), or HUTCH_DRIVER=fake for tests"
                ) from None
        try:
            await self.heartbeat()
        except JoinFailed as exc:
            self._stop_dns()
            self._lock.release()
            raise HostUnusable(f"cannot join the cluster: {exc}") from None
        self._task = asyncio.create_task(self._beat_forever(), name="hutch-host-heartbeat")

    async def _own_the_host(self) -> None:
        """Take the home's lock and make sure no one else on this host uses the pools
        (:mod:`hutch.host.ownership`); HostUnusable, naming the clash, otherwise."""
        assert isinstance(self.driver, HostRuntimes)
        try:
            self._lock.acquire()
        except HomeInUse as exc:
            raise HostUnusable(f"{exc}; stop it first, or use another --home") from None
        pools = {"HUTCH_LINK_POOL": self._settings.link_pool,
                 "HUTCH_NETWORK_POOL": self._settings.network_pool}  # fmt: skip
        try:
            clashes = await host_clashes(pools, tag=self.driver.tag)
        except (CommandFailed, OSError, ValueError) as exc:
            self._lock.release()
            raise HostUnusable(f"cannot read this host's addresses and routes ({exc})") from None
        if clashes:
            self._lock.release()
            raise HostUnusable(
                "; ".join(clashes) + " (another hutch home, or a network of this host's): set "
                "HUTCH_LINK_POOL / HUTCH_NETWORK_POOL to free blocks, or remove what a moved "
                "install left behind with 'hutch host cleanup --home DIR'"
            )

    async def stop(self) -> None:
        """Stop heartbeating and mark this host ``dead`` so no work is placed on it."""
        await self.warm.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._stop_dns()
        if self.joiner is not None:  # the control plane marks it dead when it goes silent
            await self.joiner.aclose()
        else:
            with contextlib.suppress(Exception):
                await self.heartbeat(status="dead")
        self._lock.release()

    def _stop_dns(self) -> None:
        if self.dns is not None:
            self.dns.stop()
            self.dns = None

    async def heartbeat(self, *, status: str = "active") -> None:
        """Report this machine: to the control plane in a cluster (JoinFailed if it
        refuses), else straight into the store (a ``draining`` host stays so)."""
        runtimes = (
            sorted(name for name, why in self.runtimes.available().items() if why is None)
            if self.runtimes is not None
            else []
        )
        if self.joiner is not None:
            self.joiner.runtimes = runtimes
            await self.joiner.heartbeat()
            return
        memory = await asyncio.to_thread(read_memory)
        rootfses = await asyncio.to_thread(built_images, self._settings.images_path)
        templates = await asyncio.to_thread(local_templates, self._settings.home)
        beat = Host(
            id=self.host_id,
            status=status,
            free_mib=memory.available_mib,
            total_mib=memory.total_mib,
            capacity_mib=self._settings.host_capacity_mib or memory.total_mib,
            cpus=os.cpu_count() or 1,
            labels=dict(self._settings.host_labels),
            templates=templates,
            rootfses=rootfses,
            runtimes=runtimes,
            started_at=self._started_at,
            heartbeat_at=utcnow(),
        )

        def store_beat(session: Session) -> None:
            known = session.get(Host, self.host_id)
            if known is not None and known.status == "draining" and beat.status == "active":
                beat.status = "draining"
            session.merge(beat)

        # In one go on the store's writer: through the async session SQLite's write lock
        # was held across the event loop's turns (~50 ms a beat under load).
        await self._db.write(store_beat)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.heartbeat_interval_s)
            try:
                await self.heartbeat()
            except Exception:
                log.warning("host heartbeat failed; will retry", exc_info=True)
