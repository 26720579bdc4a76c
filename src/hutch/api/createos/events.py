"""``/v1/events`` (the lifecycle log: pages, or an NDJSON follow) and ``/v1/webhooks``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from hutch.api.createos.responses import AUTH_ERRORS
from hutch.api.deps import CurrentUser, PageParams, ServicesDep
from hutch.api.envelopes import JSend, JSendFail, Page
from hutch.core.events import EventFilter
from hutch.store.events import EVENT_TYPES
from hutch.store.models import WebhookDelivery, WebhookRecord

__all__ = ["router"]

router = APIRouter(tags=["events"], responses={**AUTH_ERRORS})

_TYPES = ", ".join(EVENT_TYPES)


class EventOut(BaseModel):
    id: str = Field(description="evt_… (what a webhook delivery names).")
    seq: int = Field(description="The log's order; pass the last one seen as since=.")
    type: str = Field(description=f"One of {_TYPES}.")
    subject_id: str = Field(description="The sandbox, template or deployment it is about.")
    data: dict[str, Any] = Field(description="name, status, from, reason, forked_from, ….")
    created_at: str


@router.get(
    "/v1/events",
    summary="Lifecycle events, oldest first, or followed as NDJSON",
    response_model=JSend[Page[EventOut]],
    responses={
        200: {
            "content": {
                "application/x-ndjson": {
                    "schema": {
                        "type": "string",
                        "description": "With follow=true: one event per line as committed,"
                        ' and {"type":"heartbeat"} after 15 s without one.',
                    }
                }
            }
        },
        400: {"model": JSendFail, "description": "A bad since or an unknown type."},
        403: {"model": JSendFail, "description": "all=true without an admin key."},
    },
)
async def list_events(
    user: CurrentUser,
    services: ServicesDep,
    page: PageParams,
    since: Annotated[
        str | None,
        Query(max_length=64, description="After this seq, or at/after this ISO 8601 time."),
    ] = None,
    type: Annotated[
        str | None, Query(max_length=512, description="Comma-separated event types.")
    ] = None,
    subject_id: Annotated[str | None, Query(max_length=64)] = None,
    follow: Annotated[bool, Query(description="Stream events as they happen.")] = False,
    all: Annotated[bool, Query(description="Every user's events (admin keys only).")] = False,
) -> Any:
    wanted = EventFilter.parse(since, type, subject_id, all)
    if follow:
        services.events.check(user, wanted)  # refused now, not once the stream has begun
        events = services.events.follow(user, wanted)
        return StreamingResponse(_ndjson(events), media_type="application/x-ndjson")
    items, total = await services.events.page(user, wanted, limit=page.limit, offset=page.offset)
    shown = [EventOut(**item) for item in items]
    return JSend(data=Page.of(shown, total=total, limit=page.limit, offset=page.offset))


async def _ndjson(events: AsyncIterator[dict[str, Any] | None]) -> AsyncIterator[bytes]:
    try:
        async for item in events:
            yield json.dumps(item if item is not None else {"type": "heartbeat"}).encode() + b"\n"
    finally:
        await events.aclose()  # type: ignore[attr-defined]


# --- webhooks -------------------------------------------------------------------------------


class WebhookCreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2048, description="http:// or https://, on a public address.")
    events: list[str] = Field(
        default_factory=lambda: ["*"], max_length=64, description=f'["*"] or some of {_TYPES}.'
    )
    secret: str | None = Field(
        default=None, description="16-256 characters; left out, one is made and shown once."
    )
    description: str = Field(default="", max_length=256)


class WebhookPatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(default=None, max_length=2048)
    events: list[str] | None = Field(default=None, max_length=64)
    description: str | None = Field(default=None, max_length=256)


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str
    created_at: datetime

    @classmethod
    def of(cls, record: WebhookRecord) -> WebhookOut:
        return cls(
            id=record.id,
            url=record.url,
            events=record.events,
            description=record.description,
            created_at=record.created_at,
        )


class WebhookCreated(WebhookOut):
    secret: str = Field(description="Shown this once: verify X-Hutch-Signature with it.")


class DeliveryOut(BaseModel):
    id: str
    event_id: str
    event_type: str
    state: str = Field(description="pending, delivered or failed (out of attempts).")
    attempts: int
    last_status: int | None = Field(description="The receiver's last HTTP status, if any.")
    last_error: str | None
    next_attempt_at: datetime | None = Field(description="While pending.")
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, row: WebhookDelivery) -> DeliveryOut:
        return cls(
            id=row.id,
            event_id=row.event_id,
            event_type=row.event_type,
            state=row.state,
            attempts=row.attempts,
            last_status=row.last_status,
            last_error=row.last_error,
            next_attempt_at=row.next_attempt_at if row.state == "pending" else None,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
        )


class Deleted(BaseModel):
    deleted: bool = True


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": JSendFail, "description": "No such webhook (or not yours)."}
}


@router.post(
    "/v1/webhooks",
    summary="Create a webhook",
    status_code=201,
    responses={
        400: {"model": JSendFail, "description": "A bad url, event type or secret."},
        409: {"model": JSendFail, "description": "Too many webhooks, or no master key."},
    },
)
async def create_webhook(
    body: WebhookCreateBody, user: CurrentUser, services: ServicesDep
) -> JSend[WebhookCreated]:
    """Every event of the listed types is POSTed to ``url`` as JSON, signed:
    ``X-Hutch-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
    made = await services.webhooks.create(
        user, url=body.url, events=body.events, secret=body.secret, description=body.description
    )
    out = WebhookOut.of(made.record)
    return JSend(data=WebhookCreated(**out.model_dump(), secret=made.secret))


@router.get("/v1/webhooks", summary="List webhooks")
async def list_webhooks(
    user: CurrentUser, services: ServicesDep, page: PageParams
) -> JSend[Page[WebhookOut]]:
    rows, total = await services.webhooks.list_for(user, limit=page.limit, offset=page.offset)
    shown = [WebhookOut.of(row) for row in rows]
    return JSend(data=Page.of(shown, total=total, limit=page.limit, offset=page.offset))


@router.get("/v1/webhooks/{webhook_id}", summary="Get a webhook", responses={**_NOT_FOUND})
async def get_webhook(
    webhook_id: str, user: CurrentUser, services: ServicesDep
) -> JSend[WebhookOut]:
    return JSend(data=WebhookOut.of(await services.webhooks.get(user, webhook_id)))


@router.patch(
    "/v1/webhooks/{webhook_id}",
    summary="Change a webhook's url, events or description",
    responses={**_NOT_FOUND, 400: {"model": JSendFail, "description": "A bad value."}},
)
async def patch_webhook(
    webhook_id: str, body: WebhookPatchBody, user: CurrentUser, services: ServicesDep
) -> JSend[WebhookOut]:
    record = await services.webhooks.update(
        user, webhook_id, url=body.url, events=body.events, description=body.description
    )
    return JSend(data=WebhookOut.of(record))


@router.delete("/v1/webhooks/{webhook_id}", summary="Delete a webhook", responses={**_NOT_FOUND})
async def delete_webhook(
    webhook_id: str, user: CurrentUser, services: ServicesDep
) -> JSend[Deleted]:
    """Its pending deliveries are dropped."""
    await services.webhooks.delete(user, webhook_id)
    return JSend(data=Deleted())


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries",
    summary="A webhook's delivery log, newest first",
    responses={**_NOT_FOUND},
)
async def list_deliveries(
    webhook_id: str, user: CurrentUser, services: ServicesDep, page: PageParams
) -> JSend[Page[DeliveryOut]]:
    rows, total = await services.webhooks.deliveries(
        user, webhook_id, limit=page.limit, offset=page.offset
    )
    shown = [DeliveryOut.of(row) for row in rows]
    return JSend(data=Page.of(shown, total=total, limit=page.limit, offset=page.offset))
