"""``/v1/templates``: users' own images from a Dockerfile (CreateOS §14), in the CreateOS
dialect. Logs are plain text, or NDJSON with ``follow=true``; errors are JSend."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from hutch.api.createos.responses import AUTH_ERRORS
from hutch.api.deps import CurrentUser, PageParams, ServicesDep
from hutch.api.envelopes import JSend, JSendFail, Page
from hutch.core.templates.dockerfile import MAX_DOCKERFILE_BYTES
from hutch.core.templates.service import TemplateSubmit
from hutch.store.models import TemplateRecord

__all__ = ["router"]

router = APIRouter(prefix="/v1/templates", tags=["templates"], responses=AUTH_ERRORS)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": JSendFail, "description": "No such template (or not yours)."}
}


class TemplateCreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=63, description="Yours; used again, it builds a new version.")
    dockerfile: str = Field(
        max_length=MAX_DOCKERFILE_BYTES, description="The Dockerfile's text, at most 64 KiB."
    )
    base: str | None = Field(
        default=None, max_length=256, description="If given, must be what FROM names."
    )
    context: str | None = Field(
        default=None,
        description="The build context for COPY/ADD: a tar (plain, gz, bz2, xz) or zip "
        "archive, base64; at most HUTCH_TEMPLATE_MAX_CONTEXT_BYTES.",
    )


class TemplateOut(BaseModel):
    id: str
    name: str
    version: int
    base: str
    status: Literal["pending", "building", "ready", "failed", "cancelled"]
    reason: str | None = Field(description="Why it failed or was cancelled.")
    ext4_size_bytes: int = Field(description="Bytes in the template's own layers.")
    created_at: datetime
    started_at: datetime | None
    built_at: datetime | None
    attempts: int
    steps_total: int = Field(description="RUN/COPY/ADD steps of the last build.")
    steps_cached: int = Field(description="Of those, how many came from the layer cache.")
    start_cmd: list[str] | None = Field(description="CMD/ENTRYPOINT: run when a sandbox starts.")
    env: dict[str, str]
    workdir: str
    user: str = Field(description="USER: who exec and the start command run as ('' is root).")
    labels: dict[str, str]
    exposed_ports: list[str]
    dockerfile: str | None = Field(default=None, description="Only with ?include=dockerfile.")

    @classmethod
    def of(cls, record: TemplateRecord, *, dockerfile: bool = False) -> TemplateOut:
        return cls(
            id=record.id,
            name=record.name,
            version=record.version,
            base=record.base,
            status=record.status,
            reason=record.reason,
            ext4_size_bytes=record.size_bytes,
            created_at=record.created_at,
            started_at=record.started_at,
            built_at=record.built_at,
            attempts=record.attempts,
            steps_total=record.steps_total,
            steps_cached=record.steps_cached,
            start_cmd=record.start_cmd,
            env=record.env,
            workdir=record.workdir,
            user=record.run_as,
            labels=record.labels,
            exposed_ports=record.exposed,
            dockerfile=record.dockerfile if dockerfile else None,
        )


class Ok(BaseModel):
    ok: bool = True


@router.get("", summary="List your templates")
async def list_templates(
    user: CurrentUser, services: ServicesDep, page: PageParams
) -> JSend[Page[TemplateOut]]:
    records, total = await services.templates.list_templates(
        user, limit=page.limit, offset=page.offset
    )
    return JSend(
        data=Page.of(
            [TemplateOut.of(r) for r in records], total=total, limit=page.limit, offset=page.offset
        )
    )


@router.post(
    "",
    status_code=201,
    summary="Build a template from a Dockerfile",
    responses={
        403: {"model": JSendFail, "description": "Over your number of templates."},
        413: {"model": JSendFail, "description": "The build context is over the cap."},
    },
)
async def create_template(
    body: TemplateCreateBody, user: CurrentUser, services: ServicesDep
) -> JSend[TemplateOut]:
    """Answers at once with the template ``pending``; the build follows (see ``…/logs``).
    A Dockerfile that breaks a rule is a 400 naming its line."""
    record = await services.templates.create(
        user,
        TemplateSubmit(
            name=body.name, dockerfile=body.dockerfile, base=body.base, context=body.context
        ),
    )
    return JSend(data=TemplateOut.of(record))


@router.get("/{template_id}", summary="Get a template", responses=_NOT_FOUND)
async def get_template(
    template_id: str,
    user: CurrentUser,
    services: ServicesDep,
    include: Annotated[
        Literal["dockerfile"] | None, Query(description="dockerfile: add the Dockerfile.")
    ] = None,
) -> JSend[TemplateOut]:
    """By id, or by name (the newest version)."""
    record = await services.templates.get(user, template_id)
    return JSend(data=TemplateOut.of(record, dockerfile=include == "dockerfile"))


@router.delete("/{template_id}", summary="Delete a template", responses=_NOT_FOUND)
async def delete_template(template_id: str, user: CurrentUser, services: ServicesDep) -> JSend[Ok]:
    """By id (that version) or by name (every version). Sandboxes made from it keep
    working and resuming; new creates naming it are a 404."""
    await services.templates.delete(user, template_id)
    return JSend(data=Ok())


@router.post(
    "/{template_id}/cancel",
    summary="Stop a template's build",
    responses={
        **_NOT_FOUND,
        409: {"model": JSendFail, "description": "The build has already ended."},
    },
)
async def cancel_template(
    template_id: str, user: CurrentUser, services: ServicesDep
) -> JSend[TemplateOut]:
    return JSend(data=TemplateOut.of(await services.templates.cancel(user, template_id)))


@router.get(
    "/{template_id}/logs",
    summary="A template's build log",
    response_model=None,
    responses={
        **_NOT_FOUND,
        200: {
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/x-ndjson": {
                    "schema": {
                        "type": "string",
                        "description": "With follow=true: "
                        '{"ts","level","line","attempt"} per line, then '
                        '{"final": true, "status"}.',
                    }
                },
            }
        },
    },
)
async def template_logs(
    template_id: str,
    user: CurrentUser,
    services: ServicesDep,
    follow: Annotated[bool, Query(description="Stream NDJSON until the build ends.")] = False,
    attempt: Annotated[
        int | None, Query(ge=1, le=1_000_000, description="Only this build attempt.")
    ] = None,
) -> Response:
    if not follow:
        text = await services.templates.logs(user, template_id, attempt=attempt)
        return PlainTextResponse(text)
    events = await services.templates.follow(user, template_id, attempt=attempt)
    return StreamingResponse(_ndjson(events), media_type="application/x-ndjson")


async def _ndjson(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for event in events:
        yield json.dumps(event).encode() + b"\n"
