"""Wallet-signed requests (EIP-191 over wallet:timestamp:nonce) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from hutch.core.errors import Unauthenticated
from hutch.core.wallets import WalletAuth, signed_text
from hutch.store.db import Database
from tests.support.chain import ANVIL_KEYS

pytestmark = pytest.mark.anyio


def signed(key: str = ANVIL_KEYS[1], *, skew_ms: int = 0, nonce: str | None = None,
           wallet: str | None = None) -> tuple[str, str, str, str]:  # fmt: skip
    account = Account.from_key(key)
    address = wallet or account.address
    timestamp = str(int(time.time() * 1000) + skew_ms)
    nonce = nonce or str(uuid.uuid4())
    signature = account.sign_message(encode_defunct(text=signed_text(address, timestamp, nonce)))
    return address, "0x" + bytes(signature.signature).hex().removeprefix("0x"), timestamp, nonce


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
        with pytest.raises(Unauthenticated):
            await auth.verify(*request)
        assert name


async def test_racing_requests_with_one_nonce_pass_once(db: Database) -> None:
    auth = WalletAuth(db)
    request = signed()
    results = await asyncio.gather(*(auth.verify(*request) for _ in range(4)),
                                   return_exceptions=True)  # fmt: skip
    assert sum(not isinstance(r, BaseException) for r in results) == 1
