"""Turning every failure into a :class:`HutchError`, and every HutchError into a response.

Framework errors (unknown routes, wrong methods, bad bodies) and lower-level errors (the
database going away) are translated here and nowhere else.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from hutch.api.dialects import error_response
from hutch.core import errors as e

__all__ = ["install_error_handlers", "request_id_of", "translate"]

log = logging.getLogger(__name__)

_BY_STATUS: dict[int, type[e.HutchError]] = {
    400: e.InvalidInput,
    401: e.Unauthenticated,
    403: e.PermissionDenied,
    404: e.NotFound,
    405: e.MethodNotAllowed,
    409: e.Conflict,
    413: e.PayloadTooLarge,
    429: e.RateLimited,
    503: e.Unavailable,
}
_DATABASE_DOWN = "the control plane cannot reach its database; try again shortly"
_DISK_FULL = (
    "the control plane's disk is full: nothing was changed; try again once the operator "
    "has freed space"
)


def translate(exc: BaseException) -> e.HutchError:
    """The HutchError a client should see for ``exc``. Unknown errors become a bare 500."""
    if isinstance(exc, e.HutchError):
        return exc
    if _is_disk_full(exc):
        return e.Unavailable(_DISK_FULL, code="disk_full")
    if isinstance(exc, DBAPIError) and _is_unavailable(exc):
        return e.Unavailable(_DATABASE_DOWN, code="database_unavailable")
    if isinstance(exc, (DisconnectionError, PoolTimeoutError, ConnectionError, TimeoutError)):
        return e.Unavailable(_DATABASE_DOWN, code="database_unavailable")
    return e.HutchError("internal error; the server log has the details")


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return isinstance(exc, DBAPIError) and "disk is full" in str(exc.orig).lower()


def _is_unavailable(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower()
    markers = (
        "database is locked",
        "connection",
        "closed",
        "terminat",
        "shutting down",
        "unable to open",
        "disk i/o",
        "timeout",
    )
    return any(marker in text for marker in markers) or isinstance(
        exc.orig, (OSError, ConnectionError, TimeoutError)
    )


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc[1:]] if len(loc) > 1 else [str(part) for part in loc]
    return ".".join(parts) or "body"


def validation_error(exc: RequestValidationError) -> e.InvalidInput:
    fields: dict[str, str] = {}
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        kind = error.get("type", "")
        if kind == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "not valid JSON")
            fields["body"] = f"malformed JSON: {reason}"
        elif kind == "missing" and loc == ("body",):
            fields["body"] = "a JSON request body is required"
        else:
            fields.setdefault(_field_of(loc), str(error.get("msg", "invalid value")))
    first_field, first_reason = next(iter(fields.items()), ("body", "invalid request"))
    return e.InvalidInput(first_reason, field=first_field, fields=fields)


def http_error(request: Request, exc: HTTPException) -> e.HutchError:
    if exc.status_code == 404:
        path = request.url.path[:200]
        return e.NotFound(f"no such route: {request.method} {path}", code="route_not_found")
    if exc.status_code == 405:
        return e.MethodNotAllowed(
            f"{request.method} is not allowed on {request.url.path[:200]}",
            headers=dict(exc.headers or {}),
        )
    kind = _BY_STATUS.get(exc.status_code)
    if kind is None:
        kind = e.InvalidInput if exc.status_code < 500 else e.HutchError
    detail = exc.detail if isinstance(exc.detail, str) else "request failed"
    return kind(detail, headers=dict(exc.headers or {}))


def install_error_handlers(app: FastAPI) -> None:
    async def on_hutch_error(request: Request, exc: Exception) -> Response:
        error = translate(exc)
        if type(error) is e.HutchError:
            log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        elif error is not exc:  # the store failed: the client gets a 503, the operator why
            log.warning("%s %s: %s (%s)", request.method, request.url.path, error.message,
                        exc, exc_info=exc)  # fmt: skip
        return error_response(request.url.path, error, request_id_of(request))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(request.url.path, validation_error(exc), request_id_of(request))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(request.url.path, http_error(request, exc), request_id_of(request))

    app.add_exception_handler(e.HutchError, on_hutch_error)
    app.add_exception_handler(DBAPIError, on_hutch_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
