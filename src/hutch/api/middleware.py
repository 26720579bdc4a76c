"""The outermost layer of the app: request ids, body limits, and a last-resort error envelope.

It is a plain ASGI middleware (not ``BaseHTTPMiddleware``) so streaming bodies pass through
untouched, and it sits outside everything else so that no response, not even a crash,
leaves without ``X-Request-ID`` and the dialect's envelope.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hutch import logs
from hutch.api.dialects import error_response
from hutch.api.errors import translate
from hutch.core.errors import HutchError, PayloadTooLarge
from hutch.core.ids import new_ulid

__all__ = ["BodyLimit", "EnvelopeMiddleware", "request_id_for"]

log = logging.getLogger(__name__)

BodyLimit = Callable[[str, str], int | None]
"""``(method, path) -> the most bytes a request body may have``, or None for no limit."""

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_for(incoming: str) -> str:
    """The client's ``X-Request-ID`` if it is a sane one, else a new id."""
    return incoming if _CLIENT_REQUEST_ID.match(incoming) else "req_" + new_ulid()


class EnvelopeMiddleware:
    def __init__(self, app: ASGIApp, *, body_limit: BodyLimit) -> None:
        self.app = app
        self.body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        incoming = headers.get("x-request-id", "")
        request_id = request_id_for(incoming)
        scope.setdefault("state", {})["request_id"] = request_id
        logs.request_id.set(request_id)
        path: str = scope["path"]
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        async def reply(error: HutchError) -> None:
            await error_response(path, error, request_id)(scope, receive, send_with_id)

        limit = self.body_limit(scope["method"], path)
        if limit is not None:
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                await reply(_too_large(limit))
                return
            receive = _limited(receive, limit)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if response_started:
                log.error("error after the response started on %s", path, exc_info=exc)
                return
            error = translate(exc)
            if type(error) is HutchError:
                log.error("unhandled error on %s %s", scope["method"], path, exc_info=exc)
            await reply(error)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than {limit} bytes", field="body")


def _limited(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def receive_at_most() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                # An HTTPException, because FastAPI turns anything else raised while it
                # reads a body into a generic 400.
                raise HTTPException(413, detail=_too_large(limit).message)
        return message

    return receive_at_most
