"""Liveness and readiness probes."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from pydantic import BaseModel

from hutch.api.deps import ServicesDep
from hutch.api.envelopes import JSend, JSendError
from hutch.core.errors import Unavailable

__all__ = ["router"]

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


class Liveness(BaseModel):
    up: bool


class Readiness(BaseModel):
    ready: bool


@router.get("/healthz", summary="Liveness probe")
async def healthz() -> JSend[Liveness]:
    """``{"up": true}`` while the control plane process is alive."""
    return JSend(data=Liveness(up=True))


@router.get(
    "/readyz",
    summary="Readiness probe",
    responses={503: {"model": JSendError, "description": "The database cannot be reached."}},
)
async def readyz(services: ServicesDep) -> JSend[Readiness]:
    """``{"ready": true}`` when the control plane can reach its database, else 503."""
    try:
        await services.db.ping()
    except Exception as exc:
        log.warning("readiness: database unreachable: %s", exc)
        raise Unavailable(
            "the control plane cannot reach its database", code="database_unavailable"
        ) from exc
    return JSend(data=Readiness(ready=True))
