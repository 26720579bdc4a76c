"""Each API dialect renders hutch's errors in its own envelope; this is the one place that does.

The dialect of a request is chosen by its path, so even an unknown route or a body that is
too large answers in the envelope its client expects.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from starlette.responses import JSONResponse

from hutch.api.envelopes import (
    AgentError,
    JSendError,
    JSendFail,
    NullspaceError,
    NullspaceErrorBody,
)
from hutch.core.errors import HutchError, PaymentRequired

__all__ = ["Dialect", "dialect_for", "error_response"]


class Dialect(ABC):
    prefix: str

    @abstractmethod
    def render(self, error: HutchError, request_id: str) -> JSONResponse: ...

    def matches(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")


class JSendDialect(Dialect):
    """CreateOS (``/v1``, ``/healthz``, ``/readyz``, and anything unclaimed)."""

    prefix = ""

    def matches(self, path: str) -> bool:
        return True

    def render(self, error: HutchError, request_id: str) -> JSONResponse:
        if error.status < 500:
            data: dict[str, str] | str = (
                error.message
                if error.bare
                else dict(error.fields)
                if error.fields
                else {error.field or "message": error.message}
            )
            body = JSendFail(data=data).model_dump()
        else:
            body = JSendError(message=error.message, code=error.status).model_dump()
        return JSONResponse(body, status_code=error.status, headers=error.headers)


class NullspaceDialect(Dialect):
    prefix = "/nullspace"

    def render(self, error: HutchError, request_id: str) -> JSONResponse:
        message = f"{error.field}: {error.message}" if error.field else error.message
        body = NullspaceError(
            error=NullspaceErrorBody(code=error.code, message=message, request_id=request_id)
        )
        return JSONResponse(body.model_dump(), status_code=error.status, headers=error.headers)


class AgentDialect(Dialect):
    """The deploy API (``/agent``, seed 003): ``{"error": "…"}``."""

    prefix = "/agent"

    def render(self, error: HutchError, request_id: str) -> JSONResponse:
        body = AgentError(error=error.message, field=error.field).model_dump(exclude_none=True)
        if isinstance(error, PaymentRequired):
            body |= error.details
        return JSONResponse(body, status_code=error.status, headers=error.headers)


_DIALECTS: tuple[Dialect, ...] = (NullspaceDialect(), AgentDialect(), JSendDialect())


def dialect_for(path: str) -> Dialect:
    return next(dialect for dialect in _DIALECTS if dialect.matches(path))


def error_response(path: str, error: HutchError, request_id: str) -> JSONResponse:
    return dialect_for(path).render(error, request_id)
