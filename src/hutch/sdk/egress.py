"""A sandbox's way out: its egress rules (``sandbox.egress``) and its bandwidth.

Rules are CreateOS's: ``host``, ``host:port``, ``*.host``, ``ip``, ``ip:port``, ``cidr``,
``cidr:port`` and ``*``. An empty list (or ``["*"]``) is open, minus the server's platform
deny set; one real rule allows only what the rules name. A bad rule is an
:class:`~hutch.sdk.errors.InvalidRequestError` naming it (``egress[i]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hutch.sdk._http import Transport

__all__ = ["AsyncEgress", "Bandwidth"]


@dataclass(frozen=True, kw_only=True)
class Bandwidth:
    """A sandbox's outbound internet quota and what it used (control traffic such as
    exec and files is not counted)."""

    id: str
    quota_bytes: int
    """Outbound bytes allowed in all; -1 is unmetered."""
    used_bytes: int
    ingress_bytes: int
    """Inbound bytes, counted, never capped."""
    remaining_bytes: int
    """``quota_bytes - used_bytes`` (may dip below 0 by what was in flight); -1 unmetered."""
    capped: bool
    """True while outbound internet traffic is dropped; a recharge lifts it."""
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def unmetered(self) -> bool:
        return self.quota_bytes < 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Bandwidth:
        return cls(
            id=str(data["id"]), quota_bytes=int(data["quota_bytes"]),
            used_bytes=int(data["used_bytes"]), ingress_bytes=int(data.get("ingress_bytes", 0)),
            remaining_bytes=int(data["remaining_bytes"]), capped=bool(data["capped"]),
            raw=dict(data),
        )  # fmt: skip


class AsyncEgress:
    """``sandbox.egress``: read and replace the sandbox's egress rules."""

    def __init__(self, transport: Transport, sandbox_id: str) -> None:
        self._transport = transport
        self._sandbox_id = sandbox_id

    def _path(self) -> str:
        return f"/v1/sandboxes/{self._sandbox_id}/egress"

    async def get(self) -> list[str]:
        """The rules in force (``[]`` when the sandbox has none)."""
        data = await self._transport.data("GET", self._path(), idempotent=True,
                                          subjects={"sandbox": self._sandbox_id})  # fmt: skip
        return [str(rule) for rule in data.get("egress") or ()]

    async def set(self, rules: Sequence[str]) -> list[str]:
        """Replace the rules, atomically and live: new connections follow them when this
        returns, and open ones to places they no longer allow are cut. ``[]`` opens it."""
        if isinstance(rules, str):
            raise TypeError("rules is a list of strings, not one string")
        data = await self._transport.data(
            "PUT", self._path(), idempotent=True, json={"egress": list(rules)},
            subjects={"sandbox": self._sandbox_id},
        )  # fmt: skip
        return [str(rule) for rule in data.get("egress") or ()]


async def fetch_bandwidth(transport: Transport, sandbox_id: str) -> Bandwidth:
    data = await transport.data("GET", f"/v1/sandboxes/{sandbox_id}/bandwidth", idempotent=True,
                                subjects={"sandbox": sandbox_id})  # fmt: skip
    return Bandwidth.from_json(data)


async def recharge_bandwidth(transport: Transport, sandbox_id: str, add_bytes: int) -> Bandwidth:
    # Not idempotent: a retried recharge whose first answer was lost would add twice.
    data = await transport.data(
        "POST", f"/v1/sandboxes/{sandbox_id}/bandwidth/recharge", idempotent=False,
        json={"add_bytes": add_bytes}, subjects={"sandbox": sandbox_id},
    )  # fmt: skip
    return Bandwidth.from_json(data)
