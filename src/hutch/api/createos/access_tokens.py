"""``/v1/sandboxes/{id}/access-token``: a sandbox's delegated credential (``skp_sb_…``).

Only the owner's API key manages it (a token calling these routes gets a 403, decided in
:func:`hutch.core.access_tokens.confine` like every other route).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from hutch.api.createos.responses import AUTH_ERRORS
from hutch.api.deps import CurrentUser, ServicesDep
from hutch.api.envelopes import JSend, JSendFail
from hutch.core.access_tokens import IssuedAccessToken

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/sandboxes/{sandbox_id}/access-token",
    tags=["access tokens"],
    responses={
        **AUTH_ERRORS,
        404: {"model": JSendFail, "description": "No such sandbox (or not yours)."},
    },
)


class AccessTokenIssued(BaseModel):
    token: str = Field(description="The token (skp_sb_…). Shown this once; keep it.")
    enabled: bool
    created_at: datetime
    rotated_at: datetime | None = None

    @classmethod
    def of(cls, issued: IssuedAccessToken) -> AccessTokenIssued:
        return cls(
            token=issued.token,
            enabled=True,
            created_at=issued.created_at,
            rotated_at=issued.rotated_at,
        )


class AccessTokenStatus(BaseModel):
    enabled: bool
    token_hint: str | None = Field(default=None, description="The token, masked.")
    created_at: datetime | None = None
    rotated_at: datetime | None = None


class AccessTokenDisabled(BaseModel):
    enabled: bool = False


@router.post(
    "",
    summary="Create the sandbox's access token",
    responses={409: {"model": JSendFail, "description": "A token is enabled already."}},
)
async def create_access_token(
    sandbox_id: str, user: CurrentUser, services: ServicesDep
) -> JSend[AccessTokenIssued]:
    """A credential for this sandbox alone: send it as ``X-Api-Key`` (or Bearer) to run
    commands, move files, use processes, pause, resume and destroy it. Shown once."""
    record = await services.sandboxes.get(user, sandbox_id)
    issued = await services.access_tokens.create(record)
    return JSend(data=AccessTokenIssued.of(issued))


@router.get("", summary="Whether the sandbox has an access token")
async def get_access_token(
    sandbox_id: str, user: CurrentUser, services: ServicesDep
) -> JSend[AccessTokenStatus]:
    record = await services.sandboxes.get(user, sandbox_id)
    state = await services.access_tokens.state(record)
    return JSend(
        data=AccessTokenStatus(
            enabled=state.enabled,
            token_hint=state.hint,
            created_at=state.created_at,
            rotated_at=state.rotated_at,
        )
    )


@router.post("/rotate", summary="Replace the sandbox's access token")
async def rotate_access_token(
    sandbox_id: str, user: CurrentUser, services: ServicesDep
) -> JSend[AccessTokenIssued]:
    """A new token; the old one is refused from the next request on. 404 without a token."""
    record = await services.sandboxes.get(user, sandbox_id)
    issued = await services.access_tokens.rotate(record)
    return JSend(data=AccessTokenIssued.of(issued))


@router.delete("", summary="Disable the sandbox's access token")
async def disable_access_token(
    sandbox_id: str, user: CurrentUser, services: ServicesDep
) -> JSend[AccessTokenDisabled]:
    """Refused from the next request on. Idempotent."""
    record = await services.sandboxes.get(user, sandbox_id)
    await services.access_tokens.disable(record)
    return JSend(data=AccessTokenDisabled())
