"""A sandbox's egress rules and bandwidth, in the CreateOS dialect (§9, §10)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from hutch.api.createos.responses import AUTH_ERRORS
from hutch.api.deps import CurrentUser, ServicesDep
from hutch.api.envelopes import JSend, JSendFail
from hutch.core.egress_service import BandwidthView

__all__ = ["EgressRules", "router"]

router = APIRouter(
    prefix="/v1/sandboxes",
    tags=["sandboxes"],
    responses={
        **AUTH_ERRORS,
        404: {"model": JSendFail, "description": "No such sandbox (or not yours)."},
    },
)

# Checked by hutch.core.egress (so a bad rule is named ``egress[i]``), typed as strings.
EgressRules = list[Annotated[Any, WithJsonSchema({"type": "string", "maxLength": 260})]]

_RULES_DOC = (
    "Rules: host, host:port, *.host, ip, ip:port, cidr, cidr:port or *; at most 256. "
    'null, [] or ["*"] is open (the platform deny set still applies); one real rule '
    "allows only what the rules name."
)


class EgressBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    egress: EgressRules | None = Field(description=_RULES_DOC)


class EgressOut(BaseModel):
    id: str
    egress: list[str]


class RechargeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    add_bytes: int = Field(description="Bytes added to the quota (positive).")


class BandwidthOut(BaseModel):
    id: str
    quota_bytes: int = Field(description="Outbound internet bytes allowed in all; -1 unmetered.")
    used_bytes: int = Field(description="Outbound internet bytes sent.")
    ingress_bytes: int = Field(description="Inbound internet bytes (counted, never capped).")
    remaining_bytes: int = Field(description="quota - used; may dip below 0; -1 unmetered.")
    capped: bool = Field(description="True while outbound internet traffic is refused.")

    @classmethod
    def of(cls, view: BandwidthView) -> BandwidthOut:
        return cls(id=view.id, quota_bytes=view.quota_bytes, used_bytes=view.used_bytes,
                   ingress_bytes=view.ingress_bytes, remaining_bytes=view.remaining_bytes,
                   capped=view.capped)  # fmt: skip


_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": JSendFail, "description": "The sandbox is destroyed or failed."}
}


@router.get("/{sandbox_id}/egress", summary="Get a sandbox's egress rules")
async def get_egress(sandbox_id: str, user: CurrentUser, services: ServicesDep) -> JSend[EgressOut]:
    record = await services.egress.get(user, sandbox_id)
    return JSend(data=EgressOut(id=record.id, egress=list(record.egress)))


@router.put("/{sandbox_id}/egress", summary="Replace a sandbox's egress rules",
            responses=_CONFLICT)  # fmt: skip
async def put_egress(
    sandbox_id: str, body: EgressBody, user: CurrentUser, services: ServicesDep
) -> JSend[EgressOut]:
    """Replaced atomically and live: new connections follow the new rules when this
    answers, and open connections to places they no longer allow are cut."""
    record = await services.egress.replace(user, sandbox_id, body.egress)
    return JSend(data=EgressOut(id=record.id, egress=list(record.egress)))


@router.get("/{sandbox_id}/bandwidth", summary="Get a sandbox's bandwidth use and quota")
async def get_bandwidth(
    sandbox_id: str, user: CurrentUser, services: ServicesDep
) -> JSend[BandwidthOut]:
    return JSend(data=BandwidthOut.of(await services.egress.bandwidth(user, sandbox_id)))


@router.post("/{sandbox_id}/bandwidth/recharge", summary="Add to a sandbox's bandwidth quota",
             responses=_CONFLICT)  # fmt: skip
async def recharge_bandwidth(
    sandbox_id: str, body: RechargeBody, user: CurrentUser, services: ServicesDep
) -> JSend[BandwidthOut]:
    """Additive; a no-op on an unmetered sandbox. A capped sandbox's traffic flows again
    when this answers (if the new quota is above what it used)."""
    view = await services.egress.recharge(user, sandbox_id, body.add_bytes)
    return JSend(data=BandwidthOut.of(view))
