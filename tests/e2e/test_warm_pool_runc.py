"""The warm pool (issue 18): ``HUTCH_WARM_POOL`` keeps runc sandboxes prepared, and a
create that matches is served from it (``X-Hutch-Warm: 1``) with exactly what it asked for
and nothing of anything else; a burst larger than the pool starts the rest cold; a restart
leaves nothing of the old pool; users never see or count the pool's sandboxes."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from hutch.host.drivers.runc import RuncDriver
from hutch.host.guest import ExecExit, ExecRequest, GuestClient
from tests.e2e.test_egress_kernel_runc import reaches, refused
from tests.e2e.test_sandboxes_runc import leftovers, runc_server, sh
from tests.support.internet import Internet
from tests.support.server import HutchProcess, remove_instance
from tests.support.warm import metrics_env, prepared, wait_for_pool

SHAPE = "s-1vcpu-256mb"
_pools = itertools.count()


def own_pool() -> str:
    """10.106/16 is this module's (10.90-10.105 are other tests' and benchmarks')."""
    return f"10.106.{(next(_pools) % 64) * 4}.0/22"


def warm_server(home: Path, images: Path, count: int, **env: str) -> HutchProcess:
    """A runc server with a pool of ``count`` and its /metrics (for :func:`wait_for_pool`)."""
    return runc_server(
        home, images, pool=env.pop("pool", own_pool()),
        env={"HUTCH_WARM_POOL": f"devbox:1:{SHAPE}={count}", **metrics_env(), **env},
    )  # fmt: skip


def create(api: httpx.Client, **body: Any) -> tuple[dict[str, Any], str]:
    """The created sandbox and its ``X-Hutch-Warm``."""
    response = api.post("/v1/sandboxes", json={"shape": SHAPE, **body})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data, response.headers["X-Hutch-Warm"]


def env_of(api: httpx.Client, box: dict[str, Any]) -> dict[str, str]:
    result = sh(api, box, "env -0", args=None)
    out = str(result["stdout"])
    return dict(item.split("=", 1) for item in out.split("\0") if item)


def guest_exec(home: Path, sandbox_id: str, script: str) -> int | None:
    """Run ``script`` in a sandbox through its guest agent, as only the host can."""
    guest = GuestClient(RuncDriver(home, images=home).agent_socket(sandbox_id))

    async def go() -> int | None:
        code = None
        async for event in guest.exec(ExecRequest(argv=["/bin/sh", "-c", script])):
            if isinstance(event, ExecExit):
                code = event.exit_code
        return code

    return asyncio.run(go())


@pytest.fixture
def served(tmp_path: Path, images: Path) -> Iterator[tuple[HutchProcess, httpx.Client]]:
    server = warm_server(tmp_path / "home", images, 2)
    key = server.new_key("warm")
    try:
        with server.client(key) as api:
            yield server, api
    finally:
        server.stop()
        remove_instance(server.home)


def test_a_create_from_the_pool_has_exactly_what_it_asked_for_and_nothing_else(
    served: tuple[HutchProcess, httpx.Client],
) -> None:
    server, api = served
    wait_for_pool(server, 2)
    net = api.post("/v1/networks", json={"name": "warmnet"}).json()["data"]
    first, warm = create(api, name="first-otter", envs={"ONLY_FIRST": "1", "SHARED": "first"},
                         networks=[{"id": net["id"]}])  # fmt: skip
    assert warm == "1"
    ready = wait_for_pool(server, 2)
    # A create refused for its name takes nothing from the pool.
    taken = api.post("/v1/sandboxes", json={"shape": SHAPE, "name": "first-otter"})
    assert taken.status_code == 409, taken.text
    assert prepared(server.home) == ready
    second, warm = create(api, name="second-otter", envs={"SHARED": "second"},
                          networks=[{"id": net["id"]}])  # fmt: skip
    assert warm == "1"
    # A cold sandbox with the same envs, for the environment a command should start with.
    cold, warm = create(api, name="cold-otter", envs={"SHARED": "second"}, disk_mib=1024)
    assert warm == "0"

    for box, name in ((first, "first-otter"), (second, "second-otter")):
        result = sh(
            api, box, "hostname; cat /etc/hostname; grep -c . /etc/hosts; tail -1 /etc/hosts"
        )
        lines = str(result["stdout"]).splitlines()
        assert lines[:3] == [name, name, "3"], lines
        assert lines[3].split() == [box["ip"], name]
    first_env, second_env, cold_env = (env_of(api, b) for b in (first, second, cold))
    assert first_env["ONLY_FIRST"] == "1" and first_env["SHARED"] == "first"
    assert "ONLY_FIRST" not in second_env and second_env["SHARED"] == "second"
    assert second_env["HOSTNAME"] == "second-otter"
    # Exactly what a cold start gives, but for the name.
    assert {**second_env, "HOSTNAME": "x"} == {**cold_env, "HOSTNAME": "x"}
    # Networks: each finds the other by name on the network, not the cold one (not in it).
    found = sh(api, second, "getent hosts first-otter cold-otter | awk '{print $2}'")
    assert str(found["stdout"]).split() == ["first-otter"]
    # Nothing of the preparation: no file in /tmp or /dev/shm.
    found = sh(api, second, "find /tmp /dev/shm -mindepth 1 | wc -l")
    assert str(found["stdout"]).split()[0] == "0", found
    listed = api.get("/v1/sandboxes").json()["data"]
    assert sorted(b["name"] for b in listed["data"]) == ["cold-otter", "first-otter",
                                                         "second-otter"]  # fmt: skip


def test_a_prepared_sandbox_that_was_touched_is_never_handed_out(
    served: tuple[HutchProcess, httpx.Client],
) -> None:
    server, api = served
    one, two = wait_for_pool(server, 2)
    # In one, a command ran (through its guest agent) and left a file and a process; in
    # the other a file appeared in its writable layer from the host's side.
    assert guest_exec(server.home, one, "echo secret > /tmp/leak; sleep 600 & true") == 0
    layer = server.home / "sandboxes" / two / "layer" / "upper"
    (layer / "tmp").mkdir(exist_ok=True)
    (layer / "tmp" / "leak").write_text("secret")
    boxes = [create(api, envs={"N": str(n)}) for n in range(2)]
    assert [warm for _, warm in boxes] == ["0", "0"], "a touched sandbox was handed out"
    assert {box["id"] for box, _ in boxes} == {one, two}, "started cold under the same ids"
    for box, _ in boxes:
        result = sh(api, box, "ls /tmp/leak; pgrep -c sleep")
        assert "No such file" in str(result["stderr"]) and str(result["stdout"]).strip() == "0"
    # The pool fills again, with untouched ones, which are handed out.
    wait_for_pool(server, 2)
    box, warm = create(api)
    assert warm == "1" and sh(api, box, "test -e /tmp/leak")["exit_code"] == 1


def test_a_burst_larger_than_the_pool_starts_the_rest_cold_and_the_pool_keeps_its_size(
    served: tuple[HutchProcess, httpx.Client],
) -> None:
    server, api = served
    ready = wait_for_pool(server, 2)
    key = api.headers["X-Api-Key"]
    clients = [server.client(key) for _ in range(5)]
    seen: list[int] = []
    bursting = threading.Event()

    def watch() -> None:  # how many prepared sandboxes exist, all through the burst
        while not bursting.is_set():
            seen.append(len(prepared(server.home)))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=5) as pool:
            made = list(pool.map(lambda c: create(c, name=None), clients))
    finally:
        bursting.set()
        watcher.join()
        for client in clients:
            client.close()
    warm_ids = {box["id"] for box, warm in made if warm == "1"}
    # Both ready ones were handed out, the rest started cold (a refill finishing within
    # the burst may serve one more), and the pool never held more than its size.
    assert set(ready) <= warm_ids and len(warm_ids) < 5, made
    assert max(seen) <= 2, max(seen)
    for box, _ in made:
        assert sh(api, box, "true")["exit_code"] == 0
    ready = wait_for_pool(server, 2)
    time.sleep(2)  # and no more than that comes
    assert len(prepared(server.home)) == 2 and len(ready) == 2
    assert len(leftovers(server.home)["runc"]) == 5 + 2


def test_users_never_see_or_count_the_pools_sandboxes(tmp_path: Path, images: Path) -> None:
    server = warm_server(tmp_path / "home", images, 3, HUTCH_MAX_RUNNING_PER_USER="1")
    try:
        key = server.new_key("solo")
        with server.client(key) as api:
            wait_for_pool(server, 3)
            assert api.get("/v1/sandboxes").json()["data"]["pagination"]["total"] == 0
            hosts = api.get("/v1/hosts").json()["data"]["data"]
            assert [h["vm_count"] for h in hosts] == [0]
            _, warm = create(api)
            assert warm == "1"
            # The cap counts the user's one sandbox, not the pool's.
            over = api.post("/v1/sandboxes", json={"shape": SHAPE})
            assert over.status_code == 429, over.text
            assert api.get("/v1/sandboxes").json()["data"]["pagination"]["total"] == 1
            assert [h["vm_count"] for h in api.get("/v1/hosts").json()["data"]["data"]] == [1]
            assert api.get(f"/v1/sandboxes/{prepared(server.home)[0]}").status_code == 404
    finally:
        server.stop()
        remove_instance(server.home)


def test_a_restart_leaves_nothing_of_the_old_pool_and_keeps_what_users_have(
    tmp_path: Path, images: Path
) -> None:
    pool = own_pool()
    home = tmp_path / "home"
    server = warm_server(home, images, 2, pool=pool)
    key = server.new_key("kept")
    try:
        with server.client(key) as api:
            wait_for_pool(server, 2)
            box, warm = create(api, name="kept-otter")
            assert warm == "1"
            old = wait_for_pool(server, 2)
        server.stop(signal.SIGKILL)
        assert prepared(home) == old  # kill -9 leaves them on the host...
        server = warm_server(home, images, 2, pool=pool)
        with server.client(key) as api:
            new = wait_for_pool(server, 2)
            assert not set(new) & set(old)  # ...and the next start destroys them
            on_host = set(leftovers(home)["runc"])
            assert on_host == {box["id"], *new}, on_host
            assert not any((home / "sandboxes" / sid).exists() for sid in old)
            # The user's sandbox, handed out before the kill, was adopted.
            got = api.get(f"/v1/sandboxes/{box['id']}").json()["data"]
            assert got["status"] == "running" and got["name"] == "kept-otter"
            assert sh(api, box, "hostname")["stdout"].strip() == "kept-otter"
        # A stop destroys the pool (a start would anyway).
        server.stop()
        assert prepared(home) == [] and set(leftovers(home)["runc"]) == {box["id"]}
    finally:
        server.stop()
        remove_instance(home)


def test_egress_of_a_sandbox_from_the_pool_is_its_own(
    tmp_path: Path, images: Path, internet: Internet
) -> None:
    pool = f"10.104.{internet.slot * 4}.0/22"
    server = warm_server(tmp_path / "home", images, 2, pool=pool, HUTCH_HOST="0.0.0.0",
                         HUTCH_DNS_UPSTREAM=internet.resolver)  # fmt: skip
    try:
        key = server.new_key("egress")
        example, evil = internet.address("example.test"), internet.address("evil.test")
        with server.client(key) as api:
            wait_for_pool(server, 2)
            closed, warm = create(api, egress=[f"{example}/32"])
            assert warm == "1"
            wait_for_pool(server, 2)
            opened, warm = create(api)
            assert warm == "1"
            assert reaches(api, closed, example, 80) and refused(api, closed, evil, 80)
            assert reaches(api, opened, evil, 80)
            rules = api.get(f"/v1/sandboxes/{closed['id']}/egress").json()["data"]
            assert json.dumps(rules).count(example) == 1
    finally:
        server.stop()
        remove_instance(server.home)
