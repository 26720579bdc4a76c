"""Private networks: sandboxes in one reach each other by name, and nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hutch.sdk._http import Identified, parse_time
from hutch.sdk._resource import AsyncAttachable
from hutch.sdk.client import AsyncClient

__all__ = ["AsyncNetwork", "NetworkInfo", "NetworkMember"]


@dataclass(frozen=True, kw_only=True)
class NetworkMember:
    sandbox_id: str
    name: str
    """The sandbox's name: what the other members resolve."""
    status: str
    ip: str
    """Its address on this network."""


@dataclass(frozen=True, kw_only=True)
class NetworkInfo:
    id: str
    name: str
    created_at: datetime | None
    member_count: int
    members: tuple[NetworkMember, ...] | None
    """Known after ``get``/``refresh``; None for networks from ``list``/``create``."""
    raw: dict[str, Any] = field(repr=False, compare=False)
    """Everything the server said, including fields this SDK does not know."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkInfo:
        members = data.get("members")
        return cls(
            id=data["id"],
            name=data.get("name", ""),
            created_at=parse_time(data.get("created_at")),
            member_count=int(data.get("member_count") or 0),
            members=None if members is None else tuple(
                NetworkMember(sandbox_id=m["sandbox_id"], name=m.get("name", ""),
                              status=m.get("status", ""), ip=m.get("ip", ""))
                for m in members
            ),
            raw=dict(data),
        )  # fmt: skip


class AsyncNetwork(AsyncAttachable[NetworkInfo]):
    """A private network. Names are 1-63 of ``a-z0-9-`` and unique per user."""

    _route = "networks"
    _subject = "network"
    _parse = staticmethod(NetworkInfo.from_json)

    @property
    def members(self) -> tuple[NetworkMember, ...] | None:
        return self.info.members

    def __repr__(self) -> str:
        return f"AsyncNetwork(id={self.id!r}, name={self.name!r})"

    @classmethod
    async def create(
        cls,
        name: str,
        *,
        client: AsyncClient | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> AsyncNetwork:
        """Create a network. A name you already use is an InvalidRequestError."""
        return await cls._create({"name": name}, client, api_url, api_key)

    @classmethod
    async def get(
        cls,
        network: str,
        *,
        client: AsyncClient | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> AsyncNetwork:
        """One network by id or name, with its members."""
        return await cls._get(network, client, api_url, api_key)

    async def delete(self) -> None:
        """Delete the network; a ConflictError while it has members (detach them first)."""
        await super().delete()

    async def attach(self, sandbox: str | Identified) -> None:
        """Put a sandbox (running or paused) in this network; its interface is up when this
        returns, and the members resolve its name. Attaching a member again does nothing."""
        await self._attach(sandbox, {"id": self.id})

    async def detach(self, sandbox: str | Identified) -> None:
        """Take a sandbox out; a NotFoundError if it is not a member."""
        await self._detach(sandbox)
