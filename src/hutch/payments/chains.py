"""The chains and tokens hutch takes payment in, and reading balances from them.

Two chains, ``arbitrum`` (42161) and ``base`` (8453), each with ``usdc`` and ``usdt`` (6
decimals). RPC URLs, token addresses and the chain id come from configuration, with the
mainnet token addresses as defaults, so an operator (or a test) can point hutch at any
chain; the id the RPC reports must match the configured one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hutch.settings import Settings

__all__ = ["CHAIN_NAMES", "Chain", "ChainError", "TokenBalance", "chains_from", "read_balances"]

CHAIN_NAMES = ("arbitrum", "base")
TOKENS = ("usdc", "usdt")
DECIMALS = 6
RPC_TIMEOUT_S = 10.0

_ERC20_ABI: list[dict[str, Any]] = [
    {"name": "balanceOf", "type": "function", "stateMutability": "view",
     "inputs": [{"name": "owner", "type": "address"}],
     "outputs": [{"name": "", "type": "uint256"}]},
]  # fmt: skip


class ChainError(Exception):
    """A chain could not be reached or disagrees with its configuration."""


@dataclass(frozen=True, kw_only=True)
class Chain:
    name: str
    chain_id: int
    rpc_url: str
    tokens: dict[str, str]  # token name -> contract address
    confirmations: int


@dataclass(frozen=True, kw_only=True)
class TokenBalance:
    token: str
    address: str
    raw: int


def chains_from(settings: Settings) -> dict[str, Chain]:
    chains = {}
    for name in CHAIN_NAMES:
        chains[name] = Chain(
            name=name,
            chain_id=getattr(settings, f"chain_{name}_chain_id"),
            rpc_url=getattr(settings, f"chain_{name}_rpc_url"),
            tokens={token: getattr(settings, f"chain_{name}_{token}") for token in TOKENS},
            confirmations=getattr(settings, f"chain_{name}_confirmations"),
        )
    return chains


def format_units(raw: int) -> str:
    return f"{Decimal(raw) / (10**DECIMALS):.{DECIMALS}f}"


async def read_balances(chain: Chain, owner: str) -> list[TokenBalance]:
    """``balanceOf(owner)`` of each token, read from the chain (in a thread)."""
    if not chain.rpc_url:
        raise ChainError(f"no RPC URL is configured for {chain.name}")
    return await asyncio.to_thread(_read_balances, chain, owner)


def _read_balances(chain: Chain, owner: str) -> list[TokenBalance]:
    from hutch.payments.eth import Web3, Web3Exception

    w3 = Web3(Web3.HTTPProvider(chain.rpc_url, request_kwargs={"timeout": RPC_TIMEOUT_S}))
    try:
        actual = w3.eth.chain_id
        if actual != chain.chain_id:
            raise ChainError(f"the {chain.name} RPC serves chain {actual}, not {chain.chain_id}")
        balances = []
        for token, address in chain.tokens.items():
            contract = w3.eth.contract(address=Web3.to_checksum_address(address), abi=_ERC20_ABI)
            raw = int(contract.functions.balanceOf(Web3.to_checksum_address(owner)).call())
            balances.append(TokenBalance(token=token, address=address, raw=raw))
    except (Web3Exception, OSError, ValueError) as exc:
        raise ChainError(f"cannot read from {chain.name}: {type(exc).__name__}") from exc
    return balances
