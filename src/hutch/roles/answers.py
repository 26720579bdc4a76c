"""A worker's answers to ``GET /v1/sandboxes/{id}``, kept while the store is unchanged.

Clients poll a sandbox (an SDK waiting for ``running``, a console page, a script), so the
same read comes again and again, and each one through the app costs a worker ~2 ms of
CPU: FastAPI's routing and dependencies, the ORM, the response model, its JSON. What it
answers depends only on the store (the key, the sandbox's record) and on the agent's
proxy port (the ingress URL template), so a worker keeps each 200 it answered and answers
the same request with the same bytes while nothing of that has changed:

- the key must be known to :class:`~hutch.core.identity.IdentityService` without a store
  read (known since the store's last commit, and marked used within the minute: else the
  app reads it, marks it and fails a revoked one);
- the store's change token (:meth:`~hutch.store.db.Database.change_token`, SQLite's
  ``data_version``, moved by any commit of any process) must be the one taken before the
  answer was made, so a sandbox paused, renamed or destroyed by anyone, or a key revoked,
  is answered anew on the very next request; on PostgreSQL there is no token and nothing
  is kept;
- the proxy port must be the same.

Only requests with an ``X-Api-Key`` (not a sandbox's access token) and no query are
kept. Everything else a response carries is made per request as the app would: a new
``X-Request-ID`` (or the client's), the access log line, the Prometheus counts, the log
context (request id, user, sandbox).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hutch import logs
from hutch.api.middleware import request_id_for
from hutch.api.prometheus import observe_request
from hutch.api.services import Services
from hutch.core.identity import hash_key

__all__ = ["SandboxAnswers"]

SANDBOX_PATH = re.compile(r"^/v1/sandboxes/([^/]+)$")
_TEMPLATE = "/v1/sandboxes/{sandbox_id}"
_MOST = 4096
_DROPPED = frozenset({b"x-request-id"})


@dataclass(frozen=True)
class _Answer:
    headers: list[tuple[bytes, bytes]]
    body: bytes
    user_name: str


class SandboxAnswers:
    """The kept answers of one worker (see the module)."""

    def __init__(self, proxy_port: Callable[[], int | None]) -> None:
        self._proxy_port = proxy_port
        self._token: int | None = None
        self._answers: dict[tuple[str, str, int | None], _Answer] = {}

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, *, app: ASGIApp, services: Services
    ) -> None:
        """Answer a GET of :data:`SANDBOX_PATH` from what is kept, or by ``app`` (keeping
        its answer when it may be kept)."""
        started = time.monotonic()
        key = _api_key(scope) if not scope.get("query_string") else None
        if key is None:
            await app(scope, receive, send)
            return
        key_hash = hash_key(key)
        token = services.db.change_token()
        port = self._proxy_port()
        principal = services.identity.known(key_hash, token)
        if principal is not None and principal.sandbox_id is None and token == self._token:
            answer = self._answers.get((principal.user_id, scope["path"], port))
            if answer is not None:
                await _send(scope, send, answer, started)
                return
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        parts: list[bytes] = []

        async def kept(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers.extend(message.get("headers", ()))
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
            await send(message)

        await app(scope, receive, kept)
        if status != 200 or len(parts) != 1 or token is None:
            return
        # Who the app served, as it knew them from the store at ``token`` (or earlier): if
        # anyone committed meanwhile, the key is not known at ``token`` and nothing is kept.
        principal = services.identity.known(key_hash, token)
        if principal is None or principal.sandbox_id is not None:
            return
        if token != self._token or len(self._answers) >= _MOST:
            self._answers.clear()
            self._token = token
        self._answers[(principal.user_id, scope["path"], port)] = _Answer(
            headers=[(k, v) for k, v in headers if k not in _DROPPED],
            body=parts[0],
            user_name=principal.user_name,
        )


def _api_key(scope: Scope) -> str | None:
    """The ``X-Api-Key`` header as the app reads it (the first one), if not empty."""
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            return value.decode("latin-1") or None
    return None


async def _send(scope: Scope, send: Send, answer: _Answer, started: float) -> None:
    incoming = ""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            incoming = value.decode("latin-1")
            break
    request_id = request_id_for(incoming)
    logs.request_id.set(request_id)
    logs.user_id.set(answer.user_name)
    match = SANDBOX_PATH.match(scope["path"])
    logs.sandbox_id.set(match.group(1) if match else None)
    headers = [*answer.headers, (b"x-request-id", request_id.encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    observe_request(_TEMPLATE, "GET", 200, time.monotonic() - started)
    await send({"type": "http.response.body", "body": answer.body, "more_body": False})
