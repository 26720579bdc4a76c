"""``/v1/api-keys``: your API keys, made and revoked over HTTP (an admin's: anyone's).

A key is shown once, when it is made; afterwards only its prefix. A revoked key is refused
from its next request on, at every API worker. Sandbox access tokens may not use these
routes (403), as with every route that is not about their own sandbox.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from hutch.api.createos.responses import AUTH_ERRORS
from hutch.api.deps import CurrentUser, ServicesDep
from hutch.api.envelopes import JSend, JSendFail
from hutch.core.identity import KeyInfo

__all__ = ["router"]

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"], responses={**AUTH_ERRORS})


class ApiKeyOut(BaseModel):
    id: str
    prefix: str = Field(description="The start of the key, to tell keys apart.")
    user_id: str
    user: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: KeyInfo) -> ApiKeyOut:
        return cls(
            id=key.id, prefix=key.prefix, user_id=key.user_id, user=key.user_name,
            created_at=key.created_at, last_used_at=key.last_used_at, revoked_at=key.revoked_at,
        )  # fmt: skip


class ApiKeyCreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str | None = Field(
        default=None, max_length=64, description="Admin keys only: whose key (made if new)."
    )


class ApiKeyMade(BaseModel):
    id: str
    key: str = Field(description="The key (hk_…). Shown this once; keep it.")
    user_id: str
    user: str


@router.get(
    "",
    summary="List your API keys",
    responses={403: {"model": JSendFail, "description": "all=true without an admin key."}},
)
async def list_keys(
    user: CurrentUser,
    services: ServicesDep,
    all: Annotated[bool, Query(description="Every user's keys (admin keys only).")] = False,
) -> JSend[list[ApiKeyOut]]:
    """Newest last; revoked ones too (with ``revoked_at``)."""
    keys = await services.identity.keys_of(user, all_users=all)
    return JSend(data=[ApiKeyOut.of(key) for key in keys])


@router.post(
    "",
    summary="Make an API key",
    status_code=201,
    responses={
        400: {"model": JSendFail, "description": "A bad user name."},
        403: {"model": JSendFail, "description": "A key for another user, without admin."},
    },
)
async def create_key(
    user: CurrentUser, services: ServicesDep, body: ApiKeyCreateBody | None = None
) -> JSend[ApiKeyMade]:
    issued = await services.identity.issue_key_for(user, body.user if body else None)
    return JSend(
        data=ApiKeyMade(
            id=issued.key_id, key=issued.key, user_id=issued.user_id, user=issued.user_name
        )
    )


@router.delete(
    "/{key_id}",
    summary="Revoke an API key",
    responses={404: {"model": JSendFail, "description": "No such key (or not yours)."}},
)
async def revoke_key(key_id: str, user: CurrentUser, services: ServicesDep) -> JSend[ApiKeyOut]:
    """Refused from its next request on, even if it is the key of this request."""
    return JSend(data=ApiKeyOut.of(await services.identity.revoke_key_of(user, key_id)))
