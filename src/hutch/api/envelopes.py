"""Response envelopes as pydantic models, so the OpenAPI document shows the real bodies."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, Field

__all__ = [
    "WARM_HEADER",
    "JSend",
    "JSendError",
    "JSendFail",
    "NullspaceError",
    "Page",
    "Pagination",
]

WARM_HEADER = "X-Hutch-Warm"
"""On a create's answer (both dialects): ``1`` if the sandbox came from the warm pool."""

T = TypeVar("T")


class JSend(BaseModel, Generic[T]):
    """CreateOS success: ``{"status": "success", "data": …}``."""

    status: Literal["success"] = "success"
    data: T


class JSendFail(BaseModel):
    """CreateOS client error (4xx): ``data`` maps the field at fault (or ``message``) to why;
    a few answers carry the reason alone as a string (``"sandbox access token not found"``)."""

    status: Literal["fail"] = "fail"
    data: dict[str, str] | str


class JSendError(BaseModel):
    """CreateOS server error (5xx)."""

    status: Literal["error"] = "error"
    message: str
    code: int


class Pagination(BaseModel):
    total: int = Field(description="Items in the whole collection.")
    limit: int
    offset: int
    count: int = Field(description="Items in this page.")


class Page(BaseModel, Generic[T]):
    """A page of a list: ``{"data": […], "pagination": {…}}``."""

    data: list[T]
    pagination: Pagination

    @classmethod
    def of(cls, items: list[T], *, total: int, limit: int, offset: int) -> Page[T]:
        return cls(
            data=items,
            pagination=Pagination(total=total, limit=limit, offset=offset, count=len(items)),
        )


class NullspaceErrorBody(BaseModel):
    code: str
    message: str
    request_id: str


class NullspaceError(BaseModel):
    """Nullspace error: ``{"error": {"code", "message", "request_id"}}``."""

    error: NullspaceErrorBody


class AgentError(BaseModel):
    """Deploy API (``/agent``) error: ``{"error": "…", "field": …}``, the seed's plain shape."""

    error: str
    field: str | None = None
