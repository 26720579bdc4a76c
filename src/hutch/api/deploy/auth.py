"""Who calls /agent (a wallet, by signature) and how often (30 requests a minute)."""

from __future__ import annotations

import time
from collections import deque
from typing import Annotated

from fastapi import Depends, Header, Request

from hutch.api.deps import ServicesDep
from hutch.core.errors import RateLimited

__all__ = ["CurrentWallet", "RateLimiter", "rate_limit"]

WINDOW_S = 60.0


class RateLimiter:
    """A sliding window of request times per key, in memory (one control plane)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: dict[tuple[str, str], deque[float]] = {}
        self._swept = time.monotonic()

    def hit(self, key: tuple[str, str]) -> None:
        now = time.monotonic()
        if now - self._swept > WINDOW_S:
            self._sweep(now)
        times = self._seen.setdefault(key, deque())
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        if len(times) >= self.per_minute:
            retry = max(1, round(times[0] + WINDOW_S - now))
            raise RateLimited(
                f"more than {self.per_minute} requests a minute from this address and "
                f"wallet; retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )
        times.append(now)

    def _sweep(self, now: float) -> None:
        self._swept = now
        for key in [k for k, t in self._seen.items() if not t or t[-1] <= now - WINDOW_S]:
            del self._seen[key]


async def rate_limit(request: Request, services: ServicesDep) -> None:
    """Every /agent route: count the request against its (client IP, wallet)."""
    ip = request.client.host if request.client else ""
    wallet = request.headers.get("x-wallet-address", "")[:42].lower()
    services.agent_rate.hit((ip, wallet))


async def _current_wallet(
    services: ServicesDep,
    x_wallet_address: Annotated[str | None, Header(description="The signing wallet.")] = None,
    x_signature: Annotated[
        str | None, Header(description="personal_sign of `{wallet}:{timestamp}:{nonce}`.")
    ] = None,
    x_timestamp: Annotated[str | None, Header(description="Unix time in ms (±60 s).")] = None,
    x_nonce: Annotated[str | None, Header(description="A new UUID per request.")] = None,
) -> str:
    return await services.wallets.verify(x_wallet_address, x_signature, x_timestamp, x_nonce)


CurrentWallet = Annotated[str, Depends(_current_wallet)]
"""The checksummed address that signed the request."""
