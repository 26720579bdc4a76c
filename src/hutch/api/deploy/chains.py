"""``/agent/chains`` and ``/agent/balance/:address``: public, no signature needed."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from hutch.api.deps import SettingsDep
from hutch.api.envelopes import AgentError
from hutch.core.errors import InvalidInput, Unavailable
from hutch.payments.chains import DECIMALS, ChainError, chains_from, format_units, read_balances

__all__ = ["router"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": AgentError, "description": "A bad address or an unknown chain."},
    429: {"model": AgentError, "description": "Rate limited (30 requests/minute)."},
    503: {"model": AgentError, "description": "The chain cannot be read."},
}
router = APIRouter(tags=["deploy"], responses=_ERRORS)
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


class ChainOut(BaseModel):
    chain: str
    chain_id: int
    tokens: list[str]


class ChainsOut(BaseModel):
    chains: list[ChainOut]


class BalanceOut(BaseModel):
    token: str
    symbol: str
    address: str
    balance: str
    balance_raw: str
    decimals: int


class BalancesOut(BaseModel):
    address: str
    chain: str
    chain_id: int
    balances: list[BalanceOut]


@router.get("/chains", summary="Chains and tokens payments are taken in")
async def list_chains(settings: SettingsDep) -> ChainsOut:
    return ChainsOut(chains=[ChainOut(chain=c.name, chain_id=c.chain_id, tokens=list(c.tokens))
                             for c in chains_from(settings).values()])  # fmt: skip


@router.get("/balance/{address}", summary="Token balances of an address, read from the chain")
async def balance(
    address: str,
    settings: SettingsDep,
    chain: Annotated[str, Query(max_length=32, description="arbitrum or base.")] = "arbitrum",
) -> BalancesOut:
    if not _ADDRESS.fullmatch(address):
        raise InvalidInput("address must be 0x and 40 hex digits", field="address")
    chains = chains_from(settings)
    if chain not in chains:
        raise InvalidInput(f"unknown chain {chain!r}; one of {', '.join(chains)}", field="chain")
    try:
        balances = await read_balances(chains[chain], address)
    except ChainError as exc:
        raise Unavailable(str(exc)) from exc
    return BalancesOut(
        address=address, chain=chain, chain_id=chains[chain].chain_id,
        balances=[BalanceOut(token=b.token, symbol=b.token.upper(), address=b.address,
                             balance=format_units(b.raw), balance_raw=str(b.raw),
                             decimals=DECIMALS) for b in balances],
    )  # fmt: skip
