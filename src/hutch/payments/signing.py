"""What a wallet signs to call /agent: the one definition the server and the CLI share."""

from __future__ import annotations

__all__ = ["signed_text"]


def signed_text(wallet: str, timestamp: str, nonce: str) -> str:
    """The exact text signed with EIP-191 ``personal_sign`` for a request to /agent."""
    return f"{wallet}:{timestamp}:{nonce}"
