"""One HTTP connection to a server: retries, the JSend envelope, and error translation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Protocol

import httpx

from hutch import __version__
from hutch.sdk import errors
from hutch.sdk._config import ClientConfig

__all__ = ["Identified", "Transport", "ident", "parse_time"]

PAGE_LIMIT = 500

_RETRY_STATUSES = frozenset({429, 503})
_NOTHING_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


class Identified(Protocol):
    """Anything with a server-side id: a sandbox, network or disk object, sync or async."""

    @property
    def id(self) -> str: ...


def ident(thing: str | Identified) -> str:
    return thing if isinstance(thing, str) else thing.id


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 timestamp from the server, or None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


class Transport:
    """Sends requests to one server with one key, over a pooled httpx connection.

    The connection opens on first use and again after :meth:`aclose`, so closing only
    releases sockets; it never makes the transport unusable.
    """

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None or self._http.is_closed:
            self._http = httpx.AsyncClient(
                base_url=self.config.api_url,
                headers={"X-Api-Key": self.config.api_key,
                         "User-Agent": f"hutch-python-sdk/{__version__}"},
                timeout=httpx.Timeout(self.config.timeout_s),
            )  # fmt: skip
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def data(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        subjects: Mapping[str, str] | None = None,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        http_timeout: httpx.Timeout | None = None,
    ) -> Any:
        """Send and return the success envelope's ``data`` (or the whole body if it has none).

        ``http_timeout`` replaces the client's own for this call.
        """
        async with self.stream(
            method, path, idempotent=idempotent, subjects=subjects, json=json, params=params,
            content=content, headers=headers, http_timeout=http_timeout,
        ) as response:  # fmt: skip
            await response.aread()
        try:
            body = response.json()
        except ValueError as exc:
            raise errors.HutchError(
                f"{method} {path} answered {response.status_code} with a body that is not "
                f"JSON; is {self.config.api_url} a hutch (CreateOS) server?",
                status=response.status_code,
            ) from exc
        if isinstance(body, dict) and body.get("status") == "success" and "data" in body:
            return body["data"]
        return body

    async def pages(
        self,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        subjects: Mapping[str, str] | None = None,
    ) -> list[Any]:
        """Every item of a paginated list (``{"data": [...], "pagination": {"total"}}``)."""
        items: list[Any] = []
        while True:
            page = await self.data(
                "GET", path, idempotent=True, subjects=subjects,
                params={**(params or {}), "limit": PAGE_LIMIT, "offset": len(items)},
            )  # fmt: skip
            batch = page.get("data", []) if isinstance(page, dict) else page
            items.extend(batch)
            total = page.get("pagination", {}).get("total") if isinstance(page, dict) else None
            if not batch or not isinstance(total, int) or len(items) >= total:
                return items

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        subjects: Mapping[str, str] | None = None,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        http_timeout: httpx.Timeout | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Send and yield the 2xx response with its body unread; raise the SDK's error else.

        Retries follow the config's :class:`RetryPolicy`: any request when nothing was sent
        (connection refused), and ``idempotent`` ones also on 429, 503 and lost connections,
        unless their body is a stream that has already been sent.
        """
        client = self._client()
        request = client.build_request(
            method, path, json=json, params=params, content=content, headers=headers,
            timeout=http_timeout or httpx.USE_CLIENT_DEFAULT,
        )  # fmt: skip
        replayable = content is None or isinstance(content, bytes)
        policy = self.config.retry
        attempt = 0
        while True:
            try:
                response = await client.send(request, stream=True)
            except httpx.TransportError as exc:
                safe = isinstance(exc, _NOTHING_SENT) or (
                    idempotent and replayable and not isinstance(exc, httpx.TimeoutException)
                )
                if safe and attempt < policy.max_retries:
                    await asyncio.sleep(policy.delay(attempt))
                    attempt += 1
                    continue
                raise errors.from_transport(
                    exc, api_url=self.config.api_url, attempts=attempt + 1
                ) from exc
            if response.is_success:
                break
            await response.aread()
            await response.aclose()
            retryable = idempotent and replayable and response.status_code in _RETRY_STATUSES
            if retryable and attempt < policy.max_retries:
                await asyncio.sleep(policy.delay(attempt, errors.retry_after(response)))
                attempt += 1
                continue
            raise errors.from_response(response, subjects=subjects or {}, attempts=attempt + 1)
        try:
            yield response
        except httpx.TransportError as exc:
            raise errors.StreamError(
                f"the answer to {method} {path} broke off ({type(exc).__name__}: {exc}); "
                "repeat the call once the server is reachable"
            ) from exc
        finally:
            await response.aclose()
