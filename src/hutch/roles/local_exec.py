"""A worker runs ``POST /v1/sandboxes/{id}/exec`` itself when the sandbox runs on its host.

Passed through, an exec costs two HTTP hops of Python (worker → host agent → guest agent)
and the agent's event loop, shared with everything else it does. A worker can reach a
running sandbox's guest agent as well as the host agent can (the same machine, the same
home, its socket in the same 0700 tree), so it runs the exec route of its own app, with
the very same code (:class:`~hutch.core.sandboxes.SandboxService`): the same checks, the
same envelope, the same output caps and stream frames.

It does so only while the sandbox is ``running`` on this host. Anything else (paused, and
perhaps resumed by the exec: ``auto_resume``; starting, stopped, on another host) is the
host agent's: the route raises :class:`ToAgent` before anything reached the sandbox, the
worker drops that answer and passes the request (its body kept) to the agent, which
answers it exactly as before. The activity the agent would have noted for auto-pause is
noted where it reads it (:mod:`hutch.roles.activity`) when the exec starts and ends.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hutch.api.prometheus import PASSED_ON
from hutch.core.errors import HutchError
from hutch.core.identity import Principal
from hutch.core.sandbox_status import SandboxStatus
from hutch.core.sandboxes import SandboxService
from hutch.roles.activity import ActivityFiles
from hutch.roles.forward import replaying
from hutch.store.models import SandboxRecord

__all__ = ["EXEC_PATH", "TO_AGENT_HEADER", "ToAgent", "WorkerSandboxes", "exec_here_or_agent"]

EXEC_PATH = re.compile(r"^/v1/sandboxes/[^/]+/exec$")
TO_AGENT_HEADER = PASSED_ON


class ToAgent(HutchError):
    """Not for this worker: the host agent answers this request (never sent to a client)."""

    status = 421
    default_code = "to_agent"

    def __init__(self) -> None:
        super().__init__("the host agent answers this", headers={TO_AGENT_HEADER.decode(): "1"})


class WorkerSandboxes(SandboxService):
    """A worker's sandbox service: it runs commands only in sandboxes running here."""

    activity: ActivityFiles | None = None

    async def _running(self, user: Principal, ident: str) -> SandboxRecord:
        # As SandboxExec._running, less what only the agent may do (auto-resume).
        token = self._running_records.token()
        record = self._running_records.get((user.user_id, ident), token)
        if record is None:
            record = await self.get(user, ident)  # NotFound: the same 404 as the agent's
            self._running_records.put((user.user_id, ident), token, record)
        if record.status != SandboxStatus.RUNNING or record.host_id != self._host.host_id:
            raise ToAgent()
        self._touch(record.id)
        return record

    def _touch(self, sandbox_id: str) -> None:
        if self.activity is not None:
            self.activity.note(sandbox_id)


async def exec_here_or_agent(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    local: ASGIApp,
    logged: Callable[[Send], Send],
    agent: Callable[[Scope, Receive, Send], Awaitable[None]],
    max_body: int,
    plain: Callable[[Scope, bytes, Send], Awaitable[bool]] | None = None,
) -> None:
    """Answer an exec request with ``plain`` (:mod:`hutch.roles.exec_answer`: the common
    form, without the framework) or ``local`` (the worker's app), both answering through
    ``logged(send)``, or, if they raise :class:`ToAgent`, with ``agent``; the body is read
    first so that any of them can have it."""
    length = _content_length(scope)
    if length is None or length > max_body:
        await agent(scope, receive, send)  # streamed or too large: the agent says so
        return
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client went away before its body came
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(parts)

    answer = logged(send)
    if plain is not None and await plain(scope, body, answer):
        return
    passed = False

    async def unless_to_agent(message: Message) -> None:
        nonlocal passed
        if message["type"] == "http.response.start" and any(
            name == TO_AGENT_HEADER for name, _ in message.get("headers", ())
        ):
            passed = True
        if not passed:
            await answer(message)

    await local(scope, replaying(body, receive), unless_to_agent)
    if passed:
        await agent(scope, replaying(body, receive), send)


def _content_length(scope: Scope) -> int | None:
    length = None
    for name, value in scope["headers"]:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            if not value.isdigit() or length is not None:
                return None
            length = int(value)
    return length
