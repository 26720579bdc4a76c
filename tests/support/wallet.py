"""Wallets for deploy tests: signed /agent headers, and fresh wallets funded on a chain."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from eth_account import Account
from eth_account.messages import encode_defunct

from hutch.payments.signing import signed_text
from tests.support.chain import ANVIL_KEYS, Anvil

__all__ = ["Wallet", "signed"]


def signed(key: str, *, skew_ms: int = 0, nonce: str | None = None,
           wallet: str | None = None) -> tuple[str, str, str, str]:  # fmt: skip
    """``(wallet, signature, timestamp, nonce)`` as a client signs them."""
    account = Account.from_key(key)
    address = wallet or account.address
    timestamp = str(int(time.time() * 1000) + skew_ms)
    nonce = nonce or str(uuid.uuid4())
    signature = account.sign_message(encode_defunct(text=signed_text(address, timestamp, nonce)))
    return address, "0x" + bytes(signature.signature).hex().removeprefix("0x"), timestamp, nonce


@dataclass(frozen=True)
class Wallet:
    key: str
    address: str

    @classmethod
    def new(cls) -> Wallet:
        account = Account.create()
        return cls(key="0x" + bytes(account.key).hex().removeprefix("0x"), address=account.address)

    def headers(self, **extra: str) -> dict[str, str]:
        """A freshly signed request (new nonce, current time)."""
        wallet, signature, timestamp, nonce = signed(self.key)
        return {"X-Wallet-Address": wallet, "X-Signature": signature, "X-Timestamp": timestamp,
                "X-Nonce": nonce, **extra}  # fmt: skip

    def fund(self, anvil: Anvil, token: str, amount: int) -> None:
        """Gas money, and ``amount`` of ``token`` from the account that holds the supply."""
        anvil.web3().provider.make_request("anvil_setBalance", [self.address, hex(10**20)])
        anvil.transfer(token, key=ANVIL_KEYS[0], to=self.address, amount=amount)

    def pay(self, anvil: Anvil, token: str, to: str, amount: int) -> str:
        return anvil.transfer(token, key=self.key, to=to, amount=amount)
