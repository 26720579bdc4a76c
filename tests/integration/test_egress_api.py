"""Egress rules and bandwidth routes in-process on the fake driver: the contract, every
validation error, and tenancy. The kernel's enforcement, with real packets through real
sandboxes, is in tests/e2e/test_egress_kernel_runc.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hutch.api.app import create_app
from hutch.host.drivers.fake import FakeDriver
from hutch.host.egress import FakeEgress
from hutch.host.proc import CommandFailed, CommandResult
from tests.integration.test_sandboxes_api import _key, app_settings, client, create

__all__ = ["app_settings", "client"]  # fixtures


def installed(client: TestClient) -> FakeEgress:
    layer = client.app.state.services.host_agent.egress  # type: ignore[attr-defined]
    assert isinstance(layer, FakeEgress)
    return layer


def fail(response: Any) -> dict[str, str]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["status"] == "fail"
    data: dict[str, str] = body["data"]
    return data


def test_rules_round_trip_and_are_enforced_from_create(client: TestClient) -> None:
    rules = ["pypi.org", "github.com:443", "*.pythonhosted.org", "198.51.100.7",
             "198.51.100.8:53", "203.0.113.0/24", "198.18.0.0/15:8080"]  # fmt: skip
    box = create(client, egress=rules)
    assert box["egress"] == rules
    got = client.get(f"/v1/sandboxes/{box['id']}/egress").json()
    assert got == {"status": "success", "data": {"id": box["id"], "egress": rules}}
    spec = installed(client).specs[box["id"]]
    assert spec.restricted and spec.ip == box["ip"]
    assert [(str(n), p) for n, p in spec.networks] == [
        ("198.51.100.7/32", None), ("198.51.100.8/32", 53), ("203.0.113.0/24", None),
        ("198.18.0.0/15", 8080),
    ]  # fmt: skip
    assert spec.quota_bytes == 5 * 1024**3

    put = client.put(f"/v1/sandboxes/{box['id']}/egress", json={"egress": ["1.1.1.1:53"]})
    assert put.json()["data"] == {"id": box["id"], "egress": ["1.1.1.1:53"]}
    assert [(str(n), p) for n, p in installed(client).specs[box["id"]].networks] == [
        ("1.1.1.1/32", 53)
    ]
    for opened in (None, [], ["*"]):
        put = client.put(f"/v1/sandboxes/{box['id']}/egress", json={"egress": opened})
        assert put.status_code == 200 and put.json()["data"]["egress"] == (opened or [])
        assert not installed(client).specs[box["id"]].restricted
    by_name = client.get(f"/v1/sandboxes/{box['name']}/egress").json()["data"]
    assert by_name["id"] == box["id"]


def test_the_policy_is_what_the_dns_server_asks_for(client: TestClient) -> None:
    box = create(client, egress=["pypi.org:443", "*.example.test"])
    services = client.app.state.services  # type: ignore[attr-defined]
    policy = services.egress.policy_for_ip(box["ip"])
    assert policy is not None and policy.restricted
    assert policy.ports_for("pypi.org") == {443}
    assert policy.ports_for("www.example.test") == {None}
    assert policy.ports_for("example.test") is None
    assert services.egress.policy_for_ip("203.0.113.1") is None
    allowed = client.portal.call(  # type: ignore[union-attr]
        lambda: services.egress.layer.allow_resolved(
            box["ip"], ["198.18.0.10"], 443, 5, name="pypi.org"
        )
    )
    assert allowed and installed(client).resolved[box["id"]] == {("198.18.0.10", 443)}
    client.delete(f"/v1/sandboxes/{box['id']}")
    assert services.egress.policy_for_ip(box["ip"]) is None
    assert box["id"] not in installed(client).specs


def test_a_lookup_answered_after_a_put_allows_only_what_the_new_rules_allow(
    client: TestClient,
) -> None:
    # The DNS server reads the policy when a query comes and adds the answer's addresses
    # when the upstream answers; a PUT in between has pruned the sets already, so what the
    # old rules allowed must not get in after it (it would stay for the upstream's TTL).
    box = create(client, egress=["old.example.test", "new.example.test:443"])
    services = client.app.state.services  # type: ignore[attr-defined]
    asked_under = services.egress.policy_for_ip(box["ip"])
    assert asked_under.ports_for("old.example.test") == {None}
    put = client.put(f"/v1/sandboxes/{box['id']}/egress", json={"egress": ["new.example.test:443"]})
    assert put.status_code == 200, put.text

    def answer(name: str, port: int | None, address: str) -> bool:
        allowed: bool = client.portal.call(  # type: ignore[union-attr]
            lambda: services.egress.allow_resolved(box["ip"], [address], port, 300, name=name)
        )
        return allowed

    assert answer("old.example.test", None, "198.18.0.20")
    assert answer("new.example.test", 80, "198.18.0.21")  # a port no rule names
    assert answer("new.example.test", 443, "198.18.0.22")
    assert installed(client).resolved[box["id"]] == {("198.18.0.22", 443)}
    client.delete(f"/v1/sandboxes/{box['id']}")
    assert not answer("new.example.test", 443, "198.18.0.24")  # gone: no policy here


def test_a_bad_rule_is_a_400_naming_its_index(client: TestClient) -> None:
    box = create(client)
    url = f"/v1/sandboxes/{box['id']}/egress"
    cases = {
        "pypi.org:99999": ("egress[2]", "port"),
        "2001:db8::1": ("egress[2]", "no IPv6"),
        "10.0.0.5": ("egress[2]", "deny set"),
        "169.254.170.1": ("egress[2]", "deny set"),
        "198.51.100.1:25": ("egress[2]", "port 25"),
        "not a host": ("egress[2]", "not an egress rule"),
        7: ("egress[2]", "string"),
    }
    for bad, (field, words) in cases.items():
        data = fail(client.put(url, json={"egress": ["pypi.org", "1.1.1.1", bad]}))
        assert words in data[field], (bad, data)
        made = {"shape": "s-1vcpu-256mb", "egress": ["pypi.org", "1.1.1.1", bad]}
        data = fail(client.post("/v1/sandboxes", json=made))
        assert words in data[field], (bad, data)
    too_many = [f"198.51.100.{i % 200}" for i in range(257)]
    assert "256" in fail(client.put(url, json={"egress": too_many}))["egress"]
    made = {"shape": "s-1vcpu-256mb", "egress": too_many}
    assert "256" in fail(client.post("/v1/sandboxes", json=made))["egress"]
    assert client.put(url, json={"egress": too_many[:256]}).status_code == 200
    assert "egress" in fail(client.put(url, json={}))
    assert "rules" in fail(client.put(url, json={"egress": [], "rules": []}))
    assert "egress" in fail(client.put(url, json={"egress": "pypi.org"}))
    # Nothing was changed by the failures, and no sandbox was made by a bad create.
    assert len(client.get(url).json()["data"]["egress"]) == 256
    listed = client.get("/v1/sandboxes").json()["data"]["pagination"]["total"]
    assert listed == 1


def test_bandwidth_view_and_recharge(client: TestClient) -> None:
    box = create(client)
    url = f"/v1/sandboxes/{box['id']}/bandwidth"
    view = client.get(url).json()["data"]
    assert view == {"id": box["id"], "quota_bytes": 5368709120, "used_bytes": 0,
                    "ingress_bytes": 0, "remaining_bytes": 5368709120, "capped": False}  # fmt: skip
    recharged = client.post(f"{url}/recharge", json={"add_bytes": 1000}).json()["data"]
    assert recharged["quota_bytes"] == 5368710120 and recharged["remaining_bytes"] == 5368710120
    assert installed(client).specs[box["id"]].quota_bytes == 5368710120
    for bad in ({"add_bytes": 0}, {"add_bytes": -5}, {"add_bytes": "x"}, {}, {"add_bytes": 1.5},
                {"add_bytes": 1, "more": 2}, {"add_bytes": 1 << 60}):  # fmt: skip
        assert "add_bytes" in fail(client.post(f"{url}/recharge", json=bad)) or "more" in fail(
            client.post(f"{url}/recharge", json=bad)
        ), bad
    assert client.get(url).json()["data"]["quota_bytes"] == 5368710120


def test_unmetered_sandboxes_ignore_a_recharge(app_settings: Any) -> None:
    from hutch.api.app import create_app

    settings = app_settings.model_copy(update={"bandwidth_quota_bytes": -1})
    with TestClient(create_app(settings)) as unmetered:
        unmetered.headers["X-Api-Key"] = _key(unmetered, "carol")
        box = create(unmetered)
        url = f"/v1/sandboxes/{box['id']}/bandwidth"
        assert unmetered.get(url).json()["data"]["quota_bytes"] == -1
        view = unmetered.post(f"{url}/recharge", json={"add_bytes": 10}).json()["data"]
        assert (view["quota_bytes"], view["remaining_bytes"], view["capped"]) == (-1, -1, False)
        unmetered.delete(f"/v1/sandboxes/{box['id']}")


def test_a_recharge_past_the_largest_quota_is_a_400_and_changes_nothing(
    app_settings: Any,
) -> None:
    from hutch.api.app import create_app

    largest = (1 << 63) - 1  # what the store's BIGINT holds
    settings = app_settings.model_copy(update={"bandwidth_quota_bytes": largest - 10})
    with TestClient(create_app(settings)) as near_full:
        near_full.headers["X-Api-Key"] = _key(near_full, "dave")
        box = create(near_full)
        url = f"/v1/sandboxes/{box['id']}/bandwidth"
        assert "add_bytes" in fail(near_full.post(f"{url}/recharge", json={"add_bytes": 11}))
        assert near_full.get(url).json()["data"]["quota_bytes"] == largest - 10
        topped = near_full.post(f"{url}/recharge", json={"add_bytes": 10}).json()["data"]
        assert topped["quota_bytes"] == largest
        near_full.delete(f"/v1/sandboxes/{box['id']}")


def test_another_users_sandbox_is_a_404_like_a_missing_one(client: TestClient) -> None:
    box = create(client, egress=["pypi.org"])
    other = {"X-Api-Key": _key(client, "mallory")}
    for method, path, body in [
        ("GET", "egress", None), ("PUT", "egress", {"egress": []}), ("GET", "bandwidth", None),
        ("POST", "bandwidth/recharge", {"add_bytes": 10}),
    ]:  # fmt: skip
        theirs = client.request(method, f"/v1/sandboxes/{box['id']}/{path}", json=body,
                                headers=other)  # fmt: skip
        missing = client.request(method, f"/v1/sandboxes/sb_nope/{path}", json=body)
        assert theirs.status_code == missing.status_code == 404, (method, path)
        assert theirs.json()["status"] == "fail"
    assert client.get(f"/v1/sandboxes/{box['id']}/egress").json()["data"]["egress"] == ["pypi.org"]
    assert client.get(f"/v1/sandboxes/{box['id']}/bandwidth").json()["data"]["quota_bytes"] == (
        5 * 1024**3
    )


def test_a_destroyed_sandbox_keeps_its_record_but_takes_no_new_rules(client: TestClient) -> None:
    box = create(client)
    client.delete(f"/v1/sandboxes/{box['id']}")
    put = client.put(f"/v1/sandboxes/{box['id']}/egress", json={"egress": ["1.1.1.1"]})
    assert put.status_code == 409
    assert client.get(f"/v1/sandboxes/{box['id']}/egress").json()["data"]["egress"] == []
    assert box["id"] not in installed(client).specs


def test_a_paused_sandbox_gets_its_new_rules_when_it_resumes(client: TestClient) -> None:
    box = create(client)
    assert client.post(f"/v1/sandboxes/{box['id']}/pause").status_code in (200, 202)
    assert box["id"] not in installed(client).specs
    put = client.put(f"/v1/sandboxes/{box['id']}/egress", json={"egress": ["1.1.1.1"]})
    assert put.status_code == 200
    assert client.post(f"/v1/sandboxes/{box['id']}/resume").status_code in (200, 202)
    assert installed(client).specs[box["id"]].restricted


def test_counters_are_written_to_the_store(client: TestClient) -> None:
    box = create(client)
    services = client.app.state.services  # type: ignore[attr-defined]
    layer = installed(client)
    layer.specs[box["id"]] = replace(layer.specs[box["id"]], used_bytes=1234, ingress_bytes=5678)
    assert client.get(f"/v1/sandboxes/{box['id']}").json()["data"]["bandwidth_ingress_bytes"] == 0
    client.portal.call(services.egress.flush)  # type: ignore[union-attr]
    got = client.get(f"/v1/sandboxes/{box['id']}").json()["data"]
    assert got["bandwidth_ingress_bytes"] == 5678
    # And at a stop (pause), the last counts are kept; the view reads them from the store.
    layer.specs[box["id"]] = replace(layer.specs[box["id"]], used_bytes=2000, ingress_bytes=6000)
    client.post(f"/v1/sandboxes/{box['id']}/pause")
    view = client.get(f"/v1/sandboxes/{box['id']}/bandwidth").json()["data"]
    assert (view["used_bytes"], view["ingress_bytes"]) == (2000, 6000)


@pytest.fixture
def client_on_each_db(app_settings: Any, database_url: str) -> Iterator[TestClient]:
    settings = app_settings.model_copy(update={"database_url": database_url})
    with TestClient(create_app(settings)) as client:
        client.headers["X-Api-Key"] = _key(client, "alice")
        yield client
    asyncio.run(FakeDriver(settings.home / "fake-sandboxes").cleanup(set()))


def test_a_flush_that_read_the_counters_before_a_pause_does_not_take_bytes_back(
    client_on_each_db: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = client_on_each_db
    # The periodic flush reads the kernel, then the store, then writes; a pause in between
    # saves the sandbox's last (higher) counts first. The flush must not write its older
    # ones over them: the next resume starts the counters, and the quota, from the store.
    box = create(client)
    services = client.app.state.services  # type: ignore[attr-defined]
    layer = installed(client)
    layer.specs[box["id"]] = replace(layer.specs[box["id"]], used_bytes=1000, ingress_bytes=3000)
    read_counts = layer.all_counts

    async def paused_meanwhile() -> dict[str, Any]:
        counts = await read_counts()
        layer.specs[box["id"]] = replace(
            layer.specs[box["id"]], used_bytes=1500, ingress_bytes=3500
        )
        await services.egress._stopped(box["id"])  # what a pause runs, saving 1500 / 3500
        return counts

    monkeypatch.setattr(layer, "all_counts", paused_meanwhile)
    client.portal.call(services.egress.flush)  # type: ignore[union-attr]
    view = client.get(f"/v1/sandboxes/{box['id']}/bandwidth").json()["data"]
    assert (view["used_bytes"], view["ingress_bytes"]) == (1500, 3500)


def test_a_change_the_kernel_refuses_is_not_stored(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = create(client, egress=["pypi.org"])
    url = f"/v1/sandboxes/{box['id']}"
    quota = client.get(f"{url}/bandwidth").json()["data"]["quota_bytes"]

    async def refused(*args: Any, **kwargs: Any) -> None:
        raise CommandFailed(("nft", "-f", "-"), CommandResult(1, b"", b"Error: out of memory"))

    monkeypatch.setattr(installed(client), "apply", refused)
    put = client.put(f"{url}/egress", json={"egress": ["1.1.1.1"]})
    assert put.status_code == 409 and "old ones stay" in put.text
    assert client.get(f"{url}/egress").json()["data"]["egress"] == ["pypi.org"]
    recharge = client.post(f"{url}/bandwidth/recharge", json={"add_bytes": 1000})
    assert recharge.status_code == 503 and recharge.json()["status"] == "error"
    assert client.get(f"{url}/bandwidth").json()["data"]["quota_bytes"] == quota
    monkeypatch.undo()
    assert client.put(f"{url}/egress", json={"egress": ["1.1.1.1"]}).status_code == 200
    assert installed(client).specs[box["id"]].networks[0][0].exploded == "1.1.1.1/32"
