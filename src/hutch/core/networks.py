"""Private networks: create, list, delete, and sandboxes joining and leaving them.

The store says who is a member of what; the host's network layer (:mod:`hutch.host.networks`)
makes it so, and the DNS server (:mod:`hutch.host.dns`) answers from the store, so a name
resolves exactly while its sandbox is a live member of a network the asker is in.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hutch.core.errors import Conflict, InvalidInput, NotFound, Unavailable
from hutch.core.identity import Principal
from hutch.core.ids import new_id
from hutch.core.names import NAME_PATTERN
from hutch.core.sandbox_status import SandboxStatus as S
from hutch.host.agent import HostAgent
from hutch.host.networks import NetworkError, new_vni
from hutch.settings import Settings
from hutch.store import networks as store
from hutch.store import sandboxes as sandbox_store
from hutch.store.db import Database
from hutch.store.models import NetworkMember, NetworkRecord, SandboxRecord, utcnow

__all__ = ["NetworkDetail", "NetworkService", "NetworkView"]

log = logging.getLogger(__name__)

_ATTACHABLE = (S.RUNNING, S.PAUSED)


@dataclass(frozen=True)
class NetworkView:
    network: NetworkRecord
    member_count: int


@dataclass(frozen=True)
class NetworkDetail:
    network: NetworkRecord
    members: Sequence[tuple[NetworkMember, SandboxRecord]]


class NetworkService:
    def __init__(self, settings: Settings, db: Database, host: HostAgent) -> None:
        self._settings = settings
        self._db = db
        self._host = host
        self._sandbox_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    # -- networks -----------------------------------------------------------------------

    async def create(self, user: Principal, name: str) -> NetworkView:
        if not NAME_PATTERN.fullmatch(name):
            raise InvalidInput(
                "network names are 1-63 lowercase letters, digits and '-', starting and "
                "ending with a letter or digit",
                field="name",
            )
        for _ in range(5):
            async with self._db.sessions() as session:
                if await store.find_for_user(session, user.user_id, name) is not None:
                    raise InvalidInput(f"you already have a network named {name!r}", field="name")
                subnet = self._free_subnet(await store.subnets_in_use(session))
            record = NetworkRecord(
                id=new_id("net-", lower=True), user_id=user.user_id, name=name,
                subnet=str(subnet), vni=new_vni(), created_at=utcnow(),
            )  # fmt: skip
            try:
                async with self._db.sessions.begin() as session:
                    session.add(record)
                return NetworkView(record, 0)
            except IntegrityError:
                continue  # the same name, subnet or VXLAN id, taken meanwhile: look again
        raise Unavailable("could not create the network; try again")

    def _free_subnet(self, in_use: set[str]) -> IPv4Network:
        pool = self._settings.network_pool
        for subnet in pool.subnets(new_prefix=self._settings.network_prefix):
            if str(subnet) not in in_use:
                return subnet
        raise Unavailable(f"no free subnet left in the network pool {pool}")

    async def list_networks(
        self, user: Principal, *, limit: int, offset: int
    ) -> tuple[list[NetworkView], int]:
        async with self._db.sessions() as session:
            records = await store.list_for_user(session, user.user_id, limit=limit, offset=offset)
            counts = await store.member_counts(session, [r.id for r in records])
            total = await store.count_for_user(session, user.user_id)
        return [NetworkView(r, counts.get(r.id, 0)) for r in records], total

    async def get(self, user: Principal, ident: str) -> NetworkDetail:
        async with self._db.sessions() as session:
            record = await self._find(session, user, ident)
            members = await store.members_of(session, record.id)
        return NetworkDetail(record, members)

    async def delete(self, user: Principal, ident: str) -> None:
        async with self._db.sessions.begin() as session:
            record = await self._find(session, user, ident)
            if (await store.member_counts(session, [record.id])).get(record.id):
                raise Conflict(
                    f"network {record.name} still has members; detach all sandboxes first",
                    field="network",
                )
            await session.delete(record)
        await self._host.networks.remove(record.id)

    @staticmethod
    async def _find(session: AsyncSession, user: Principal, ident: str) -> NetworkRecord:
        record = await store.find_for_user(session, user.user_id, ident)
        if record is None:
            raise NotFound(f"no network {ident!r}", field="network")
        return record

    async def find_all(self, user: Principal, idents: Sequence[str]) -> list[NetworkRecord]:
        """The user's networks named by ``idents`` (ids or names), each once, in order."""
        found: dict[str, NetworkRecord] = {}
        async with self._db.sessions() as session:
            for ident in idents:
                record = await store.find_for_user(session, user.user_id, ident)
                if record is None:
                    raise InvalidInput(f"no network {ident!r}", field="networks")
                found.setdefault(record.id, record)
        return list(found.values())

    # -- members ------------------------------------------------------------------------

    async def attach(self, user: Principal, sandbox_ident: str, network_ident: str) -> None:
        """Attach a running or paused sandbox; its new interface is up when this returns.
        Attaching a member again changes nothing."""
        sandbox, network = await self._sandbox_and_network(user, sandbox_ident, network_ident)
        async with self._sandbox_locks[sandbox.id]:
            async with self._db.sessions() as session:
                current = await sandbox_store.find_for_user(session, user.user_id, sandbox.id)
                memberships = await store.memberships_of(session, sandbox.id)
            if current is None or current.status not in _ATTACHABLE:
                status = current.status if current is not None else "gone"
                raise Conflict(f"sandbox is {status}; only a running or paused sandbox can "
                               "join a network", field="status")  # fmt: skip
            if any(member.network_id == network.id for member, _ in memberships):
                return
            if current.runtime == "gvisor":
                raise Conflict("a gvisor sandbox joins networks only at create (gVisor reads "
                               "its interfaces when it starts)", field="runtime")  # fmt: skip
            try:
                await self.join(current, network)
            except NetworkError as exc:
                raise Unavailable(str(exc)) from exc

    async def join(self, sandbox: SandboxRecord, network: NetworkRecord) -> NetworkMember:
        """Make ``sandbox`` a member: an address, a row, an interface. Raises
        :class:`NetworkError` with nothing left behind."""
        subnet = IPv4Network(network.subnet)
        for _ in range(5):
            async with self._db.sessions() as session:
                taken = {m.ip for m, _ in await store.members_of(session, network.id)}
                names = {m.ifname for m, _ in await store.memberships_of(session, sandbox.id)}
            member = NetworkMember(
                network_id=network.id, sandbox_id=sandbox.id,
                ip=str(_free_address(subnet, taken)), ifname=_free_ifname(names),
                attached_at=utcnow(),
            )  # fmt: skip
            try:
                async with self._db.sessions.begin() as session:
                    session.add(member)
                break
            except IntegrityError:
                continue  # another sandbox took that address meanwhile
        else:
            raise NetworkError(f"no free address in network {network.name}")
        try:
            await self._host.networks.attach(
                sandbox.id, network.id, ifname=member.ifname, address=_address(member, network)
            )
        except BaseException:
            await asyncio.shield(self._drop(sandbox.id, network.id))
            raise
        return member

    async def detach(self, user: Principal, sandbox_ident: str, network_ident: str) -> None:
        sandbox, network = await self._sandbox_and_network(user, sandbox_ident, network_ident)
        async with self._sandbox_locks[sandbox.id]:
            async with self._db.sessions() as session:
                memberships = await store.memberships_of(session, sandbox.id)
            member = next((m for m, _ in memberships if m.network_id == network.id), None)
            if member is None:
                raise NotFound(
                    f"sandbox {sandbox.name} is not in network {network.name}", field="network"
                )
            # The row goes first: from then on the name no longer resolves.
            await self._drop(sandbox.id, network.id)
            await self._host.networks.detach(
                sandbox.id, network.id, ifname=member.ifname, address=_address(member, network)
            )

    async def _sandbox_and_network(
        self, user: Principal, sandbox_ident: str, network_ident: str
    ) -> tuple[SandboxRecord, NetworkRecord]:
        async with self._db.sessions() as session:
            sandbox = await sandbox_store.find_for_user(session, user.user_id, sandbox_ident)
            if sandbox is None:
                raise NotFound(f"no sandbox {sandbox_ident!r}", field="sandbox")
            return sandbox, await self._find(session, user, network_ident)

    async def _drop(self, sandbox_id: str, network_id: str) -> None:
        async with self._db.sessions.begin() as session:
            member = await session.get(NetworkMember, (network_id, sandbox_id))
            if member is not None:
                await session.delete(member)

    async def leave_all(self, sandbox_id: str) -> None:
        """End every membership of a sandbox that is gone or going."""
        # Most sandboxes join no network: a read (no lock) says so, and nothing is written.
        # Else the rows are read and deleted in one go on the store's writer: through the
        # async session the write lock was held across the event loop's turns (~50 ms
        # each under the 20-client load, for a DELETE that mostly deleted nothing).
        any_row = self._db.read_now(
            "SELECT 1 FROM network_members WHERE sandbox_id = ? LIMIT 1", (sandbox_id,)
        )
        if any_row == []:  # (None: no such read here, PostgreSQL; the write says)
            return
        memberships = await self._db.write(lambda s: store.take_memberships(s, sandbox_id))
        for member, network in memberships:
            await self._host.networks.detach(
                sandbox_id, network.id, ifname=member.ifname, address=_address(member, network)
            )

    async def unplug(self, sandbox_id: str) -> None:
        """Take a hibernated sandbox's interfaces on its networks off the host (they go
        with its network namespace; what admits their traffic goes here). Its memberships,
        addresses and names stay: :meth:`plug` puts the interfaces back before it runs."""
        async with self._db.sessions() as session:
            memberships = await store.memberships_of(session, sandbox_id)
        for member, network in memberships:
            await self._host.networks.detach(
                sandbox_id, network.id, ifname=member.ifname, address=_address(member, network)
            )

    async def plug(self, sandbox_id: str) -> None:
        """Give a sandbox whose network namespace is new (a wake after a hibernate, a
        restart) its interfaces on its networks again: the same names and addresses.
        Raises :class:`NetworkError`."""
        async with self._db.sessions() as session:
            memberships = await store.memberships_of(session, sandbox_id)
        layer = self._host.networks
        for member, network in memberships:
            if not await layer.attached(sandbox_id, network.id, ifname=member.ifname):
                await layer.attach(sandbox_id, network.id, ifname=member.ifname,
                                   address=_address(member, network))  # fmt: skip

    # -- recovery and DNS ---------------------------------------------------------------

    async def recover(self) -> None:
        """After a start: re-make what the store says and the host lacks; remove the rest."""
        async with self._db.sessions() as session:
            rows = await store.live_memberships_on_host(session, self._host.host_id)
            network_ids = await store.all_network_ids(session)
            asleep = {r.id for r in await sandbox_store.live_on_host(session, self._host.host_id)
                      if r.hibernated}  # fmt: skip
        layer = self._host.networks
        for member, network in rows:
            address = _address(member, network)
            if member.sandbox_id in asleep:  # unplugged (its wake plugs it again)
                await layer.detach(member.sandbox_id, network.id, ifname=member.ifname,
                                   address=address)  # fmt: skip
                continue
            try:
                if await layer.attached(member.sandbox_id, network.id, ifname=member.ifname):
                    await layer.admit(member.sandbox_id, network.id, address=address)
                else:
                    await layer.attach(member.sandbox_id, network.id, ifname=member.ifname,
                                       address=address)  # fmt: skip
            except NetworkError:
                log.warning("could not re-attach %s to %s", member.sandbox_id, network.id,
                            exc_info=True)  # fmt: skip
        removed = await self._host.networks.cleanup(network_ids)
        if removed:
            log.info("removed %d leftover network segments", len(removed))

    async def resolve(self, asker_ip: str, name: str) -> list[str] | None:
        """What the DNS server answers ``asker_ip`` for ``name`` (None: not a sandbox here)."""
        async with self._db.sessions() as session:
            return await store.peers_named(
                session, host_id=self._host.host_id, asker_ip=asker_ip, name=name
            )


def _address(member: NetworkMember, network: NetworkRecord) -> IPv4Interface:
    return IPv4Interface(f"{member.ip}/{IPv4Network(network.subnet).prefixlen}")


def _free_address(subnet: IPv4Network, taken: set[str]) -> IPv4Address:
    for address in subnet.hosts():
        if address == subnet.network_address + 1:
            continue  # .1 stays free for a gateway, should a network ever get one
        if str(address) not in taken:
            return address
    raise NetworkError(f"no free address left in {subnet}")


def _free_ifname(taken: set[str]) -> str:
    index = 1
    while f"eth{index}" in taken:
        index += 1
    return f"eth{index}"
