"""``/v1/networks`` and a sandbox's memberships, in the CreateOS dialect (seed 000)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from hutch.api.createos.responses import AUTH_ERRORS
from hutch.api.deps import CurrentUser, PageParams, ServicesDep
from hutch.api.envelopes import JSend, JSendFail, Page
from hutch.core.networks import NetworkDetail, NetworkView

__all__ = ["router"]

router = APIRouter(tags=["networks"], responses=AUTH_ERRORS)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": JSendFail, "description": "No such network (or not yours)."}
}


class NetworkCreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=63, description="Scoped per user. Example: backend.")


class NetworkAttachBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(max_length=128, description="Network name or net-<ulid> id.")


class NetworkOut(BaseModel):
    id: str
    name: str
    created_at: datetime
    member_count: int

    @classmethod
    def of(cls, view: NetworkView) -> NetworkOut:
        network = view.network
        return cls(id=network.id, name=network.name, created_at=network.created_at,
                   member_count=view.member_count)  # fmt: skip


class MemberOut(BaseModel):
    sandbox_id: str
    name: str
    status: str
    ip: str = Field(description="The member's address on this network.")


class NetworkDetailOut(NetworkOut):
    members: list[MemberOut]

    @classmethod
    def of_detail(cls, detail: NetworkDetail) -> NetworkDetailOut:
        network = detail.network
        return cls(
            id=network.id, name=network.name, created_at=network.created_at,
            member_count=len(detail.members),
            members=[MemberOut(sandbox_id=sandbox.id, name=sandbox.name, status=sandbox.status,
                               ip=member.ip) for member, sandbox in detail.members],
        )  # fmt: skip


class Ok(BaseModel):
    ok: bool = True


@router.get("/v1/networks", summary="List networks")
async def list_networks(
    user: CurrentUser, services: ServicesDep, page: PageParams
) -> JSend[Page[NetworkOut]]:
    views, total = await services.networks.list_networks(user, limit=page.limit, offset=page.offset)
    return JSend(
        data=Page.of(
            [NetworkOut.of(v) for v in views], total=total, limit=page.limit, offset=page.offset
        )
    )


@router.post("/v1/networks", summary="Create a network")
async def create_network(
    body: NetworkCreateBody, user: CurrentUser, services: ServicesDep
) -> JSend[NetworkOut]:
    """A duplicate name is a 400, as is a name that is not 1-63 of ``a-z0-9-``."""
    return JSend(data=NetworkOut.of(await services.networks.create(user, body.name)))


@router.get("/v1/networks/{network_id}", summary="Get a network and its members",
            responses=_NOT_FOUND)  # fmt: skip
async def get_network(
    network_id: str, user: CurrentUser, services: ServicesDep
) -> JSend[NetworkDetailOut]:
    return JSend(data=NetworkDetailOut.of_detail(await services.networks.get(user, network_id)))


@router.delete(
    "/v1/networks/{network_id}",
    summary="Delete a network",
    responses={
        **_NOT_FOUND,
        409: {"model": JSendFail, "description": "It still has members; detach them first."},
    },
)
async def delete_network(network_id: str, user: CurrentUser, services: ServicesDep) -> JSend[Ok]:
    await services.networks.delete(user, network_id)
    return JSend(data=Ok())


@router.post(
    "/v1/sandboxes/{sandbox_id}/networks",
    tags=["sandboxes"],
    summary="Attach a sandbox to a network",
    responses={
        404: {"model": JSendFail, "description": "No such sandbox or network."},
        409: {"model": JSendFail, "description": "The sandbox is not running or paused."},
    },
)
async def attach_network(
    sandbox_id: str, body: NetworkAttachBody, user: CurrentUser, services: ServicesDep
) -> JSend[Ok]:
    """The new interface is up inside the sandbox when this answers; peers resolve its name
    at once. Attaching a member again is a no-op."""
    await services.networks.attach(user, sandbox_id, body.id)
    return JSend(data=Ok())


@router.delete(
    "/v1/sandboxes/{sandbox_id}/networks/{network_id}",
    tags=["sandboxes"],
    summary="Detach a sandbox from a network",
    responses={404: {"model": JSendFail, "description": "No such sandbox or membership."}},
)
async def detach_network(
    sandbox_id: str, network_id: str, user: CurrentUser, services: ServicesDep
) -> JSend[Ok]:
    await services.networks.detach(user, sandbox_id, network_id)
    return JSend(data=Ok())
