"""Wallet-signed requests (EIP-191 over wallet:timestamp:nonce) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from eth_account import Account

from hutch.core.errors import Unauthenticated
from hutch.core.wallets import WalletAuth
from hutch.store.db import Database
from tests.support.chain import ANVIL_KEYS
from tests.support.wallet import signed as support_signed

pytestmark = pytest.mark.anyio


def signed(key: str = ANVIL_KEYS[1], **kwargs: Any) -> tuple[str, str, str, str]:
    return support_signed(key, **kwargs)


async def test_a_signed_request_passes_once(db: Database) -> None:
    auth = WalletAuth(db)
    request = signed()
    assert await auth.verify(*request) == Account.from_key(ANVIL_KEYS[1]).address
    with pytest.raises(Unauthenticated, match="already used"):
        await auth.verify(*request)


async def test_every_bad_signature_is_refused(db: Database) -> None:
    auth = WalletAuth(db)
    other = Account.from_key(ANVIL_KEYS[2]).address
    wallet, signature, timestamp, nonce = signed()
    cases = {
        "missing": (wallet, None, timestamp, nonce),
        "stale": signed(skew_ms=-61_000),
        "future": signed(skew_ms=61_000),
        "someone else's": signed(wallet=other),
        "malformed": (wallet, "0x1234", timestamp, nonce),
        "not a uuid": signed(nonce="n-1"),
        "bad address": ("0x123", signature, timestamp, nonce),
        "tampered timestamp": (wallet, signature, str(int(timestamp) + 1), nonce),
    }
    for name, request in cases.items():
        try:
            await auth.verify(*request)
        except Unauthenticated:
            continue
        raise AssertionError(f"{name}: accepted")


async def test_racing_requests_with_one_nonce_pass_once(db: Database) -> None:
    auth = WalletAuth(db)
    request = signed()
    results = await asyncio.gather(*(auth.verify(*request) for _ in range(4)),
                                   return_exceptions=True)  # fmt: skip
    assert sum(not isinstance(r, BaseException) for r in results) == 1
