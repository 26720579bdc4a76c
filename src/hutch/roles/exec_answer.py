"""A worker's plain exec, answered without the framework's request machinery.

An exec of a running sandbox is the API's hottest request after a read, and through the
app a worker spent more of its time on the framework (routing over every route, solving
the dependencies, the middleware layers) than on the exec itself. So a worker answers the
common form of ``POST /v1/sandboxes/{id}/exec`` here, with the very same parts the route
uses: the route's body model (:class:`~hutch.api.createos.sandboxes.ExecBody`, validated
as the app validates it), its command (``_command``), the sandbox service's
:meth:`~hutch.core.sandbox_exec.SandboxExec.exec`, the route's response models, and the
dialect's error envelope (:func:`~hutch.api.dialects.error_response`) for what the service
raises.

Only what is known to be the app's happy path comes here: an ``X-Api-Key`` that
:class:`~hutch.core.identity.IdentityService` knows without a store read (not a sandbox
access token), a JSON body the model accepts with no ``stream``, no query string. For
anything else (a body the model refuses, an unknown or revoked key, ``stream``, a sandbox
this worker does not run: :class:`~hutch.roles.local_exec.ToAgent`) nothing has been sent
and nothing has run, and the app (or the agent) answers as before: every refusal keeps
its one source. What a response carries beyond its body is made as the app makes it: the
``X-Request-ID`` (the client's, or a new one), the log context (request id, user,
sandbox), the Prometheus counts, the access log line (by the caller's ``send``).
"""

from __future__ import annotations

import json
import logging
import time

from pydantic import ValidationError
from starlette.responses import JSONResponse
from starlette.types import Scope, Send

from hutch import logs
from hutch.api.createos.sandboxes import ExecBody, ExecOut, _command
from hutch.api.dialects import error_response
from hutch.api.envelopes import JSend
from hutch.api.errors import translate
from hutch.api.middleware import request_id_for
from hutch.api.prometheus import observe_request
from hutch.api.services import Services
from hutch.core.errors import HutchError
from hutch.core.identity import hash_key
from hutch.roles.local_exec import ToAgent

__all__ = ["answer_exec"]

log = logging.getLogger(__name__)

_TEMPLATE = "/v1/sandboxes/{sandbox_id}/exec"


async def answer_exec(scope: Scope, body: bytes, send: Send, *, services: Services) -> bool:
    """Answer ``POST /v1/sandboxes/{id}/exec`` with ``body`` on ``send``; False when it is
    not the plain form (see the module), with nothing sent and nothing run."""
    started = time.monotonic()
    if scope.get("query_string"):
        return False
    key = None
    content_type = b""
    incoming = ""
    for name, value in scope["headers"]:
        if name == b"x-api-key" and key is None:
            key = value.decode("latin-1")
        elif name == b"content-type":
            content_type = value
        elif name == b"x-request-id" and not incoming:
            incoming = value.decode("latin-1")
    if not key or content_type.split(b";", 1)[0].strip().lower() != b"application/json":
        return False
    principal = services.identity.known(hash_key(key), services.db.change_token())
    if principal is None or principal.sandbox_id is not None:
        return False
    try:
        parsed = ExecBody.model_validate(json.loads(body))
    except (ValueError, ValidationError):  # (json's errors are ValueErrors)
        return False
    if parsed.stream:
        return False
    sandbox_id = scope["path"].split("/")[3]  # (uvicorn decoded the path, as for the app)
    request_id = request_id_for(incoming)
    logs.request_id.set(request_id)
    logs.user_id.set(principal.user_name)
    logs.sandbox_id.set(sandbox_id)
    try:
        result = await services.sandboxes.exec(principal, sandbox_id, _command(parsed))
    except ToAgent:  # raised before anything reached the sandbox
        return False
    except Exception as exc:  # as the app's handlers and envelope answer it
        error = translate(exc)
        if type(error) is HutchError:
            log.error("unhandled error on POST %s", scope["path"], exc_info=exc)
        elif error is not exc:
            log.warning("POST %s: %s (%s)", scope["path"], error.message, exc, exc_info=exc)
        response = error_response(scope["path"], error, request_id)
    else:
        response = JSONResponse(JSend(data=ExecOut.of(result)).model_dump(mode="json"))
    response.headers["X-Request-ID"] = request_id
    observe_request(_TEMPLATE, "POST", response.status_code, time.monotonic() - started)
    await send(
        {"type": "http.response.start", "status": response.status_code,
         "headers": response.raw_headers}
    )  # fmt: skip
    await send({"type": "http.response.body", "body": response.body, "more_body": False})
    return True
