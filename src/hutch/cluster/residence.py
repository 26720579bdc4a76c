"""Which sandboxes live on this agent's host, for the control planes' kept routes.

A control plane keeps where each sandbox lives (:mod:`hutch.cluster.routing`) instead of
asking the store at every request. Only this host's own drain moves a sandbox away
(:mod:`hutch.cluster.drain`; a removed host's agent is never reached again), so the agent
can tell exactly whether a sandbox is still its own: the control plane marks a request it
routed from what it kept with :data:`ROUTED_HEADER`, and :class:`ResidenceMiddleware`
answers it ``421`` with :data:`NOT_HERE_HEADER` unless the sandbox is this host's. The
control plane then forgets the route, asks the store, and passes the request once more
(nothing reached the app here, so that is safe).

What this agent knows, :class:`Residents`, costs no round trip: the sandboxes it made
(their create's 201 passed here), and those whose row it read once since it started and
found its own; a sandbox this host's drain starts to move out is forgotten before the
move begins and is read from the store at every request until the move is over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hutch.api.dialects import error_response
from hutch.api.errors import translate
from hutch.api.middleware import request_id_for
from hutch.core.errors import HutchError
from hutch.core.sandbox_base import MOVED_HEADER
from hutch.store.models import SandboxRecord

__all__ = [
    "NOT_HERE_HEADER", "RESIDENTS", "ROUTED_HEADER", "ResidenceMiddleware", "Residents",
    "created_id",
]  # fmt: skip

ROUTED_HEADER = b"x-hutch-routed-to"
"""Sent by a control plane with a request it routed from a kept route: the host id."""
NOT_HERE_HEADER = b"x-hutch-not-here"
"""On the agent's ``421`` to such a request: the sandbox is not this host's (any more)."""

log = logging.getLogger(__name__)

_ONE_SANDBOX = re.compile(r"^/(?:nullspace/)?v1/sandboxes/([^/]+)(?:/.*)?$")
_CREATE = re.compile(r"^/(?:nullspace/)?v1/sandboxes/?$")
_KEPT_MAX = 200_000


class Residents:
    """The sandboxes known to live on this host (module docstring)."""

    def __init__(self) -> None:
        self._mine: set[str] = set()
        self._moving: set[str] = set()
        self.moves = 0
        """How many moves out have begun; a read of the store notes it first (:meth:`add`)."""
        self._left: dict[str, int] = {}  # a sandbox -> ``moves`` when its last move began

    def knows(self, sandbox_id: str) -> bool:
        return sandbox_id in self._mine

    def forget(self, sandbox_id: str) -> None:
        self._mine.discard(sandbox_id)

    def add(self, sandbox_id: str, *, since: int | None = None) -> bool:
        """Note that ``sandbox_id`` lives here, as a read of the store begun when
        :attr:`moves` was ``since`` found it. False when a move of it began after that read
        did: what the read found may be gone (the move may even be over, the row another
        host's), so nothing is noted and it is not taken as here."""
        if since is not None and self._left.get(sandbox_id, 0) > since:
            return False
        if sandbox_id in self._moving:
            return True  # (here by the row read during the move; read again next time)
        if len(self._mine) >= _KEPT_MAX:
            self._mine.clear()  # read again from the store, one at a time
        self._mine.add(sandbox_id)
        return True

    @contextlib.contextmanager
    def leaving(self, sandbox_id: str) -> Iterator[None]:
        """While this host's drain moves ``sandbox_id``: never known, always read."""
        self.moves += 1
        if len(self._left) >= _KEPT_MAX:
            self._left.clear()
        self._left[sandbox_id] = self.moves
        self._moving.add(sandbox_id)
        self._mine.discard(sandbox_id)
        try:
            yield
        finally:
            self._moving.discard(sandbox_id)


RESIDENTS = Residents()
"""This process's (an agent is one process)."""


class ResidenceMiddleware:
    """On an agent of a cluster: answers ``421`` (:data:`NOT_HERE_HEADER`) to a request
    carrying :data:`ROUTED_HEADER` about a sandbox that is not this host's, and learns the
    sandboxes its creates make."""

    def __init__(self, app: ASGIApp, residents: Residents | None = None) -> None:
        self.app = app
        self.residents = residents or RESIDENTS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope["path"])
        if scope["method"] == "POST" and _CREATE.match(path):
            await self.app(scope, receive, self._learning(send))
            return
        routed = next((v for k, v in scope["headers"] if k == ROUTED_HEADER), None)
        one = _ONE_SANDBOX.match(path) if routed is not None else None
        if one is None:
            await self.app(scope, receive, send)
            return
        try:
            here = await self._here(scope, one.group(1))
        except Exception as exc:  # the store unreachable: the dialect's 503, as the app's
            # (this middleware runs outside the app's EnvelopeMiddleware, which would)
            error = translate(exc)
            if type(error) is HutchError:
                log.error("%s %s: where the sandbox lives could not be read", scope["method"],
                          path, exc_info=exc)  # fmt: skip
            incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
            answer = error_response(path, error, request_id_for(incoming.decode("latin-1")))
            await answer(scope, receive, send)
            return
        if here:
            await self.app(scope, receive, self._moved_is_not_here(one.group(1), send))
            return
        log.info("%s %s: %s is not on this host (any more); answered 421, routed again",
                 scope["method"], path, one.group(1))  # fmt: skip
        body = b'{"status":"fail","data":{"sandbox":"not on this host"}}'
        await send({"type": "http.response.start", "status": 421,
                    "headers": [(b"content-type", b"application/json"), (NOT_HERE_HEADER, b"1"),
                                (b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def _here(self, scope: Scope, sandbox_id: str) -> bool:
        if self.residents.knows(sandbox_id):
            return True
        services = scope["app"].state.services
        since = self.residents.moves  # (a move begun during the read makes it stale)
        async with services.db.sessions() as session:
            host_id = await session.scalar(
                select(SandboxRecord.host_id).where(SandboxRecord.id == sandbox_id)
            )
        if host_id is None:
            return False  # no such id (the control plane asks the store, then any agent)
        if host_id != services.host_agent.host_id:
            return False
        return self.residents.add(sandbox_id, since=since)

    def _moved_is_not_here(self, sandbox_id: str, send: Send) -> Send:
        """``send``, turning the core's refusal of a sandbox another host took (a ``503``
        with :data:`~hutch.core.sandbox_base.MOVED_HEADER`: nothing was done) into this
        middleware's ``421``, and forgetting the sandbox. What this host knew was stale
        (a move it did not see through to the end); the control plane asks the store."""
        moved = MOVED_HEADER.lower().encode()

        async def sending(message: Message) -> None:
            if (message["type"] == "http.response.start" and message["status"] == 503
                    and any(k == moved for k, _ in message.get("headers", []))):  # fmt: skip
                self.residents.forget(sandbox_id)
                log.info("%s was moved off this host; answered 421, routed again", sandbox_id)
                message = {**message, "status": 421,
                           "headers": [*message["headers"], (NOT_HERE_HEADER, b"1")]}  # fmt: skip
            await send(message)

        return sending

    def _learning(self, send: Send) -> Send:
        """``send``, noting the id of the sandbox a ``201`` makes (a small JSON answer)."""
        chunks: list[bytes] | None = None

        async def learning(message: Message) -> None:
            nonlocal chunks
            if message["type"] == "http.response.start":
                chunks = [] if message["status"] == 201 else None
            elif chunks is not None and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if sum(map(len, chunks)) > 1 << 20:
                    chunks = None
                elif not message.get("more_body", False):
                    sandbox_id = created_id(b"".join(chunks))
                    if sandbox_id is not None:
                        self.residents.add(sandbox_id)
            await send(message)

        return learning


def created_id(body: bytes) -> str | None:
    """The id in a create's answer (JSend ``data.id``, or a Nullspace ``id``)."""
    try:
        answer: Any = json.loads(body)
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    data = answer.get("data", answer)
    found = data.get("id") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None
