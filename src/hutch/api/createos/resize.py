"""``POST /v1/sandboxes/{id}/resize``: grow a sandbox's disk online (CREATEOS-API.md §3.8)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from hutch.api.createos.responses import AUTH_ERRORS
from hutch.api.deps import CurrentUser, ServicesDep
from hutch.api.envelopes import JSend, JSendError, JSendFail

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/sandboxes",
    tags=["sandboxes"],
    responses={
        **AUTH_ERRORS,
        404: {"model": JSendFail, "description": "No such sandbox (or not yours)."},
        409: {"model": JSendFail, "description": "The sandbox is neither running nor paused."},
        503: {"model": JSendError, "description": "The host could not grow the disk."},
    },
)


class ResizeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    disk_mib: int = Field(gt=0, description="The new size of the whole disk, in MiB; larger.")


class Resized(BaseModel):
    id: str
    disk_mib: int


@router.post("/{sandbox_id}/resize", summary="Grow a sandbox's disk")
async def resize_sandbox(
    sandbox_id: str, body: ResizeBody, user: CurrentUser, services: ServicesDep
) -> JSend[Resized]:
    """Grow the writable disk to ``disk_mib`` MiB while the sandbox runs (or is paused): no
    restart, and ``df`` inside shows it at once. Only larger sizes, up to
    ``HUTCH_MAX_DISK_MIB``; anything else is a 400."""
    record = await services.sandboxes.resize(user, sandbox_id, body.disk_mib)
    return JSend(data=Resized(id=record.id, disk_mib=record.disk_mib))
