"""Who calls /agent (a wallet, by signature) and how often (30 requests a minute)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from hutch.api.deps import ServicesDep

__all__ = ["CurrentWallet", "rate_limit"]


async def rate_limit(request: Request, services: ServicesDep) -> None:
    """Every /agent route: count the request against its (client IP, wallet)."""
    ip = request.client.host if request.client else ""
    wallet = request.headers.get("x-wallet-address", "")[:42].lower()
    services.agent_address_rate.hit((ip, ""))
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
