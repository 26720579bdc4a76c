"""Private networks: sandboxes in one reach each other by name, and nothing else."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hutch.sdk._http import Identified, ident, parse_time
from hutch.sdk.client import AsyncClient, resolve_client

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


class AsyncNetwork:
    """A private network. Names are 1-63 of ``a-z0-9-`` and unique per user."""

    def __init__(self, info: NetworkInfo, client: AsyncClient) -> None:
        self.info = info
        self.client = client

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def name(self) -> str:
        return self.info.name

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
        client = resolve_client(client, api_url, api_key)
        data = await client.transport.data("POST", "/v1/networks", idempotent=False,
                                           json={"name": name})  # fmt: skip
        return cls(NetworkInfo.from_json(data), client)

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
        client = resolve_client(client, api_url, api_key)
        return cls(await _fetch(client, network), client)

    @classmethod
    async def list(
        cls,
        *,
        client: AsyncClient | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> builtins.list[AsyncNetwork]:
        """All your networks (every page), newest first."""
        client = resolve_client(client, api_url, api_key)
        items = await client.transport.pages("/v1/networks")
        return [cls(NetworkInfo.from_json(item), client) for item in items]

    async def refresh(self) -> NetworkInfo:
        self.info = await _fetch(self.client, self.id)
        return self.info

    async def delete(self) -> None:
        """Delete the network; a ConflictError while it has members (detach them first)."""
        await self.client.transport.data("DELETE", f"/v1/networks/{self.id}", idempotent=True,
                                         subjects={"network": self.id})  # fmt: skip

    async def attach(self, sandbox: str | Identified) -> None:
        """Put a sandbox (running or paused) in this network; its interface is up when this
        returns, and the members resolve its name. Attaching a member again does nothing."""
        sandbox_id = ident(sandbox)
        await self.client.transport.data(
            "POST", f"/v1/sandboxes/{sandbox_id}/networks", idempotent=True,
            json={"id": self.id}, subjects={"sandbox": sandbox_id, "network": self.id},
        )  # fmt: skip

    async def detach(self, sandbox: str | Identified) -> None:
        """Take a sandbox out; a NotFoundError if it is not a member."""
        sandbox_id = ident(sandbox)
        await self.client.transport.data(
            "DELETE", f"/v1/sandboxes/{sandbox_id}/networks/{self.id}", idempotent=True,
            subjects={"sandbox": sandbox_id, "network": self.id},
        )  # fmt: skip


async def _fetch(client: AsyncClient, network: str) -> NetworkInfo:
    data = await client.transport.data("GET", f"/v1/networks/{network}", idempotent=True,
                                       subjects={"network": network})  # fmt: skip
    return NetworkInfo.from_json(data)
