"""Who is calling /agent: a wallet, proven by an EIP-191 signature per request.

The client signs the exact text ``{wallet}:{timestamp}:{nonce}`` with ``personal_sign``
and sends ``X-Wallet-Address``, ``X-Signature``, ``X-Timestamp`` (Unix milliseconds) and
``X-Nonce`` (a UUID). A request is accepted when the signature recovers to the wallet, the
timestamp is within 60 s of now, and the nonce was never used before (the store's primary
key decides, so two racing requests with one nonce cannot both pass).
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from hutch.core.errors import Unauthenticated
from hutch.payments.signing import signed_text
from hutch.store.db import Database
from hutch.store.models import AgentNonce, utcnow

__all__ = ["WalletAuth", "signed_text"]

MAX_SKEW_MS = 60_000
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_KEEP_NONCES = timedelta(hours=1)


class WalletAuth:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._last_prune = 0.0

    async def verify(
        self, wallet: str | None, signature: str | None, timestamp: str | None, nonce: str | None
    ) -> str:
        """The checksummed wallet, or :class:`Unauthenticated` saying what is wrong."""
        from hutch.payments.eth import Account, encode_defunct, to_checksum_address

        if not (wallet and signature and timestamp and nonce):
            raise Unauthenticated(
                "sign the request: X-Wallet-Address, X-Signature, X-Timestamp and X-Nonce "
                "are all required"
            )
        if not _ADDRESS.fullmatch(wallet):
            raise Unauthenticated("X-Wallet-Address must be 0x and 40 hex digits")
        try:
            uuid.UUID(nonce)
        except ValueError:
            raise Unauthenticated("X-Nonce must be a UUID") from None
        if (
            not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 16)
            or abs(int(timestamp) - time.time() * 1000) > MAX_SKEW_MS
        ):
            raise Unauthenticated("X-Timestamp must be the current Unix time in ms (±60 s)")
        try:
            signer = Account.recover_message(
                encode_defunct(text=signed_text(wallet, timestamp, nonce)), signature=signature
            )
        except Exception:  # malformed signatures raise a variety of errors
            raise Unauthenticated("X-Signature is not a valid signature") from None
        if signer.lower() != wallet.lower():
            raise Unauthenticated(f"the signature is not {wallet}'s over wallet:timestamp:nonce")
        try:
            async with self._db.sessions.begin() as session:
                session.add(
                    AgentNonce(nonce=nonce.lower(), wallet=wallet.lower(), used_at=utcnow())
                )
        except IntegrityError:
            raise Unauthenticated("this X-Nonce was already used; sign with a new one") from None
        await self._prune()
        return str(to_checksum_address(wallet))

    async def _prune(self) -> None:
        """Forget nonces older than any timestamp that could still be accepted."""
        if time.monotonic() - self._last_prune < 60:
            return
        self._last_prune = time.monotonic()
        async with self._db.sessions.begin() as session:
            await session.execute(
                delete(AgentNonce).where(AgentNonce.used_at < utcnow() - _KEEP_NONCES)
            )
