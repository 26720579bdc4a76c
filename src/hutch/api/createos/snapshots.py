"""``POST /v1/sandboxes/{id}/snapshot``: a running sandbox's filesystem as a new template
(beyond CreateOS; Daytona's snapshots, E2B's ``createSnapshot``). See
:mod:`hutch.core.snapshots`."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from hutch.api.createos.responses import AUTH_ERRORS
from hutch.api.createos.templates import TemplateOut
from hutch.api.deps import CurrentUser, ServicesDep
from hutch.api.envelopes import JSend, JSendError, JSendFail

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/sandboxes",
    tags=["templates"],
    responses={
        **AUTH_ERRORS,
        403: {"model": JSendFail, "description": "Over your number of templates."},
        404: {"model": JSendFail, "description": "No such sandbox (or not yours)."},
        409: {"model": JSendFail, "description": "The sandbox is neither running nor paused."},
        413: {"model": JSendFail, "description": "Its changes are over the template cap."},
        503: {"model": JSendError, "description": "The host could not copy its files."},
    },
)


class SnapshotBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        max_length=63, description="The template's name (yours; used again, a new version)."
    )


@router.post("/{sandbox_id}/snapshot", status_code=201, summary="Snapshot a sandbox")
async def snapshot_sandbox(
    sandbox_id: str, body: SnapshotBody, user: CurrentUser, services: ServicesDep
) -> JSend[TemplateOut]:
    """Make a template of the sandbox's filesystem as it is now (its image and every change
    made in it), ``ready`` when this answers; create sandboxes from it with ``rootfs``, or
    build on it with ``FROM``. The sandbox keeps running: it is frozen only while its
    writable layer is copied (tens of milliseconds); a paused one stays paused. Its
    ``envs`` are not part of the template."""
    record = await services.snapshots.snapshot(user, sandbox_id, name=body.name)
    return JSend(data=TemplateOut.of(record))
