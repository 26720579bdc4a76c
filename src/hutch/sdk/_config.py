"""Where the SDK finds its server and key, and how patiently it retries."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

from hutch.sdk.errors import missing_key

__all__ = ["DEFAULT_API_URL", "ClientConfig", "RetryPolicy"]

DEFAULT_API_URL = "http://127.0.0.1:8700"


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with jitter for 429, 503 and lost connections.

    Only calls that are safe to repeat are retried on those (GET, DELETE, file uploads
    that can be replayed, pause and resume); any call is retried when the connection was
    refused, since then nothing was sent. ``Retry-After`` wins over the computed delay,
    up to ``max_delay_s``.
    """

    max_retries: int = 3
    backoff_s: float = 0.5
    max_delay_s: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        if retry_after is not None:
            return min(retry_after, self.max_delay_s)
        computed = self.backoff_s * 2.0**attempt
        return min(computed * random.uniform(0.8, 1.2), self.max_delay_s)


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    api_url: str
    api_key: str = field(repr=False)
    timeout_s: float = 30.0
    """For connecting and between bytes of an answer; exec waits for its command too."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def resolve(
        cls,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> ClientConfig:
        """Arguments first, then ``HUTCH_API_URL`` / ``HUTCH_API_KEY``, then the default URL.

        Raises :class:`~hutch.sdk.errors.ConfigurationError` when there is no key.
        """
        url = api_url or os.environ.get("HUTCH_API_URL") or DEFAULT_API_URL
        key = api_key or os.environ.get("HUTCH_API_KEY")
        if not key:
            raise missing_key()
        return cls(api_url=url.rstrip("/"), api_key=key, timeout_s=timeout_s,
                   retry=retry or RetryPolicy())  # fmt: skip
