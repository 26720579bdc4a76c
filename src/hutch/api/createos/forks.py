"""``POST /v1/sandboxes/{id}/fork`` in the CreateOS dialect (§4.3)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from hutch.api.createos.egress import EgressRules
from hutch.api.createos.responses import AUTH_ERRORS, RATE_LIMITED
from hutch.api.createos.sandboxes import SandboxOut
from hutch.api.deps import CurrentUser, ServicesDep
from hutch.api.envelopes import JSend, JSendFail
from hutch.core.sandboxes import ForkOptions

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/sandboxes",
    tags=["sandboxes"],
    responses={
        **AUTH_ERRORS,
        404: {"model": JSendFail, "description": "No such sandbox (or not yours)."},
        409: {"model": JSendFail, "description": "The source is not paused."},
    },
)


class ForkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start_paused: bool = Field(default=False, description="true: the child stays paused.")
    ssh_pubkeys: list[Annotated[str, Field(max_length=8192)]] | None = Field(
        default=None, max_length=256, description="Replaces the source's keys."
    )
    egress: EgressRules | None = Field(default=None, description="Replaces the source's rules.")
    ingress_enabled: bool | None = Field(default=None, description="Overrides the source's.")
    envs: dict[str, Annotated[str, Field(max_length=65536)]] | None = Field(
        default=None, max_length=1024, description="Replaces the source's environment."
    )
    bandwidth_quota_bytes: int | None = Field(
        default=None, description="The child's outbound quota (-1: unmetered); default: the "
        "deployment's."
    )  # fmt: skip


@router.post("/{sandbox_id}/fork", status_code=201, summary="Fork a paused sandbox",
             responses=RATE_LIMITED)  # fmt: skip
async def fork_sandbox(
    sandbox_id: str, body: ForkBody, user: CurrentUser, services: ServicesDep
) -> JSend[SandboxOut]:
    """A new sandbox from a paused one: its own id, name, address and bandwidth ledger,
    ``forked_from`` the source. From a hibernated gvisor source its processes carry on
    from the fork point (``fork_mode: processes``); otherwise (runc, or gvisor paused in
    memory) it starts fresh on a copy of the source's files (``fork_mode: files``). Fields
    left out are inherited. The source must be paused (409) and stays paused; private
    networks and S3 disks are not carried."""
    record = await services.sandboxes.fork(
        user,
        sandbox_id,
        ForkOptions(
            start_paused=body.start_paused,
            ssh_pubkeys=body.ssh_pubkeys,
            egress=body.egress,
            ingress_enabled=body.ingress_enabled,
            envs=body.envs,
            bandwidth_quota_bytes=body.bandwidth_quota_bytes,
        ),
    )
    return JSend(data=SandboxOut.of(record, services.previews))
