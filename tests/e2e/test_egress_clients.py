"""Egress rules and bandwidth through the Python SDK and the ``hutch`` command line, against
a real ``hutch serve`` with real sandboxes (runc) and the tests' small internet
(tests.support.internet): what a client sets is what the sandbox can then reach, and a
quota run out stops its traffic until a recharge."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from hutch.sdk import (
    AsyncClient,
    AsyncEgress,
    AsyncSandbox,
    Bandwidth,
    Client,
    InvalidRequestError,
    NotFoundError,
    Sandbox,
)
from tests.e2e.test_cli_client import assert_one_error, hutch, ok
from tests.e2e.test_sandboxes_runc import runc_server
from tests.support.internet import Internet
from tests.support.server import HutchProcess, remove_instance

QUOTA = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    process = runc_server(
        tmp_path_factory.mktemp("egress-clients") / "home",
        images,
        env={"HUTCH_BANDWIDTH_QUOTA_BYTES": str(QUOTA)},
    )
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture(scope="module")
def key(server: HutchProcess) -> str:
    return server.new_key("egress-user")


@pytest.fixture(scope="module")
def client(server: HutchProcess, key: str) -> Iterator[Client]:
    with Client(server.url, key) as client:
        yield client


@pytest.fixture(scope="module")
def hosts(internet: Internet) -> tuple[str, str]:
    """Two addresses of the small internet, each serving HTTP on ports 80 and 8080."""
    return internet.address("example.test"), internet.address("evil.test")


def reaches(sandbox: Sandbox, address: str, port: int = 80) -> bool:
    """Whether an HTTP GET from inside the sandbox gets an answer."""
    result = sandbox.commands.run(f"curl -sS -m 5 -o /dev/null http://{address}:{port}/")
    return result.exit_code == 0


# --- the SDK ------------------------------------------------------------------------------


def test_rules_set_at_create_and_replaced_live_decide_what_is_reached(
    client: Client, hosts: tuple[str, str]
) -> None:
    a, b = hosts
    with Sandbox.create(client=client, egress=[f"{a}:80"]) as sandbox:
        assert sandbox.info.egress == (f"{a}:80",)
        assert sandbox.egress.get() == [f"{a}:80"]
        assert reaches(sandbox, a, 80)
        assert not reaches(sandbox, a, 8080) and not reaches(sandbox, b, 80)

        assert sandbox.egress.set([b]) == [b]
        assert sandbox.refresh().egress == (b,)
        assert reaches(sandbox, b, 80) and reaches(sandbox, b, 8080)
        assert not reaches(sandbox, a, 80)

        with pytest.raises(InvalidRequestError, match=r"egress\[1\]"):
            sandbox.egress.set([a, "not a rule!"])
        assert sandbox.egress.get() == [b], "a refused change leaves the rules as they were"

        assert sandbox.egress.set([]) == []
        assert reaches(sandbox, a, 80) and reaches(sandbox, b, 8080)
        with pytest.raises(TypeError):
            sandbox.egress.set(a)


def test_bandwidth_caps_at_the_quota_and_a_recharge_lifts_it(
    client: Client, hosts: tuple[str, str]
) -> None:
    a, b = hosts
    with Sandbox.create(client=client) as sandbox:
        fresh = sandbox.bandwidth()
        assert isinstance(fresh, Bandwidth) and fresh.id == sandbox.id
        assert (fresh.quota_bytes, fresh.capped, fresh.unmetered) == (QUOTA, False, False)
        assert fresh.remaining_bytes == QUOTA - fresh.used_bytes

        sandbox.commands.run("head -c 3000000 /dev/zero > /tmp/big", check=True)
        upload = sandbox.commands.run(
            f"curl -sS -m 8 -o /dev/null --data-binary @/tmp/big http://{b}/sink"
        )
        assert upload.exit_code != 0, "3 MB cannot go out on a 1 MiB quota"
        spent = sandbox.bandwidth()
        assert spent.capped and spent.used_bytes > QUOTA // 2
        assert not reaches(sandbox, a)

        lifted = sandbox.recharge(8 * QUOTA)
        assert lifted.quota_bytes == 9 * QUOTA and not lifted.capped
        assert lifted.remaining_bytes == lifted.quota_bytes - lifted.used_bytes
        assert reaches(sandbox, a)
        with pytest.raises(InvalidRequestError, match="add_bytes"):
            sandbox.recharge(0)


@pytest.mark.anyio
async def test_the_async_api_has_the_same_calls(
    server: HutchProcess, key: str, hosts: tuple[str, str]
) -> None:
    a, _ = hosts
    sandbox = await AsyncSandbox.create(api_url=server.url, api_key=key, egress=[f"{a}:8080"])
    try:
        assert await sandbox.egress.get() == [f"{a}:8080"]
        assert await sandbox.egress.set(["*"]) == ["*"]
        seen = await sandbox.bandwidth()
        assert seen.quota_bytes == QUOTA and not seen.capped
        assert (await sandbox.recharge(QUOTA)).quota_bytes == 2 * QUOTA
    finally:
        await sandbox.kill()
        await sandbox.close()
    async with AsyncClient(server.url, key) as aio:
        for call in (AsyncEgress(aio.transport, "sb_nope").get(),
                     AsyncEgress(aio.transport, "sb_nope").set([a])):  # fmt: skip
            with pytest.raises(NotFoundError, match="sb_nope"):
                await call


# --- the command line ---------------------------------------------------------------------


def test_cli_create_with_egress_show_replace_and_open(
    server: HutchProcess, key: str, hosts: tuple[str, str]
) -> None:
    a, b = hosts
    made = json.loads(
        ok(hutch(server, key, "sandbox", "create", "--egress", f"{a}:80", "--egress", b, "--json"))
    )
    box = made["id"]
    try:
        assert made["egress"] == [f"{a}:80", b]
        assert ok(hutch(server, key, "egress", box)).splitlines() == [f"{a}:80", b]

        def curl(address: str, port: int) -> int:
            line = f"curl -sS -m 5 -o /dev/null http://{address}:{port}/"
            return hutch(server, key, "exec", box, "--", "sh", "-c", line).returncode

        assert curl(a, 80) == 0 and curl(b, 8080) == 0 and curl(a, 8080) != 0

        assert ok(hutch(server, key, "egress", box, f"{a}:8080")).splitlines() == [f"{a}:8080"]
        assert curl(a, 8080) == 0 and curl(a, 80) != 0 and curl(b, 80) != 0

        shown = json.loads(ok(hutch(server, key, "egress", box, "--open", "--json")))
        assert shown == {"id": box, "egress": []}
        assert "no rules" in ok(hutch(server, key, "egress", box))
        assert curl(a, 80) == 0 and curl(b, 80) == 0

        assert_one_error(hutch(server, key, "egress", box, a, "bad rule!"), 1, "egress[1]")
        assert json.loads(ok(hutch(server, key, "egress", box, "--json")))["egress"] == []
        assert_one_error(hutch(server, key, "egress", box, "--open", a), 2, "not both")
        assert_one_error(hutch(server, key, "egress", "sb_nope"), 3)
        bad = hutch(server, key, "sandbox", "create", "--egress", "10.0.0.1")
        assert_one_error(bad, 1, "deny set")
    finally:
        hutch(server, key, "sandbox", "rm", box)


def test_cli_bandwidth_shows_and_recharges(server: HutchProcess, key: str) -> None:
    box = json.loads(ok(hutch(server, key, "sandbox", "create", "--json")))["id"]
    try:
        table = ok(hutch(server, key, "bandwidth", box))
        assert "quota" in table and "1.0 MiB (1048576 bytes)" in table
        assert re.search(r"^capped +no$", table, re.MULTILINE), table
        seen = json.loads(ok(hutch(server, key, "bandwidth", box, "--json")))
        assert set(seen) >= {"id", "quota_bytes", "used_bytes", "ingress_bytes",
                             "remaining_bytes", "capped"}  # fmt: skip
        assert seen["id"] == box and seen["quota_bytes"] == QUOTA
        after = json.loads(ok(hutch(server, key, "bandwidth", box, "--recharge", "2M", "--json")))
        assert after["quota_bytes"] == 3 * QUOTA
        assert "3.0 MiB" in ok(hutch(server, key, "bandwidth", box, "--recharge", "1"))
        for wrong in ("lots", "0", "-5", "1iB"):
            answer = hutch(server, key, "bandwidth", box, "--recharge", wrong)
            assert_one_error(answer, 2)
        assert json.loads(ok(hutch(server, key, "bandwidth", box, "--json")))["quota_bytes"] == (
            3 * QUOTA + 1
        )
        assert_one_error(hutch(server, key, "bandwidth", "sb_nope"), 3)
    finally:
        hutch(server, key, "sandbox", "rm", box)


def test_sdk_create_refuses_one_string_for_the_rules(client: Client) -> None:
    with pytest.raises(TypeError, match="list of rules"):
        Sandbox.create(client=client, egress="pypi.org")  # type: ignore[arg-type]
