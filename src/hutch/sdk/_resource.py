"""What the async resources share: an object the server keeps at ``/v1/<route>/<id>``."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from hutch.sdk._http import Identified, ident
from hutch.sdk.client import AsyncClient, resolve_client

__all__ = ["AsyncAttachable", "AsyncResource"]


class _Info(Protocol):
    """What every ``…Info`` has."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...


InfoT = TypeVar("InfoT", bound=_Info)


class AsyncResource(Generic[InfoT]):
    """One server object, as it was last described (``info``), and the client to ask it.

    A subclass names its collection (``_route``), what errors call it (``_subject``) and
    how its description is read (``_parse``).
    """

    _route: ClassVar[str]
    """The collection under ``/v1``: ``"networks"``."""
    _subject: ClassVar[str]
    """The name errors give it: ``"network"``."""

    def __init__(self, info: InfoT, client: AsyncClient) -> None:
        self.info = info
        self.client = client

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def name(self) -> str:
        return self.info.name

    async def refresh(self) -> InfoT:
        """Ask the server again; ``info`` becomes its answer."""
        self.info = await self._fetch(self.client, self.id)
        return self.info

    @staticmethod
    def _parse(data: dict[str, Any]) -> InfoT:
        raise NotImplementedError

    @classmethod
    async def _fetch(cls, client: AsyncClient, key: str) -> InfoT:
        """The one with id or name ``key``."""
        data = await client.transport.data("GET", f"/v1/{cls._route}/{key}", idempotent=True,
                                           subjects={cls._subject: key})  # fmt: skip
        return cls._parse(data)

    def _subjects(self) -> dict[str, str]:
        return {self._subject: self.id}


class AsyncAttachable(AsyncResource[InfoT]):
    """A resource you create, list and delete, and attach to sandboxes (at
    ``/v1/sandboxes/<id>/<route>``): a network or a disk."""

    @classmethod
    async def list(
        cls,
        *,
        client: AsyncClient | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> builtins.list[Self]:
        """All of yours (every page)."""
        client = resolve_client(client, api_url, api_key)
        items = await client.transport.pages(f"/v1/{cls._route}")
        return [cls(cls._parse(item), client) for item in items]

    async def delete(self) -> None:
        await self.client.transport.data("DELETE", f"/v1/{self._route}/{self.id}",
                                         idempotent=True, subjects=self._subjects())  # fmt: skip

    @classmethod
    async def _create(
        cls,
        body: dict[str, Any],
        client: AsyncClient | None,
        api_url: str | None,
        api_key: str | None,
    ) -> Self:
        client = resolve_client(client, api_url, api_key)
        data = await client.transport.data("POST", f"/v1/{cls._route}", idempotent=False,
                                           json=body)  # fmt: skip
        return cls(cls._parse(data), client)

    @classmethod
    async def _get(
        cls, key: str, client: AsyncClient | None, api_url: str | None, api_key: str | None
    ) -> Self:
        client = resolve_client(client, api_url, api_key)
        return cls(await cls._fetch(client, key), client)

    async def _attach(self, sandbox: str | Identified, body: dict[str, Any]) -> None:
        sandbox_id = ident(sandbox)
        await self.client.transport.data(
            "POST", f"/v1/sandboxes/{sandbox_id}/{self._route}", idempotent=True, json=body,
            subjects={"sandbox": sandbox_id, **self._subjects()},
        )  # fmt: skip

    async def _detach(
        self, sandbox: str | Identified, params: Mapping[str, str | int] | None = None
    ) -> None:
        sandbox_id = ident(sandbox)
        await self.client.transport.data(
            "DELETE", f"/v1/sandboxes/{sandbox_id}/{self._route}/{self.id}", idempotent=True,
            params=params, subjects={"sandbox": sandbox_id, **self._subjects()},
        )  # fmt: skip
