"""A real local EVM chain for tests: anvil (npm ``@foundry-rs/anvil``, installed by
``make test`` into tests/chain) on loopback, and the test ERC-20 deployed on it."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["ANVIL_KEYS", "Anvil", "token_artifact"]

CHAIN_DIR = Path(__file__).resolve().parents[1] / "chain"
# anvil's well-known development accounts (from its fixed test mnemonic): test money only.
ANVIL_KEYS = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
]


def token_artifact() -> dict[str, Any]:
    artifact: dict[str, Any] = json.loads((CHAIN_DIR / "TestToken.json").read_text())
    return artifact


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Anvil:
    def __init__(self, *, chain_id: int) -> None:
        self.chain_id = chain_id
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Anvil:
        binary = CHAIN_DIR / "node_modules" / ".bin" / "anvil"
        if not binary.exists():
            raise RuntimeError("anvil is not installed: make test runs npm in tests/chain")
        self._proc = subprocess.Popen(
            [str(binary), "--host", "127.0.0.1", "--port", str(self.port),
             "--chain-id", str(self.chain_id), "--silent"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"anvil exited: {self._proc.stderr.read()!r}")  # type: ignore[union-attr]
            if self.web3().is_connected():
                return self
            time.sleep(0.1)
        raise RuntimeError("anvil did not start")

    def web3(self) -> Any:
        from web3 import Web3

        return Web3(Web3.HTTPProvider(self.url, request_kwargs={"timeout": 10}))

    def deploy_token(self, name: str, symbol: str, *, supply: int = 10**15) -> str:
        """Deploy the test ERC-20 from the first account; its address."""
        w3 = self.web3()
        artifact = token_artifact()
        account = w3.eth.account.from_key(ANVIL_KEYS[0])
        contract = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        tx = contract.constructor(name, symbol, supply).build_transaction(
            {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address)}
        )
        signed = account.sign_transaction(tx)
        receipt = w3.eth.wait_for_transaction_receipt(
            w3.eth.send_raw_transaction(signed.raw_transaction)
        )
        return str(receipt["contractAddress"])

    def transfer(self, token: str, *, key: str, to: str, amount: int) -> str:
        """An ERC-20 transfer signed with ``key``; its transaction hash (mined)."""
        w3 = self.web3()
        account = w3.eth.account.from_key(key)
        contract = w3.eth.contract(address=token, abi=token_artifact()["abi"])
        tx = contract.functions.transfer(to, amount).build_transaction(
            {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address)}
        )
        signed = account.sign_transaction(tx)
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
        w3.eth.wait_for_transaction_receipt(tx_hash)
        return "0x" + bytes(tx_hash).hex().removeprefix("0x")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None
