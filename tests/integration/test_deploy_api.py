"""The deploy API's rules (seed 003) in-process, on the fake driver, paid on real local
chains (anvil): quotes, payments and their every refusal, the credit ledger, signatures,
validation that charges nothing, who may see and delete what, and the rate limit."""

from __future__ import annotations

import asyncio
import base64
import io
import time
import uuid
import zipfile
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hutch.api.app import create_app
from hutch.api.services import Services
from hutch.host.drivers.fake import FakeDriver
from hutch.settings import Settings
from tests.conftest import LocalChains
from tests.support.images import fake_image
from tests.support.wallet import Wallet, signed

PAY_TO = Wallet.new().address
HALF = 500_000  # $0.50 in a 6-decimal token: the price of one month


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def body(name: str, **changes: Any) -> dict[str, Any]:
    """A small project whose app exits at once (the fake driver serves nothing)."""
    return {
        "uniqueName": name,
        "displayName": "My App",
        "description": "A test project",
        "months": 1,
        "settings": {"port": 3000, "runCommand": "echo starting; exit 3"},
        "upload": {"type": "files", "files": [{"path": "index.html", "content": b64(b"hi")}]},
    } | changes


@pytest.fixture
def client(tmp_path: Path, chains: LocalChains) -> Iterator[TestClient]:
    fake_image(tmp_path / "images", "devbox:1")
    settings = Settings(
        home=tmp_path / "home",
        images_dir=tmp_path / "images",
        driver="fake",
        proxy_port=0,
        pay_to=PAY_TO,
        chain_base_confirmations=3,
        deploy_health_timeout_s=5,
        deploy_max_unpacked_bytes=1 << 20,
        **chains.env(),  # type: ignore[arg-type]
    )
    with TestClient(create_app(settings)) as client:
        yield client
    # The app leaves sandboxes running when it stops (a restart adopts them); tests don't.
    asyncio.run(FakeDriver(settings.home / "fake-sandboxes").cleanup(set()))


def services(client: TestClient) -> Services:
    return client.app.state.services  # type: ignore[attr-defined,no-any-return]


def call(client: TestClient, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    assert client.portal is not None
    return client.portal.call(fn, *args)


def usdc(chains: LocalChains, chain: str = "arbitrum") -> str:
    return chains.tokens[chain]["usdc"]


def paid_wallet(chains: LocalChains, amount: int = 10 * HALF) -> Wallet:
    wallet = Wallet.new()
    wallet.fund(chains.arbitrum, usdc(chains), amount)
    return wallet


def deploy(client: TestClient, wallet: Wallet, payload: dict[str, Any], **headers: str) -> Any:
    return client.post("/agent/deploy", json=payload, headers=wallet.headers(**headers))


def pay_and_deploy(
    client: TestClient, chains: LocalChains, wallet: Wallet, name: str, amount: int = HALF
) -> Any:
    tx = wallet.pay(chains.arbitrum, usdc(chains), PAY_TO, amount)
    return deploy(client, wallet, body(name), **{"X-Payment-Tx": tx})


def wait_finished(client: TestClient, wallet: Wallet, started: dict[str, Any]) -> dict[str, Any]:
    url = f"/agent/deploy/{started['projectId']}/{started['deploymentId']}/status"
    for _ in range(200):
        answer = client.get(url, headers=wallet.headers()).json()
        if answer["status"] != "deploying":
            return dict(answer)

        time.sleep(0.1)
    raise AssertionError(f"still deploying: {answer}")


def test_without_credits_the_answer_is_the_seeds_quote(client: TestClient) -> None:
    wallet = Wallet.new()
    answer = deploy(client, wallet, body("quote-me"))
    assert answer.status_code == 402
    assert answer.json() == {
        "error": "Payment required",
        "amount_usd": 0.5,
        "amount_token": "500000",
        "current_credit_balance_usd": 0,
        "active_projects": 0,
        "pay_to": PAY_TO,
        "payment_chain": "arbitrum",
        "token": "usdc",
        "decimals": 6,
        "supported_chains": [
            {"chain": "arbitrum", "chain_id": 42161, "tokens": ["usdc", "usdt"]},
            {"chain": "base", "chain_id": 8453, "tokens": ["usdc", "usdt"]},
        ],
    }
    three = deploy(
        client,
        wallet,
        body("quote-me", months=3),
        **{"X-Payment-Chain": "base", "X-Payment-Token": "usdt"},
    )
    assert three.status_code == 402
    assert (three.json()["amount_usd"], three.json()["amount_token"]) == (1.5, "1500000")
    assert (three.json()["payment_chain"], three.json()["token"]) == ("base", "usdt")
    assert client.get("/agent/projects", headers=wallet.headers()).json()["count"] == 0


def test_a_payment_is_credited_charged_and_the_deploy_starts(
    client: TestClient, chains: LocalChains
) -> None:
    wallet = paid_wallet(chains)
    answer = pay_and_deploy(client, chains, wallet, "paid-app", amount=2 * HALF)
    assert answer.status_code == 200, answer.text
    started = answer.json()
    assert started["status"] == "deploying"
    assert started["message"] == "Deployment started. Poll status for updates."
    assert set(started) == {"projectId", "deploymentId", "status", "message"}
    ledger = services(client).deploys
    listed = client.get("/agent/projects", headers=wallet.headers()).json()
    assert listed["wallet"] == wallet.address and listed["count"] == 1
    project = listed["projects"][0]
    assert (project["id"], project["name"], project["displayName"]) == (
        started["projectId"],
        "paid-app",
        "My App",
    )
    assert project["url"] is None
    assert project["status"] in {"queued", "building", "deploying", "failed"}
    assert project["createdAt"].endswith("Z") and len(project["createdAt"]) == 24
    # $1 paid = 100 credits, 50 charged; the rest stays on the wallet.
    assert call(client, ledger.balance, wallet.address) == 50


def test_the_app_that_never_serves_fails_with_its_reason_and_is_refunded(
    client: TestClient, chains: LocalChains
) -> None:
    wallet = paid_wallet(chains)
    started = pay_and_deploy(client, chains, wallet, "exits-app").json()
    final = wait_finished(client, wallet, started)
    assert final["status"] == "failed" and final["deployment_id"] == started["deploymentId"]
    assert "exited before it answered on port 3000" in final["reason"]
    assert "starting" in final["reason"]  # the app's own last lines
    deploys = services(client).deploys
    lines = call(client, deploys.ledger, wallet.address)
    assert [(line.kind, line.amount) for line in lines] == [
        ("payment", 50),
        ("charge", -50),
        ("refund", 50),
    ]
    assert sum(line.amount for line in lines) == lines[-1].balance_after == 50
    project = client.get("/agent/projects", headers=wallet.headers()).json()["projects"][0]
    assert (project["status"], project["url"]) == ("failed", None)


def test_a_transaction_pays_once(client: TestClient, chains: LocalChains) -> None:
    wallet = paid_wallet(chains)
    tx = wallet.pay(chains.arbitrum, usdc(chains), PAY_TO, HALF)
    first = deploy(client, wallet, body("once-app"), **{"X-Payment-Tx": tx})
    assert first.status_code == 200
    again = deploy(client, wallet, body("twice-app"), **{"X-Payment-Tx": tx})
    assert again.status_code == 409 and again.json()["field"] == "X-Payment-Tx"
    other = Wallet.new()
    stolen = deploy(
        client,
        other,
        body("stolen-app"),
        **{"X-Payment-Tx": tx.upper()[:2].lower() + tx[2:].upper()},
    )
    assert stolen.status_code == 409


def test_racing_identical_paid_requests_charge_once(
    client: TestClient, chains: LocalChains
) -> None:
    wallet = paid_wallet(chains)
    tx = wallet.pay(chains.arbitrum, usdc(chains), PAY_TO, HALF)
    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(
                lambda _: deploy(client, wallet, body("race-app"), **{"X-Payment-Tx": tx}), range(2)
            )
        )
    assert sorted(a.status_code for a in answers) == [200, 409]
    deploys = services(client).deploys
    lines = call(client, deploys.ledger, wallet.address)
    assert [(line.kind, line.amount) for line in lines][:2] == [("payment", 50), ("charge", -50)]
    assert len([line for line in lines if line.kind == "charge"]) == 1


def test_racing_deploys_cannot_spend_credits_twice(client: TestClient, chains: LocalChains) -> None:
    wallet = paid_wallet(chains)
    assert pay_and_deploy(client, chains, wallet, "first-app", amount=2 * HALF).status_code == 200
    use = {"X-Use-Existing-Credits": "true"}
    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(
                lambda name: deploy(client, wallet, body(name), **use), ["second-a", "second-b"]
            )
        )
    assert sorted(a.status_code for a in answers) == [200, 402]
    deploys = services(client).deploys
    lines = call(client, deploys.ledger, wallet.address)
    assert all(line.balance_after >= 0 for line in lines)
    assert len([line for line in lines if line.kind == "charge"]) == 2


def test_credits_shared_with_active_projects_need_consent(
    client: TestClient, chains: LocalChains
) -> None:
    wallet = paid_wallet(chains)
    assert pay_and_deploy(client, chains, wallet, "keeps-app", amount=2 * HALF).status_code == 200
    warned = deploy(client, wallet, body("next-app"))
    assert warned.status_code == 402
    quote = warned.json()
    assert quote["active_projects"] == 1 and quote["current_credit_balance_usd"] == 0.5
    assert "X-Use-Existing-Credits" in quote["warning"] and quote["amount_usd"] == 0.5
    agreed = deploy(client, wallet, body("next-app"), **{"X-Use-Existing-Credits": "true"})
    assert agreed.status_code == 200, agreed.text
    broke = deploy(client, wallet, body("third-app"), **{"X-Use-Existing-Credits": "true"})
    assert broke.status_code == 402 and "warning" not in broke.json()


@pytest.mark.parametrize(
    "case", ["short", "wrong token", "not the signer", "too few confirmations"]
)
def test_payments_that_do_not_pay_are_refused_with_the_reason(
    client: TestClient, chains: LocalChains, case: str
) -> None:
    wallet = paid_wallet(chains)
    headers: dict[str, str]
    if case == "short":
        headers = {"X-Payment-Tx": wallet.pay(chains.arbitrum, usdc(chains), PAY_TO, HALF - 1)}
        expect = "less than"
    elif case == "wrong token":
        usdt = chains.tokens["arbitrum"]["usdt"]
        wallet.fund(chains.arbitrum, usdt, HALF)
        headers = {"X-Payment-Tx": wallet.pay(chains.arbitrum, usdt, PAY_TO, HALF)}
        expect = "usdt"
    elif case == "not the signer":
        payer = paid_wallet(chains)
        headers = {"X-Payment-Tx": payer.pay(chains.arbitrum, usdc(chains), PAY_TO, HALF)}
        expect = "signing wallet"
    else:
        wallet.fund(chains.base, usdc(chains, "base"), HALF)
        tx = wallet.pay(chains.base, usdc(chains, "base"), PAY_TO, HALF)
        headers = {"X-Payment-Tx": tx, "X-Payment-Chain": "base"}
        expect = "needs 3"
    answer = deploy(client, wallet, body("refused-app"), **headers)
    assert answer.status_code == 402, answer.text
    assert expect in answer.json()["reason"] and answer.json()["amount_token"] == "500000"
    deploys = services(client).deploys
    assert call(client, deploys.balance, wallet.address) == 0
    if case == "too few confirmations":  # once mined deeper, the same transaction pays
        chains.base.web3().provider.make_request("anvil_mine", [2])
        assert deploy(client, wallet, body("refused-app"), **headers).status_code == 200


def zip_of(entries: dict[str, bytes]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return b64(buffer.getvalue())


def corrupt_zip() -> str:
    """A zip whose deflate stream is broken (zlib, not zipfile, notices)."""
    data = bytearray(base64.b64decode(zip_of({"index.html": b"hello world " * 1000})))
    data[40:60] = b"\xff" * 20
    return b64(bytes(data))


BAD_BODIES: dict[str, tuple[dict[str, Any], str]] = {
    "short name": ({"uniqueName": "abc"}, "uniqueName"),
    "long name": ({"uniqueName": "a" * 33}, "uniqueName"),
    "unsafe name": ({"uniqueName": "my app!"}, "uniqueName"),
    "upper-case name": ({"uniqueName": "My-App"}, "uniqueName"),
    "short display name": ({"displayName": "abc"}, "displayName"),
    "long display name": ({"displayName": "x" * 101}, "displayName"),
    "short description": ({"description": "abc"}, "description"),
    "long description": ({"description": "x" * 2049}, "description"),
    "zero months": ({"months": 0}, "months"),
    "fractional months": ({"months": 1.5}, "months"),
    "no upload": ({"upload": None}, "upload"),
    "unknown upload type": ({"upload": {"type": "tar"}}, "upload.type"),
    "absolute path": (
        {"upload": {"type": "files", "files": [{"path": "/etc/passwd", "content": b64(b"x")}]}},
        "upload.files.0.path",
    ),
    "dot-dot path": (
        {"upload": {"type": "files", "files": [{"path": "a/../../x", "content": b64(b"x")}]}},
        "upload.files.0.path",
    ),
    "bad base64": (
        {"upload": {"type": "files", "files": [{"path": "index.html", "content": "%%%"}]}},
        "upload.files.0.content",
    ),
    "zip slip": (
        {"upload": {"type": "zip", "content": zip_of({"../evil.sh": b"x"})}},
        "upload.content",
    ),
    "zip bomb": (
        {"upload": {"type": "zip", "content": zip_of({"index.html": bytes(4 << 20)})}},
        "upload.content",
    ),
    "corrupt zip": ({"upload": {"type": "zip", "content": corrupt_zip()}}, "upload.content"),
    "not a zip": ({"upload": {"type": "zip", "content": b64(b"PK nope")}}, "upload.content"),
    "nothing build-ai knows": (
        {
            "settings": {},
            "upload": {"type": "files", "files": [{"path": "notes.txt", "content": b64(b"x")}]},
        },
        "upload",
    ),
    "dockerfile asked for, none uploaded": (
        {"settings": {"hasDockerfile": True, "runCommand": "x"}},
        "upload",
    ),
    "a Dockerfile that does not parse": (
        {
            "settings": {},
            "upload": {
                "type": "files",
                "files": [{"path": "Dockerfile", "content": b64(b"FROM devbox:1\nFOO bar\n")}],
            },
        },
        "upload",
    ),
    "port": ({"settings": {"port": 70000}}, "settings.port"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_bodies_are_400_and_charge_nothing(
    client: TestClient, chains: LocalChains, case: str
) -> None:
    wallet = paid_wallet(chains)
    tx = wallet.pay(chains.arbitrum, usdc(chains), PAY_TO, HALF)
    changes, field = BAD_BODIES[case]
    answer = deploy(client, wallet, body("bad-body", **changes), **{"X-Payment-Tx": tx})
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == field and answer.json()["error"]
    deploys = services(client).deploys
    assert call(client, deploys.balance, wallet.address) == 0
    # The payment was not spent: the same transaction still pays for a good body.
    assert deploy(client, wallet, body("good-body"), **{"X-Payment-Tx": tx}).status_code == 200


def test_a_name_is_global_but_its_owner_may_redeploy(
    client: TestClient, chains: LocalChains
) -> None:
    owner, other = paid_wallet(chains), paid_wallet(chains)
    started = pay_and_deploy(client, chains, owner, "taken-app").json()
    taken = pay_and_deploy(client, chains, other, "taken-app")
    assert taken.status_code == 400 and taken.json()["field"] == "uniqueName"
    wait_finished(client, owner, started)
    again = pay_and_deploy(client, chains, owner, "taken-app")
    assert again.status_code == 200 and again.json()["projectId"] == started["projectId"]
    assert again.json()["deploymentId"] != started["deploymentId"]


def test_too_large_a_request_is_refused(client: TestClient) -> None:
    huge = b"x" * (51 * 1024 * 1024)
    answer = client.post(
        "/agent/deploy",
        content=huge,
        headers={**Wallet.new().headers(), "Content-Type": "application/json"},
    )
    assert answer.status_code == 413 and "bytes" in answer.json()["error"]


def test_signatures_are_checked_on_every_private_route(client: TestClient) -> None:
    wallet, other = Wallet.new(), Wallet.new()
    address, signature, timestamp, nonce = signed(wallet.key)
    good = {
        "X-Wallet-Address": address,
        "X-Signature": signature,
        "X-Timestamp": timestamp,
        "X-Nonce": nonce,
    }
    assert client.get("/agent/projects", headers=good).status_code == 200
    stale = dict(zip(good, signed(wallet.key, skew_ms=-120_000), strict=True))
    forged = dict(zip(good, signed(other.key, wallet=wallet.address), strict=True))
    endless = good | {"X-Timestamp": "9" * 5000, "X-Nonce": str(uuid.uuid4())}
    for name, headers in {
        "no signature": {},
        "reused nonce": good,
        "stale": stale,
        "someone else's": forged,
        "endless timestamp": endless,
    }.items():
        for method, path in (
            ("GET", "/agent/projects"),
            ("POST", "/agent/deploy"),
            ("GET", "/agent/deploy/p/d/status"),
            ("DELETE", "/agent/projects/p"),
        ):
            answer = client.request(method, path, headers=headers, json=body("auth-app"))
            assert answer.status_code == 401, (name, path, answer.text)
            assert set(answer.json()) == {"error"}
    assert client.get("/agent/chains").status_code == 200  # public


def test_only_the_deployer_sees_and_deletes(client: TestClient, chains: LocalChains) -> None:
    owner, other = paid_wallet(chains), Wallet.new()
    started = pay_and_deploy(client, chains, owner, "mine-app").json()
    status = f"/agent/deploy/{started['projectId']}/{started['deploymentId']}/status"
    assert client.get(status, headers=other.headers()).status_code == 403
    assert (
        client.delete(
            f"/agent/projects/{started['projectId']}", headers=other.headers()
        ).status_code
        == 403
    )
    assert client.get("/agent/projects", headers=other.headers()).json()["count"] == 0
    missing = f"/agent/deploy/{started['projectId']}/nope/status"
    assert client.get(missing, headers=owner.headers()).status_code == 404
    assert client.get(status, headers=owner.headers()).status_code == 200
    deleted = client.delete(f"/agent/projects/{started['projectId']}", headers=owner.headers())
    assert deleted.json() == {"projectId": started["projectId"], "status": "deleted"}
    assert client.get("/agent/projects", headers=owner.headers()).json()["count"] == 0
    assert (
        client.delete(
            f"/agent/projects/{started['projectId']}", headers=owner.headers()
        ).status_code
        == 404
    )
    # The name is free again, for anyone.
    assert pay_and_deploy(client, chains, paid_wallet(chains), "mine-app").status_code == 200


def test_thirty_requests_a_minute_per_address_and_wallet(client: TestClient) -> None:
    wallet = Wallet.new()
    for _ in range(30):
        assert client.get("/agent/projects", headers=wallet.headers()).status_code == 200
    limited = client.get("/agent/projects", headers=wallet.headers())
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert "30 requests" in limited.json()["error"]
    assert client.get("/agent/projects", headers=Wallet.new().headers()).status_code == 200


def test_one_address_naming_many_wallets_is_limited_too(client: TestClient) -> None:
    answers = [client.get("/agent/chains", headers={"X-Wallet-Address": Wallet.new().address})
               for _ in range(121)]  # fmt: skip
    assert [a.status_code for a in answers[:120]] == [200] * 120
    assert answers[120].status_code == 429 and "120 requests" in answers[120].json()["error"]


def test_deleting_a_project_mid_build_stops_it_and_refunds(
    client: TestClient, chains: LocalChains
) -> None:
    wallet = paid_wallet(chains)
    slow = body("slow-app", settings={"installCommand": "sleep 30", "runCommand": "true"})
    tx = wallet.pay(chains.arbitrum, usdc(chains), PAY_TO, HALF)
    started = deploy(client, wallet, slow, **{"X-Payment-Tx": tx}).json()
    status = f"/agent/deploy/{started['projectId']}/{started['deploymentId']}/status"
    for _ in range(100):
        if client.get(status, headers=wallet.headers()).json().get("deployment_status") == (
            "building"
        ):
            break
        time.sleep(0.05)
    deleted = client.delete(f"/agent/projects/{started['projectId']}", headers=wallet.headers())
    assert deleted.status_code == 200
    lines = call(client, services(client).deploys.ledger, wallet.address)
    assert [(line.kind, line.amount) for line in lines] == [
        ("payment", 50), ("charge", -50), ("refund", 50)]  # fmt: skip
    assert client.get(status, headers=wallet.headers()).status_code == 404
    assert list((Path(services(client).settings.home) / "fake-sandboxes").glob("sb_*")) == []
