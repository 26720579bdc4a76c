"""Dependencies shared by the routes, as ``Annotated`` aliases so handlers read plainly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from hutch import logs
from hutch.api.services import Services
from hutch.core.access_tokens import RouteCall
from hutch.core.identity import Principal
from hutch.settings import Settings

__all__ = [
    "CurrentUser",
    "PageParams",
    "ServicesDep",
    "SettingsDep",
    "accepted_subprotocol",
    "authenticate_connection",
    "route_call",
    "subprotocol_key",
]

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
MAX_OFFSET = 1_000_000_000  # databases take 64-bit integers; nobody pages this far


# Dependencies are ``async def`` even where they do not await: FastAPI runs a plain
# ``def`` dependency in a thread pool, a thread hop (~0.1-0.5 ms) per request each.


async def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(_services)]


async def _settings(services: ServicesDep) -> Settings:
    return services.settings


SettingsDep = Annotated[Settings, Depends(_settings)]

_api_key_header = APIKeyHeader(
    name="X-Api-Key", auto_error=False, description="Your hutch API key."
)
_bearer = HTTPBearer(auto_error=False, description="The same API key, as a Bearer token.")


def route_call(connection: HTTPConnection) -> RouteCall | None:
    """The route a request or WebSocket matched, as the access-token rules read it."""
    route = connection.scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str):
        return None
    method = "WEBSOCKET" if connection.scope["type"] == "websocket" else connection.scope["method"]
    return RouteCall(method=method, template=template, params=dict(connection.path_params))


async def _current_user(
    request: Request,
    services: ServicesDep,
    api_key: Annotated[str | None, Depends(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    # Every route authenticates here, and a sandbox access token is confined here by the
    # route's path template, so a route added later needs nothing of its own.
    key = api_key or (bearer.credentials if bearer is not None else None)
    principal = await services.identity.authenticate(key, route_call(request))
    logs.user_id.set(principal.user_name)
    if "sandbox_id" in request.path_params:
        logs.sandbox_id.set(str(request.path_params["sandbox_id"]))
    return principal


async def authenticate_connection(connection: HTTPConnection) -> Principal:
    """Who a WebSocket (or any connection that cannot use :data:`CurrentUser`) acts as:
    the same headers, the same rules for sandbox access tokens."""
    services: Services = connection.app.state.services
    authorization = connection.headers.get("authorization", "")
    key = (
        connection.headers.get("x-api-key")
        or (authorization[7:].strip() if authorization[:7].lower() == "bearer " else None)
        or subprotocol_key(connection)
    )
    return await services.identity.authenticate(key or None, route_call(connection))


WEBSOCKET_SUBPROTOCOL = "hutch"
"""The subprotocol a WebSocket route accepts when the client offered it (a browser that
offers any must get one of them back)."""

_KEY_SUBPROTOCOL = "hutch.key."


def subprotocol_key(connection: HTTPConnection) -> str | None:
    """A browser's WebSocket cannot send headers: the console offers the subprotocols
    ``hutch`` and ``hutch.key.<key>``. The key then travels in a request header
    (``Sec-WebSocket-Protocol``) like ``X-Api-Key``, never in a URL that logs keep; the
    answer names only ``hutch``."""
    if connection.scope["type"] != "websocket":
        return None
    for offered in connection.scope.get("subprotocols", []):
        if isinstance(offered, str) and offered.startswith(_KEY_SUBPROTOCOL):
            return offered[len(_KEY_SUBPROTOCOL) :] or None
    return None


def accepted_subprotocol(connection: HTTPConnection) -> str | None:
    """``hutch`` when the client offered it, for ``websocket.accept(subprotocol=…)``."""
    offered = connection.scope.get("subprotocols", [])
    return WEBSOCKET_SUBPROTOCOL if WEBSOCKET_SUBPROTOCOL in offered else None


CurrentUser = Annotated[Principal, Depends(_current_user)]


@dataclass(frozen=True, kw_only=True)
class _Page:
    limit: int
    offset: int


async def _page(
    limit: Annotated[
        int, Query(ge=1, le=MAX_PAGE_SIZE, description="Max items to return (maximum 500).")
    ] = DEFAULT_PAGE_SIZE,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Pagination offset.")] = 0,
) -> _Page:
    return _Page(limit=limit, offset=offset)


PageParams = Annotated[_Page, Depends(_page)]
