"""The warm pool on gvisor (issue 17): ``HUTCH_WARM_POOL=gvisor:devbox:1:...`` keeps gVisor
sandboxes prepared, and a gvisor create that matches is served from one (``X-Hutch-Warm:
1``) with its own name (gVisor's kernel's too), environment and nothing of anything else;
one that was touched is never handed out; users never see the pool; a kill -9 leaves
nothing of it after the next start. One server for the module (CI time)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_gvisor import runsc_sandboxes
from tests.e2e.test_sandboxes_runc import new_pool, runc_server, sh
from tests.e2e.test_warm_pool_runc import env_of
from tests.support.server import HutchProcess, remove_instance, run_cli
from tests.support.warm import metrics_env, prepared, wait_for_pool

SHAPE = "s-1vcpu-256mb"
POOL = f"gvisor:devbox:1:{SHAPE}=2"


def warm_server(home: Path, images: Path, pool: str) -> HutchProcess:
    return runc_server(home, images, pool=pool, env={"HUTCH_WARM_POOL": POOL, **metrics_env()})


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, images: Path
) -> Iterator[tuple[HutchProcess, httpx.Client, str]]:
    home, pool = tmp_path_factory.mktemp("gvisor-warm") / "home", new_pool()
    server = warm_server(home, images, pool)
    key = run_cli(home, "keys", "create", "--user", "gwarm").stdout.strip()
    try:
        with server.client(key) as api:
            yield server, api, pool
    finally:
        server.stop()
        remove_instance(home)


def create(api: httpx.Client, **body: Any) -> tuple[dict[str, Any], str]:
    response = api.post("/v1/sandboxes", json={"shape": SHAPE, "runtime": "gvisor", **body})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    assert data["runtime"] == "gvisor"
    return data, response.headers["X-Hutch-Warm"]


def runsc_exec(home: Path, sandbox_id: str, script: str) -> None:
    """Run ``script`` in a sandbox with runsc, as only the host can (no guest agent)."""
    subprocess.run(["runsc", "--root", str(home / "runsc"), "exec", sandbox_id,
                    "/bin/sh", "-c", script], check=True, capture_output=True)  # fmt: skip


def test_a_gvisor_create_from_the_pool_has_its_own_name_and_environment_only(
    served: tuple[HutchProcess, httpx.Client, str],
) -> None:
    server, api, _ = served
    ready = wait_for_pool(server, 2)
    assert api.get("/v1/sandboxes").json()["data"]["pagination"]["total"] == 0
    assert [h["vm_count"] for h in api.get("/v1/hosts").json()["data"]["data"]] == [0]
    box, warm = create(api, name="warm-gecko", envs={"ONLY": "warm", "SHARED": "x"})
    assert warm == "1" and box["id"] in ready
    # A runc create, or one with a private network (gVisor joins them before its start),
    # or another disk size, starts cold; the pool's runtime is gvisor only.
    net = api.post("/v1/networks", json={"name": "gwarmnet"}).json()["data"]
    _, warm = create(api, name="net-gecko", networks=[{"id": net["id"]}])
    assert warm == "0"
    plain = api.post("/v1/sandboxes", json={"shape": SHAPE, "runtime": "runc"})
    assert plain.status_code == 201 and plain.headers["X-Hutch-Warm"] == "0"
    cold, warm = create(api, name="cold-gecko", envs={"SHARED": "x"}, disk_mib=1024)
    assert warm == "0"

    names = "hostname; cat /proc/sys/kernel/hostname /etc/hostname; grep -c . /etc/hosts"
    lines = sh(api, box, f"{names}; tail -1 /etc/hosts")["stdout"].splitlines()
    assert lines[:4] == ["warm-gecko", "warm-gecko", "warm-gecko", "3"], lines
    assert lines[4].split() == [box["ip"], "warm-gecko"]
    warm_env, cold_env = env_of(api, box), env_of(api, cold)
    assert warm_env["ONLY"] == "warm" and warm_env["HOSTNAME"] == "warm-gecko"
    # Exactly what a cold start gives, but for the name and its own envs.
    assert {**warm_env, "HOSTNAME": "x", "ONLY": "x"} == {**cold_env, "HOSTNAME": "x", "ONLY": "x"}
    found = sh(api, box, "find /tmp /dev/shm -mindepth 1 | wc -l")
    assert found["stdout"].split()[0] == "0", found
    # Users see their own only; the pool is not counted.
    listed = api.get("/v1/sandboxes").json()["data"]["data"]
    assert sorted(b["name"] for b in listed if b["runtime"] == "gvisor") == [
        "cold-gecko", "net-gecko", "warm-gecko"
    ]  # fmt: skip
    assert api.get(f"/v1/sandboxes/{prepared(server.home)[0]}").status_code == 404
    # It hibernates and wakes as any gvisor sandbox does, with its name.
    assert api.post(f"/v1/sandboxes/{box['id']}/pause").json()["data"]["hibernated"]
    assert api.post(f"/v1/sandboxes/{box['id']}/resume").status_code == 202
    assert sh(api, box, "hostname; echo $ONLY")["stdout"].split() == ["warm-gecko", "warm"]
    for sandbox in listed:
        assert api.delete(f"/v1/sandboxes/{sandbox['id']}").status_code == 200


def test_a_prepared_gvisor_sandbox_that_was_touched_is_never_handed_out(
    served: tuple[HutchProcess, httpx.Client, str],
) -> None:
    server, api, _ = served
    one, two = wait_for_pool(server, 2)
    # In one, a process the host started left a child behind (an orphan: its parent is
    # now the guest agent, the init) and a file in /dev/shm (gVisor's memory: only the
    # agent can see it); in the other a file appeared in its writable layer.
    # (The sleep's output goes nowhere: runsc exec would wait for it to close.)
    runsc_exec(server.home, one, "echo leak > /dev/shm/leak; setsid sleep 600 >/dev/null 2>&1 &")
    layer = server.home / "sandboxes" / two / "layer" / "upper"
    (layer / "workspace" / "leak").write_text("secret")
    boxes = [create(api, envs={"N": str(n)}) for n in range(2)]
    assert [warm for _, warm in boxes] == ["0", "0"], "a touched sandbox was handed out"
    assert {box["id"] for box, _ in boxes} == {one, two}, "started cold under the same ids"
    for box, _ in boxes:
        result = sh(api, box, "ls /dev/shm /workspace; pgrep -c sleep")
        assert "leak" not in result["stdout"] and result["stdout"].split()[-1] == "0", result
        assert api.delete(f"/v1/sandboxes/{box['id']}").status_code == 200


def test_a_restart_after_kill_9_leaves_nothing_of_the_old_gvisor_pool(
    served: tuple[HutchProcess, httpx.Client, str], images: Path
) -> None:
    server, api, pool = served
    box, warm = create(api, name="kept-gecko")
    assert warm in ("0", "1")
    old = wait_for_pool(server, 2)
    server.stop(signal.SIGKILL)
    assert set(old) <= set(runsc_sandboxes(server.home))  # kill -9 leaves them running...
    again = warm_server(server.home, images, pool)
    try:
        new = wait_for_pool(again, 2)
        assert not set(new) & set(old)  # ...and the next start destroys them
        assert set(runsc_sandboxes(again.home)) == {box["id"], *new}
        assert not any((again.home / "sandboxes" / sid).exists() for sid in old)
        with again.client(api.headers["X-Api-Key"]) as client:
            got = client.get(f"/v1/sandboxes/{box['id']}").json()["data"]
            assert got["status"] == "running" and got["name"] == "kept-gecko"
            assert sh(client, box, "hostname")["stdout"].strip() == "kept-gecko"
    finally:
        again.stop()
    assert prepared(again.home) == []  # a stop destroys the pool
