"""Who am I: the caller's user id and sandbox counts."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from hutch.api.createos.responses import AUTH_ERRORS
from hutch.api.deps import CurrentUser, ServicesDep
from hutch.api.envelopes import JSend

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["identity"], responses=AUTH_ERRORS)


class WhoamiStats(BaseModel):
    running: int = Field(description="Sandboxes running now (they count toward the cap).")
    paused: int
    other: int = Field(description="Sandboxes in any other non-terminal status.")
    total: int = Field(description="Every sandbox ever owned, destroyed and failed included.")


class Whoami(BaseModel):
    user_id: str
    stats: WhoamiStats


@router.get("/whoami", summary="Identify the caller")
async def whoami(user: CurrentUser, services: ServicesDep) -> JSend[Whoami]:
    """The user the API key belongs to, and a snapshot of its sandbox counts."""
    stats = await services.identity.sandbox_stats(user.user_id)
    return JSend(
        data=Whoami(
            user_id=user.user_id,
            stats=WhoamiStats(
                running=stats.running, paused=stats.paused, other=stats.other, total=stats.total
            ),
        )
    )
