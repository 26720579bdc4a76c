"""/agent/chains and /agent/balance against real local chains (anvil), in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hutch.api.app import create_app
from hutch.settings import Settings
from tests.conftest import LocalChains
from tests.support.chain import ANVIL_KEYS


@pytest.fixture
def client(tmp_path: Path, chains: LocalChains) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path / "home", driver="fake", proxy_enabled=False,
                        **chains.env())  # type: ignore[arg-type]  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield client


def test_chains_lists_both_with_their_tokens(client: TestClient) -> None:
    assert client.get("/agent/chains").json() == {"chains": [
        {"chain": "arbitrum", "chain_id": 42161, "tokens": ["usdc", "usdt"]},
        {"chain": "base", "chain_id": 8453, "tokens": ["usdc", "usdt"]},
    ]}  # fmt: skip


def test_balance_reads_balance_of_from_the_chain(client: TestClient, chains: LocalChains) -> None:
    w3 = chains.base.web3()
    owner = w3.eth.account.from_key(ANVIL_KEYS[2]).address
    before = client.get(f"/agent/balance/{owner}", params={"chain": "base"}).json()
    chains.base.transfer(chains.tokens["base"]["usdt"], key=ANVIL_KEYS[0], to=owner,
                         amount=18_000_000)  # fmt: skip
    after = client.get(f"/agent/balance/{owner}", params={"chain": "base"}).json()
    assert (after["address"], after["chain"], after["chain_id"]) == (owner, "base", 8453)
    usdt = next(b for b in after["balances"] if b["token"] == "usdt")
    old = int(next(b for b in before["balances"] if b["token"] == "usdt")["balance_raw"])
    assert int(usdt["balance_raw"]) == old + 18_000_000
    assert usdt["decimals"] == 6 and usdt["symbol"] == "USDT"
    assert usdt["address"] == chains.tokens["base"]["usdt"]
    assert usdt["balance"] == f"{(old + 18_000_000) / 1e6:.6f}"


def test_bad_requests_and_unreachable_chains(client: TestClient, tmp_path: Path) -> None:
    bad = client.get("/agent/balance/0x123")
    assert bad.status_code == 400 and set(bad.json()) == {"error", "field"}
    unknown = client.get(f"/agent/balance/0x{'1' * 40}", params={"chain": "solana"})
    assert unknown.status_code == 400 and "arbitrum" in unknown.json()["error"]
    nowhere = Settings(home=tmp_path / "other", driver="fake", proxy_enabled=False,
                       chain_arbitrum_rpc_url="http://127.0.0.1:9")  # fmt: skip
    with TestClient(create_app(nowhere)) as other:
        down = other.get(f"/agent/balance/0x{'1' * 40}")
        assert down.status_code == 503 and "arbitrum" in down.json()["error"]
