"""The local chain the deploy tests pay on: anvil runs, the committed test ERC-20 is what
its source compiles to, and real transfers move real balances."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support.chain import ANVIL_KEYS, CHAIN_DIR, Anvil, token_artifact


def test_the_committed_token_matches_its_source(tmp_path: Path) -> None:
    fresh = tmp_path / "TestToken.json"
    subprocess.run(["node", str(CHAIN_DIR / "build.mjs"), str(fresh)], check=True, timeout=120)
    assert json.loads(fresh.read_text()) == token_artifact()


def test_a_transfer_moves_tokens_on_anvil() -> None:
    chain = Anvil(chain_id=42161).start()
    try:
        w3 = chain.web3()
        assert w3.eth.chain_id == 42161
        token = chain.deploy_token("Test USD Coin", "USDC")
        receiver = w3.eth.account.from_key(ANVIL_KEYS[1]).address
        tx = chain.transfer(token, key=ANVIL_KEYS[0], to=receiver, amount=500_000)
        receipt = w3.eth.get_transaction_receipt(tx)
        assert receipt["status"] == 1 and receipt["logs"][0]["address"] == token
        contract = w3.eth.contract(address=token, abi=token_artifact()["abi"])
        assert contract.functions.balanceOf(receiver).call() == 500_000
        assert contract.functions.decimals().call() == 6
    finally:
        chain.stop()
