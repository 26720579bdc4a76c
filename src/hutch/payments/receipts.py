"""Checking that a transaction on a chain pays for a request.

A payment is an ERC-20 ``transfer`` of ``usdc`` or ``usdt`` from the wallet that signs the
request to hutch's payment address, mined and buried under the chain's configured number of
confirmations. :func:`verify_payment` reads the receipt (in a thread) and either returns a
:class:`VerifiedPayment` or raises:

- :class:`PaymentRejected`: the transaction does not pay for this request; its message tells
  the client what to do (the API answers 402);
- :class:`~hutch.payments.chains.ChainError`: the chain could not be asked (no RPC URL,
  unreachable, or serving another chain id); the API answers 503.

``Transfer`` logs are decoded by hand from their topics and data, so any contract emitting
the standard event is read the same way, without an ABI.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from hutch.payments.chains import RPC_TIMEOUT_S, Chain, ChainError, format_units

__all__ = ["TX_HASH", "PaymentRejected", "VerifiedPayment", "verify_payment"]

TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
# keccak256("Transfer(address,address,uint256)")
_TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


class PaymentRejected(Exception):
    """The transaction does not pay for this request; str() is the reason, for the client
    (HTTP 402)."""


@dataclass(frozen=True, kw_only=True)
class VerifiedPayment:
    tx_hash: str  # 0x + 64 lowercase hex
    chain: str
    token: str  # "usdc" | "usdt"
    payer: str  # checksummed address
    amount_raw: int  # sum of matching Transfer amounts, in the token's smallest unit
    block_number: int


@dataclass(frozen=True, kw_only=True)
class _Transfer:
    """One decoded ``Transfer`` log; addresses checksummed."""

    contract: str
    sender: str
    recipient: str
    amount: int


@dataclass(frozen=True, kw_only=True)
class _Receipt:
    status: int
    block_number: int
    confirmations: int
    transfers: list[_Transfer]


async def verify_payment(
    chain: Chain, token: str, tx_hash: str, *, payer: str, pay_to: str, min_amount_raw: int
) -> VerifiedPayment:
    """Check that ``tx_hash`` on ``chain`` moved at least ``min_amount_raw`` of ``token`` from
    ``payer`` to ``pay_to`` and has enough confirmations.

    Only reads the chain; calling it again for the same transaction gives the same answer,
    except that a pending or shallow transaction may pass later. Raises
    :class:`PaymentRejected` when the transaction does not pay, :class:`ChainError` when the
    chain cannot be asked.
    """
    if not chain.rpc_url:
        raise ChainError(f"no RPC URL is configured for {chain.name}")
    contract = chain.tokens.get(token)
    if contract is None:
        accepted = " or ".join(sorted(chain.tokens))
        raise PaymentRejected(
            f"{token!r} is not a token hutch takes on {chain.name}; pay in {accepted}"
        )
    if not TX_HASH.match(tx_hash):
        raise PaymentRejected(
            f"{tx_hash!r} is not a transaction hash; send 0x followed by 64 hex digits"
        )
    tx_hash = tx_hash.lower()
    receipt = await asyncio.to_thread(_read_receipt, chain, tx_hash)
    if receipt is None:
        raise PaymentRejected(
            f"transaction {tx_hash} was not found on {chain.name}; it may still be pending"
            " — retry once it is mined"
        )
    if receipt.status != 1:
        raise PaymentRejected(
            f"transaction {tx_hash} reverted on {chain.name} and moved no tokens;"
            " send a new payment"
        )
    if receipt.confirmations < chain.confirmations:
        raise PaymentRejected(
            f"transaction {tx_hash} has {_count(receipt.confirmations, 'confirmation')} on"
            f" {chain.name} and needs {chain.confirmations}; retry in a few blocks"
        )
    matching = [
        t
        for t in receipt.transfers
        if _same(t.contract, contract) and _same(t.sender, payer) and _same(t.recipient, pay_to)
    ]
    if not matching:
        raise PaymentRejected(_why_no_match(chain, token, tx_hash, receipt, payer, pay_to))
    amount = sum(t.amount for t in matching)
    if amount < min_amount_raw:
        raise PaymentRejected(
            f"transaction {tx_hash} pays {format_units(amount)} {token}, less than the"
            f" {format_units(min_amount_raw)} quoted; send a payment for the quoted amount"
        )
    return VerifiedPayment(
        tx_hash=tx_hash,
        chain=chain.name,
        token=token,
        payer=matching[0].sender,
        amount_raw=amount,
        block_number=receipt.block_number,
    )


def _why_no_match(
    chain: Chain, token: str, tx_hash: str, receipt: _Receipt, payer: str, pay_to: str
) -> str:
    """The most specific reason none of the receipt's transfers pays for the request."""
    contract = chain.tokens[token]
    prefix = f"transaction {tx_hash} on {chain.name}"
    if not receipt.transfers:
        return f"{prefix} transfers no tokens; send {token} to {pay_to}"
    of_token = [t for t in receipt.transfers if _same(t.contract, contract)]
    if not of_token:
        names = {address.lower(): name for name, address in chain.tokens.items()}
        moved = sorted(
            {names.get(t.contract.lower(), f"the token at {t.contract}") for t in receipt.transfers}
        )
        return (
            f"{prefix} transfers {' and '.join(moved)}, not {token} ({contract});"
            f" pay in {token} or quote the token you paid in"
        )
    to_us = [t for t in of_token if _same(t.recipient, pay_to)]
    if not to_us:
        recipients = ", ".join(sorted({t.recipient for t in of_token}))
        return f"{prefix} sends {token} to {recipients}, not to hutch's payment address {pay_to}"
    senders = ", ".join(sorted({t.sender for t in to_us}))
    return (
        f"{prefix} pays from {senders}, not from the signing wallet {payer};"
        " pay from the wallet that signs the request"
    )


def _read_receipt(chain: Chain, tx_hash: str) -> _Receipt | None:
    """The receipt of ``tx_hash`` and how deep it is, or None when it is not mined."""
    from hutch.payments.eth import HexStr, TransactionNotFound, Web3, Web3Exception

    w3 = Web3(Web3.HTTPProvider(chain.rpc_url, request_kwargs={"timeout": RPC_TIMEOUT_S}))
    try:
        actual = w3.eth.chain_id
        if actual != chain.chain_id:
            raise ChainError(f"the {chain.name} RPC serves chain {actual}, not {chain.chain_id}")
        try:
            receipt = w3.eth.get_transaction_receipt(HexStr(tx_hash))
        except TransactionNotFound:
            return None
        block_number = receipt.get("blockNumber")
        if block_number is None:  # some nodes return a receipt for a pending transaction
            return None
        latest = w3.eth.block_number
    except (Web3Exception, OSError, ValueError) as exc:
        raise ChainError(f"cannot read from {chain.name}: {type(exc).__name__}") from exc
    transfers = []
    for log in receipt["logs"]:
        transfer = _decode_transfer(
            str(log["address"]), [bytes(t) for t in log["topics"]], bytes(log["data"])
        )
        if transfer is not None:
            transfers.append(transfer)
    return _Receipt(
        status=int(receipt["status"]),
        block_number=int(block_number),
        # A node behind a load balancer may answer from a block before the receipt's.
        confirmations=max(0, int(latest) - int(block_number) + 1),
        transfers=transfers,
    )


def _decode_transfer(contract: str, topics: list[bytes], data: bytes) -> _Transfer | None:
    """An ERC-20 ``Transfer(from, to, value)``, or None for any other log (including the
    ERC-721 event of the same signature, whose third topic is the token id)."""
    from hutch.payments.eth import Web3

    if len(topics) != 3 or "0x" + topics[0].hex() != _TRANSFER_TOPIC or len(data) != 32:
        return None
    return _Transfer(
        contract=Web3.to_checksum_address(contract),
        sender=Web3.to_checksum_address(topics[1][-20:]),
        recipient=Web3.to_checksum_address(topics[2][-20:]),
        amount=int.from_bytes(data, "big"),
    )


def _same(a: str, b: str) -> bool:
    return a.lower() == b.lower()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
