"""The control plane's side of the cluster: which agent each request goes to.

- a create (``POST /v1/sandboxes``, ``POST /nullspace/v1/sandboxes``): the host the
  :class:`~hutch.cluster.placement.Placer` picks for its shape, image, ``host_id`` and
  ``node_selector``; the body (JSON, small) is read here to decide and passed on as it came;
- anything about one sandbox (``/v1/sandboxes/{id or name}/…`` and the Nullspace twin:
  exec and its streams, files, processes and their WebSockets, tunnels, pause, fork, …):
  the agent of the host the sandbox lives on (a name is resolved for the caller's key);
- the rest (networks, disks, templates, deploys, events, …): any active host's agent,
  since every agent serves the API against the shared store.

Requests go over TCP to the agent's registered address with its host token in
:data:`~hutch.cluster.joiner.AGENT_TOKEN_HEADER`, through the same unbuffered
pass-through as on one machine (:class:`~hutch.roles.forward.AgentForwarder`).

Where a sandbox lives is kept here (by id: what its create's answer said, or the store
once) rather than asked of the store at every request. A request routed from what was
kept carries :data:`~hutch.cluster.residence.ROUTED_HEADER`; an agent that no longer
has the sandbox (its drain moved it) answers ``421`` without doing anything, and the
request is routed again from the store (:mod:`hutch.cluster.residence`). Only requests
whose whole body is read here (up to the JSON body limit: an exec, most calls) and that
ask for no upgrade (WebSockets, tunnels) use what was kept; the others ask the store
first, as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from starlette.types import Message, Receive, Scope, Send

from hutch.api.dialects import error_response
from hutch.api.errors import translate
from hutch.api.services import Services
from hutch.cluster.images import ImageSource, ensure_image
from hutch.cluster.joiner import AGENT_TOKEN_HEADER
from hutch.cluster.membership import Membership
from hutch.cluster.oneshot import OneShot
from hutch.cluster.placement import Placed, PlacementRequest, Placer
from hutch.cluster.residence import NOT_HERE_HEADER, ROUTED_HEADER, created_id
from hutch.cluster.tls import client_context, explain, tls_enabled
from hutch.core.access_tokens import RouteCall, is_access_token
from hutch.core.catalog import ROOTFS_CATALOG
from hutch.core.errors import HutchError, Unauthenticated, Unavailable
from hutch.core.identity import hash_key
from hutch.roles.forward import AgentForwarder, AgentRefused, replaying
from hutch.settings import Settings
from hutch.store import sandboxes as sandbox_store
from hutch.store.db import Database
from hutch.store.models import ApiKey, Host, SandboxRecord, utcnow

__all__ = ["ClusterRouter"]

log = logging.getLogger(__name__)

_CREATE = re.compile(r"^/(nullspace/)?v1/sandboxes/?$")
_ONE_SANDBOX = re.compile(r"^/(?:nullspace/)?v1/sandboxes/([^/]+)(?:/.*)?$")
_NULLSPACE_TEMPLATES = {"base": "devbox:1", "node": "node"}
_CATALOG = {image.name for image in ROOTFS_CATALOG}
_RUNTIMES = ("runc", "gvisor")  # what a create's ``runtime`` may say
_AGENT_KEEP_S = 1.0
_ROUTES_KEPT = 100_000


@dataclass(frozen=True)
class _Agent:
    host_id: str
    address: str
    token: str


class ClusterRouter:
    """An ASGI app passing each request to the right host's agent (module docstring).

    ``state`` is the worker app's state: its services and membership, there once its
    lifespan has run (the identity and template services resolve names for the caller)."""

    def __init__(self, settings: Settings, state: Any) -> None:
        self._settings = settings
        self._state = state  # the worker app's state: services, membership (its lifespan)
        self._forwarders: dict[str, tuple[_Agent, AgentForwarder]] = {}
        self._rng = random.Random()
        self._placing: Placer | None = None
        self._oneshot: OneShot | None = None
        self._agents: dict[str, tuple[float, _Agent | None]] = {}  # by host, kept a moment
        self._routes: dict[str, str] = {}  # sandbox id -> its host, as last known
        self._tls: ssl.SSLContext | None = None

    def _placer(self) -> Placer:
        if self._placing is None:
            self._placing = Placer(self._db, dead_after_s=self._settings.host_dead_after_s,
                                   cpu_overcommit=self._settings.cpu_overcommit,
                                   oneshot=self._reads())  # fmt: skip
        return self._placing

    def _reads(self) -> OneShot:
        if self._oneshot is None:
            self._oneshot = OneShot.of(self._db)
        return self._oneshot

    def _services(self) -> Services:
        services: Services = self._state.services
        return services

    @property
    def _db(self) -> Database:
        return self._services().db

    def _membership(self) -> Membership:
        membership: Membership = self._state.membership
        return membership

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = uuid.uuid4().hex
        scope = _without_routed(scope)  # only this control plane says it
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            if scope["method"] == "POST" and _CREATE.match(scope["path"]):
                await self._create(scope, receive, sending)
                return
            agent = None
            if one := _ONE_SANDBOX.match(scope["path"]):
                if one.group(1) in self._routes and not _upgrade(scope):
                    await self._kept_route(scope, receive, sending, one.group(1))
                    return
                agent = await self._agent_of_sandbox(scope, one.group(1))
            if agent is None:
                agent = await self._any_agent()
        except Exception as exc:
            if started:
                raise
            # A store it cannot read (down, restarting, its pool's wait over) is the
            # dialect's 503 here too, as the agents answer it, not a bare 500.
            error = translate(exc)
            if type(error) is HutchError:
                log.error("%s %s: not routed", scope["method"], scope["path"], exc_info=exc)
            await error_response(scope["path"], error, request_id)(scope, receive, send)
            return
        await self._forwarder(agent)(scope, receive, send)

    async def _kept_route(self, scope: Scope, receive: Receive, send: Send, ident: str) -> None:
        """Pass the request to the host kept for ``ident``; routed again from the store if
        its agent says the sandbox is not there (module docstring)."""
        body, more = await _read_body(receive, self._settings.max_json_body_bytes)
        host_id = self._routes.get(ident)
        agent = await self._agent(host_id) if host_id is not None and not more else None
        if agent is not None:
            routed = {**scope, "headers": [*scope["headers"],
                                           (ROUTED_HEADER, agent.host_id.encode())]}  # fmt: skip
            elsewhere = False

            async def unless_elsewhere(message: Message) -> None:
                nonlocal elsewhere
                if message["type"] == "http.response.start" and message["status"] == 421:
                    elsewhere = any(k == NOT_HERE_HEADER for k, _ in message["headers"])
                if not elsewhere:
                    await send(message)

            await self._forwarder(agent)(routed, replaying(body, receive), unless_elsewhere)
            if not elsewhere:
                return
        self._routes.pop(ident, None)
        try:
            found = await self._agent_of_sandbox(scope, ident) or await self._any_agent()
        except HutchError as exc:
            await error_response(scope["path"], exc, uuid.uuid4().hex)(scope, receive, send)
            return
        await self._forwarder(found)(scope, replaying(body, receive, more=more), send)

    def _keep_route(self, sandbox_id: str, host_id: str) -> None:
        if len(self._routes) >= _ROUTES_KEPT:
            self._routes.clear()
        self._routes[sandbox_id] = host_id

    # -- creates ------------------------------------------------------------------------

    async def _create(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Who asks comes first: a request without a valid key (a 401 in the dialect's
        # words) never holds room on a host, nor has a host copy an image.
        await self._check_key(scope)
        body, more = await _read_body(receive, self._settings.max_json_body_bytes)
        replay = replaying(body, receive, more=more)
        want = await self._placement_request(scope, body) if not more else None
        if want is None:  # not something placement can read: any agent says what is wrong
            await self._forwarder(await self._any_agent())(scope, replay, send)
            return
        placer = self._placer()
        placed = await placer.place(want)
        released = False
        answer: list[bytes] | None = None

        async def send_released(message: Message) -> None:
            # The hold goes before the client hears the answer: by then the sandbox's row
            # counts, and a next create must not see the room taken twice.
            nonlocal released, answer
            if message["type"] == "http.response.start" and not released:
                released = True
                answer = [] if message["status"] == 201 else None
                await _release(placer, placed)
            elif message["type"] == "http.response.body" and answer is not None:
                answer.append(message.get("body", b""))  # the new sandbox's id: kept
                if not message.get("more_body", False):
                    if (made := created_id(b"".join(answer))) is not None:
                        self._keep_route(made, placed.host_id)
                    answer = None
            await send(message)

        try:
            agent = await self._agent(placed.host_id)
            if agent is None:
                raise Unavailable(f"host {placed.host_id!r} has no address to reach its agent")
            if placed.sources:  # it lacks the image: its agent fetches it (cluster/images.py)
                found = [await self._agent(h) for h in placed.sources]
                holders = [_source(a) for a in found if a is not None]
                await ensure_image(self._settings, _source(agent), want.image, holders)
            await self._forwarder(agent)(scope, replay, send_released)
        finally:
            if not released:
                await asyncio.shield(_release(placer, placed))

    async def _placement_request(self, scope: Scope, body: bytes) -> PlacementRequest | None:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        if scope["path"].startswith("/nullspace/"):
            image = _NULLSPACE_TEMPLATES.get(str(data.get("template", "base")))
            if image is None:
                return None
            first = self._settings.shapes[0]
            return PlacementRequest(mem_mib=first.mem_mib, vcpu=first.vcpu, image=image)
        shape = next((s for s in self._settings.shapes if s.id == data.get("shape")), None)
        selector = data.get("node_selector") or {}
        host_id = data.get("host_id")
        rootfs = data.get("rootfs") or self._settings.default_rootfs
        runtime = data.get("runtime") or ""
        if shape is None or not isinstance(selector, dict) or not isinstance(rootfs, str):
            return None
        if host_id is not None and not isinstance(host_id, str):
            return None
        if runtime not in ("", *_RUNTIMES):  # not one: any agent's 400 says so
            return None
        image = rootfs
        if rootfs not in _CATALOG:
            user_id = await self._caller(scope)
            if user_id is None:
                return None
            try:
                image = await self._services().templates.image_for(user_id, rootfs)
            except HutchError:
                return None
        return PlacementRequest(
            mem_mib=shape.mem_mib, vcpu=shape.vcpu, image=image, runtime=runtime,
            host_id=host_id or None,
            node_selector={str(k): str(v) for k, v in selector.items()},
        )  # fmt: skip

    # -- which agent --------------------------------------------------------------------

    async def _agent_of_sandbox(self, scope: Scope, ident: str) -> _Agent | None:
        # By id (what clients use most): its host's agent in one statement.
        rows = await self._reads().rows(
            select(SandboxRecord.host_id, Host.address, Host.token_sealed)
            .outerjoin(Host, Host.id == SandboxRecord.host_id)
            .where(SandboxRecord.id == ident)
        )
        host_id: str | None = rows[0][0] if rows else None
        agent = self._agent_of(host_id, rows[0][1], rows[0][2]) if rows and host_id else None
        if agent is not None and host_id is not None:
            self._keep_route(ident, host_id)
        if not rows:
            user_id = await self._caller(scope, ident)
            if user_id is not None:
                async with self._db.sessions() as session:
                    record = await sandbox_store.find_for_user(session, user_id, ident)
                if record is not None and record.host_id is not None:
                    host_id = record.host_id
                    agent = await self._agent(host_id)
        if host_id is None:
            return None  # any agent answers the 404 (or 401) in the dialect's words
        if agent is None and scope["method"] == "DELETE" and _is_sandbox_itself(scope, ident):
            # Its host was removed (hutch hosts rm --force): nothing of it is left to reach,
            # and any agent can mark it destroyed (else it would stay, undeletable).
            return None
        if agent is None:
            raise Unavailable(
                f"the sandbox's host {host_id!r} has left the cluster",
                headers={"Retry-After": "5"},
            )
        return agent

    async def _check_key(self, scope: Scope) -> None:
        """Unauthenticated unless the request's API key is valid: for a user's key, one
        statement on the placer's connections (the agent reads the key again, and notes
        its use); a sandbox access token as the identity service says (it creates
        nothing)."""
        key = _api_key(scope)
        if not key or is_access_token(key):
            await self._services().identity.authenticate(key)
            return
        rows = await self._reads().rows(
            select(ApiKey.revoked_at).where(ApiKey.key_hash == hash_key(key))
        )
        if not rows or rows[0][0] is not None:
            raise Unauthenticated("invalid or revoked API key")

    async def _caller(self, scope: Scope, ident: str | None = None) -> str | None:
        """The user the request's key acts for; with ``ident`` (a sandbox's id or name in
        the path), as on that sandbox's routes, so that a sandbox access token, which names
        its own sandbox by name too, finds its owner's sandbox (and no other)."""
        key = _api_key(scope)
        if not key:
            return None
        try:
            route = (
                RouteCall(
                    method="GET",
                    template="/v1/sandboxes/{sandbox_id}",
                    params={"sandbox_id": ident},
                )
                if ident is not None
                else None
            )
            principal = await self._services().identity.authenticate(key, route)
        except HutchError:
            return None
        return str(principal.user_id)

    async def _agent(self, host_id: str) -> _Agent | None:
        """The agent of ``host_id`` (kept a second: its address and token change only when
        it joins again, and a create asks right after its placement)."""
        now = time.monotonic()
        kept = self._agents.get(host_id)
        if kept is not None and now - kept[0] < _AGENT_KEEP_S:
            return kept[1]
        rows = await self._reads().rows(
            select(Host.address, Host.token_sealed).where(Host.id == host_id)
        )
        agent = self._agent_of(host_id, rows[0][0], rows[0][1]) if rows else None
        if len(self._agents) > 10_000:
            self._agents.clear()
        self._agents[host_id] = (now, agent)
        return agent

    def _agent_of(self, host_id: str, address: str | None, sealed: str | None) -> _Agent | None:
        token = self._membership().token_of(sealed)
        if address is None or token is None:
            return None
        return _Agent(host_id, address, token)

    def _agent_for(self, host: Host) -> _Agent | None:
        return self._agent_of(host.id, host.address, host.token_sealed)

    async def _any_agent(self) -> _Agent:
        fresh = utcnow() - timedelta(seconds=self._settings.host_dead_after_s)
        async with self._db.sessions() as session:
            hosts = list(
                await session.scalars(
                    select(Host)
                    .where(Host.status != "dead", Host.heartbeat_at >= fresh)
                    .where(Host.address.is_not(None))
                )
            )
        agents = [a for a in map(self._agent_for, hosts) if a is not None]
        if not agents:
            raise Unavailable("no host has joined the cluster, or none is answering; "
                              "see hutch hosts ls", headers={"Retry-After": "5"})  # fmt: skip
        return self._rng.choice(agents)

    def _forwarder(self, agent: _Agent) -> AgentForwarder:
        known = self._forwarders.get(agent.host_id)
        if known is not None and known[0] == agent:
            return known[1]
        if known is not None:  # it joined again: a new token, maybe a new address
            asyncio.get_running_loop().create_task(known[1].aclose())
        split = urlsplit(agent.address)
        secure = split.scheme == "https"
        host = split.hostname or "127.0.0.1"
        port = split.port or (443 if secure else 80)

        async def opener() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            context = self._tls_context() if secure else None
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(host, port, limit=1 << 18, ssl=context,
                                            ssl_handshake_timeout=5 if context else None),
                    timeout=5,
                )  # fmt: skip
            except ssl.SSLError as exc:  # not worth retrying: said at once, and logged
                raise AgentRefused(f"host {agent.host_id}'s agent: {explain(exc)}") from None

        forwarder = AgentForwarder(
            None, wait_s=5.0, opener=opener, headers=[(AGENT_TOKEN_HEADER, agent.token.encode())]
        )
        self._forwarders[agent.host_id] = (agent, forwarder)
        return forwarder

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            if not tls_enabled(self._settings):  # refused at join; an old row may say so
                raise AgentRefused("the agent serves https, and this control plane has "
                                   "no HUTCH_TLS_* to reach it with")  # fmt: skip
            self._tls = client_context(self._settings)
        return self._tls

    async def aclose(self) -> None:
        for _, forwarder in self._forwarders.values():
            await forwarder.aclose()
        if self._oneshot is not None:
            await self._oneshot.aclose()


def _source(agent: _Agent) -> ImageSource:
    return ImageSource(agent.host_id, agent.address, agent.token)


def _is_sandbox_itself(scope: Scope, ident: str) -> bool:
    """Whether the path is the sandbox's own (``…/sandboxes/{ident}``), not one under it."""
    return str(scope["path"]).rstrip("/").endswith(f"/sandboxes/{ident}")


async def _release(placer: Placer, placed: Placed) -> None:
    try:
        await placer.release(placed)
    except Exception:  # the hold expires by itself
        log.warning("could not release placement hold %s", placed.hold_id, exc_info=True)


def _upgrade(scope: Scope) -> bool:
    """Whether the request asks for an upgrade (a WebSocket, a tunnel): routed from the
    store, its bytes spliced as they come."""
    return scope["type"] != "http" or any(k == b"upgrade" for k, _ in scope["headers"])


def _without_routed(scope: Scope) -> Scope:
    """``scope`` without a :data:`ROUTED_HEADER` a client sent."""
    if not any(k == ROUTED_HEADER for k, _ in scope["headers"]):
        return scope
    return {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != ROUTED_HEADER]}


def _api_key(scope: Scope) -> str | None:
    """The request's API key (``X-Api-Key``, else ``Authorization: Bearer``), as the
    agents read it."""
    key = None
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            key = value.decode("latin-1")
        elif name == b"authorization" and value[:7].lower() == b"bearer ":
            key = key or value[7:].decode("latin-1").strip()
    return key or None


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The request body up to ``limit`` bytes; True when more was left unread."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False
        if size > limit:
            return b"".join(chunks), True
