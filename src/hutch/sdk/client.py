"""The async client: one server, one key, one pooled connection."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from hutch.sdk._config import ClientConfig, RetryPolicy
from hutch.sdk._http import Transport

__all__ = ["AsyncClient", "resolve_client"]


class AsyncClient:
    """A connection to one hutch server (any server speaking the CreateOS dialect).

    The URL and key come from the arguments, else ``HUTCH_API_URL`` and ``HUTCH_API_KEY``,
    else the URL defaults to ``http://127.0.0.1:8700``; with no key at all this raises
    :class:`~hutch.sdk.errors.ConfigurationError`. Pass one client to many calls
    (``AsyncSandbox.create(client=…)``) to share its connection pool. :meth:`aclose`
    releases the sockets; the client reconnects if it is used again.
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        config: ClientConfig | None = None,
    ) -> None:
        self.config = config or ClientConfig.resolve(
            api_url=api_url, api_key=api_key, timeout_s=timeout_s, retry=retry
        )
        self.transport = Transport(self.config)

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self.config.api_url!r})"


def resolve_client(
    client: AsyncClient | None, api_url: str | None, api_key: str | None
) -> AsyncClient:
    """``client`` if given, else a new one from the arguments and the environment."""
    if client is not None:
        if api_url is not None or api_key is not None:
            raise TypeError("pass either client= or api_url=/api_key=, not both")
        return client
    return AsyncClient(api_url, api_key)
