"""Request rates: a sliding window per key, in memory (one control plane per store)."""

from __future__ import annotations

import time
from collections import deque

from hutch.core.errors import RateLimited

__all__ = ["RateLimiter"]

WINDOW_S = 60.0


class RateLimiter:
    """A sliding window of request times per key, in memory (one control plane)."""

    def __init__(self, per_minute: int, *, per: str) -> None:
        self.per_minute = per_minute
        self.per = per  # what a key stands for, in the 429's message
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
                f"more than {self.per_minute} requests a minute from {self.per}; "
                f"retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )
        times.append(now)

    def _sweep(self, now: float) -> None:
        self._swept = now
        for key in [k for k, t in self._seen.items() if not t or t[-1] <= now - WINDOW_S]:
            del self._seen[key]
