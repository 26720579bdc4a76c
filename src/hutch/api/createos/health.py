"""Liveness and readiness probes."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from hutch.api.deps import ServicesDep
from hutch.api.envelopes import JSend, JSendError

__all__ = ["router"]

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])

# The monitor runs every few seconds; this long without a finished pass means it is stuck.
SCHEDULER_STALE_S = 60.0


class Liveness(BaseModel):
    up: bool


class Readiness(BaseModel):
    ready: bool
    reason: str | None = Field(default=None, description="Why not ready (absent when ready).")
    scheduler_last_ok_ms_ago: int | None = Field(
        description="Milliseconds since the sandbox monitor (auto-pause, expiry, error "
        "detection) last finished a pass; null before its first."
    )


class NotReady(JSendError):
    data: Readiness


@router.get("/healthz", summary="Liveness probe")
async def healthz() -> JSend[Liveness]:
    """``{"up": true}`` while the control plane process is alive."""
    return JSend(data=Liveness(up=True))


@router.get(
    "/readyz",
    summary="Readiness probe",
    response_model=JSend[Readiness],
    response_model_exclude_none=True,
    responses={
        503: {
            "model": NotReady,
            "description": "Not ready: the database cannot be reached, or the sandbox "
            "monitor has not finished a pass for a minute. The same fields, in `data`.",
        }
    },
)
async def readyz(services: ServicesDep) -> Any:
    """``{ready, scheduler_last_ok_ms_ago}`` (200) when the control plane can reach its
    database and its sandbox monitor runs; else 503 with ``ready: false`` and a ``reason``."""
    ago = services.sandboxes.scheduler_last_ok_s_ago()
    ago_ms = None if ago is None else round(ago * 1000)
    reason = None
    try:
        await services.db.ping()
    except Exception as exc:
        log.warning("readiness: database unreachable: %s", exc)
        reason = "the control plane cannot reach its database"
    if reason is None and ago is None:
        reason = "the sandbox monitor has not finished its first pass"
    elif reason is None and ago is not None and ago > SCHEDULER_STALE_S:
        reason = f"the sandbox monitor has not finished a pass for {ago:.0f} s"
    readiness = Readiness(ready=reason is None, reason=reason, scheduler_last_ok_ms_ago=ago_ms)
    if reason is None:
        return JSend(data=readiness)
    body = NotReady(message=reason, code=503, data=readiness)
    return JSONResponse(body.model_dump(mode="json"), status_code=503)
