"""Payment verification against real transfers on the local anvil chains: one test per
reason a transaction is accepted or refused."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from eth_account import Account

from hutch.payments.chains import Chain, ChainError
from hutch.payments.receipts import PaymentRejected, VerifiedPayment, verify_payment
from tests.conftest import LocalChains
from tests.support.chain import ANVIL_KEYS, Anvil, token_artifact

pytestmark = pytest.mark.anyio

PAYER_KEY, OTHER_KEY = ANVIL_KEYS[1], ANVIL_KEYS[2]
PAYER = Account.from_key(PAYER_KEY).address
OTHER = Account.from_key(OTHER_KEY).address
QUOTE = 500_000  # 0.5 of a 6-decimal token


@dataclass(frozen=True)
class Network:
    """One anvil chain as hutch sees it, with both payers funded."""

    anvil: Anvil
    chain: Chain
    pay_to: str  # hutch's payment address, fresh for each test


def _network(chains: LocalChains, name: str, *, confirmations: int = 1) -> Network:
    anvil: Anvil = getattr(chains, name)
    for token in ("usdc", "usdt"):
        for payer in (PAYER, OTHER):
            anvil.transfer(
                chains.tokens[name][token], key=ANVIL_KEYS[0], to=payer, amount=10_000_000
            )
    chain = Chain(
        name=name,
        chain_id=anvil.chain_id,
        rpc_url=anvil.url,
        tokens=dict(chains.tokens[name]),
        confirmations=confirmations,
    )
    return Network(anvil=anvil, chain=chain, pay_to=Account.create().address)


@pytest.fixture
def arbitrum(chains: LocalChains) -> Network:
    return _network(chains, "arbitrum")


def _pay(
    net: Network, token: str, *, key: str = PAYER_KEY, to: str = "", amount: int = QUOTE
) -> str:
    return net.anvil.transfer(net.chain.tokens[token], key=key, to=to or net.pay_to, amount=amount)


async def _verify(
    net: Network, token: str, tx_hash: str, *, chain: Chain | None = None
) -> VerifiedPayment:
    return await verify_payment(
        chain or net.chain, token, tx_hash, payer=PAYER, pay_to=net.pay_to, min_amount_raw=QUOTE
    )


@pytest.mark.parametrize("name", ["arbitrum", "base"])
async def test_a_transfer_of_the_quoted_amount_verifies(chains: LocalChains, name: str) -> None:
    net = _network(chains, name)
    tx_hash = _pay(net, "usdc", amount=QUOTE + 1)
    block = net.anvil.web3().eth.get_transaction_receipt(tx_hash)["blockNumber"]

    # The caller may pass the hash and the payer in any case.
    payment = await verify_payment(
        net.chain, "usdc", tx_hash.upper().replace("0X", "0x"),
        payer=PAYER.lower(), pay_to=net.pay_to.lower(), min_amount_raw=QUOTE,
    )  # fmt: skip

    assert payment == VerifiedPayment(
        tx_hash=tx_hash.lower(),
        chain=name,
        token="usdc",
        payer=PAYER,
        amount_raw=QUOTE + 1,
        block_number=block,
    )


async def test_paying_less_than_the_quote_is_rejected_with_both_amounts(arbitrum: Network) -> None:
    tx_hash = _pay(arbitrum, "usdc", amount=300_000)

    with pytest.raises(PaymentRejected, match=r"0\.300000 usdc, less than the 0\.500000 quoted"):
        await _verify(arbitrum, "usdc", tx_hash)


async def test_paying_another_address_is_rejected(arbitrum: Network) -> None:
    elsewhere = Account.create().address
    tx_hash = _pay(arbitrum, "usdc", to=elsewhere)

    with pytest.raises(PaymentRejected) as caught:
        await _verify(arbitrum, "usdc", tx_hash)
    assert f"to {elsewhere}, not to hutch's payment address {arbitrum.pay_to}" in str(caught.value)


async def test_paying_from_another_wallet_than_the_signer_is_rejected(arbitrum: Network) -> None:
    tx_hash = _pay(arbitrum, "usdc", key=OTHER_KEY)

    with pytest.raises(PaymentRejected) as caught:
        await _verify(arbitrum, "usdc", tx_hash)
    assert f"pays from {OTHER}, not from the signing wallet {PAYER}" in str(caught.value)


async def test_paying_in_the_other_token_is_rejected(arbitrum: Network) -> None:
    tx_hash = _pay(arbitrum, "usdt")

    with pytest.raises(PaymentRejected, match=r"transfers usdt, not usdc"):
        await _verify(arbitrum, "usdc", tx_hash)
    assert (await _verify(arbitrum, "usdt", tx_hash)).amount_raw == QUOTE


async def test_an_unknown_token_name_is_rejected(arbitrum: Network) -> None:
    with pytest.raises(PaymentRejected, match=r"'dai' is not a token hutch takes on arbitrum"):
        await _verify(arbitrum, "dai", "0x" + "ab" * 32)


async def test_a_transaction_that_does_not_exist_is_rejected_as_not_found(
    arbitrum: Network,
) -> None:
    tx_hash = "0x" + "ab" * 32

    with pytest.raises(PaymentRejected) as caught:
        await _verify(arbitrum, "usdc", tx_hash)
    assert str(caught.value) == (
        f"transaction {tx_hash} was not found on arbitrum; it may still be pending"
        " — retry once it is mined"
    )


async def test_a_reverted_transaction_is_rejected(arbitrum: Network) -> None:
    w3 = arbitrum.anvil.web3()
    account = w3.eth.account.from_key(PAYER_KEY)
    token = w3.eth.contract(address=arbitrum.chain.tokens["usdc"], abi=token_artifact()["abi"])
    # More than the whole supply; an explicit gas limit skips the estimate that would refuse it.
    tx = token.functions.transfer(arbitrum.pay_to, 10**30).build_transaction(
        {"from": account.address, "gas": 100_000,
         "nonce": w3.eth.get_transaction_count(account.address)}
    )  # fmt: skip
    sent = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    assert w3.eth.wait_for_transaction_receipt(sent)["status"] == 0

    with pytest.raises(PaymentRejected, match=r"reverted on arbitrum"):
        await _verify(arbitrum, "usdc", "0x" + bytes(sent).hex().removeprefix("0x"))


async def test_a_payment_verifies_only_once_it_has_enough_confirmations(
    chains: LocalChains,
) -> None:
    net = _network(chains, "arbitrum", confirmations=3)
    tx_hash = _pay(net, "usdc")

    with pytest.raises(PaymentRejected, match=r"has 1 confirmation on arbitrum and needs 3"):
        await _verify(net, "usdc", tx_hash)

    net.anvil.web3().provider.make_request("anvil_mine", [2])
    assert (await _verify(net, "usdc", tx_hash)).amount_raw == QUOTE


async def test_an_rpc_serving_another_chain_is_a_chain_error(arbitrum: Network) -> None:
    tx_hash = _pay(arbitrum, "usdc")
    wrong = Chain(
        name="arbitrum",
        chain_id=8453,
        rpc_url=arbitrum.chain.rpc_url,
        tokens=arbitrum.chain.tokens,
        confirmations=1,
    )

    with pytest.raises(ChainError, match=r"serves chain 42161, not 8453"):
        await _verify(arbitrum, "usdc", tx_hash, chain=wrong)


async def test_an_unreachable_rpc_is_a_chain_error(arbitrum: Network) -> None:
    down = Chain(
        name="arbitrum",
        chain_id=42161,
        rpc_url="http://127.0.0.1:9",
        tokens=arbitrum.chain.tokens,
        confirmations=1,
    )

    with pytest.raises(ChainError, match=r"cannot read from arbitrum"):
        await _verify(arbitrum, "usdc", "0x" + "ab" * 32, chain=down)


async def test_a_chain_without_an_rpc_url_is_a_chain_error(arbitrum: Network) -> None:
    unset = Chain(
        name="base", chain_id=8453, rpc_url="", tokens=arbitrum.chain.tokens, confirmations=1
    )

    with pytest.raises(ChainError, match=r"no RPC URL is configured for base"):
        await _verify(arbitrum, "usdc", "0x" + "ab" * 32, chain=unset)
