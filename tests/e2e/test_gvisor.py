"""The gvisor runtime through a real ``hutch serve``: real runsc sandboxes beside runc ones,
hibernate (pause writes the sandbox to a snapshot and stops it), resume, and fork."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from hutch.host.drivers.gvisor_features import _build_sysview
from hutch.host.drivers.gvisor_host import _HIDE_SYS_NET
from tests.e2e.test_gvisor_network import network_on_host
from tests.e2e.test_sandboxes_runc import create, new_pool, runc_server, sh
from tests.support.seaweed import SeaweedS3
from tests.support.server import HutchProcess, remove_instance

# Written to a temporary file and renamed: a reader never sees it half-written.
COUNTER = (
    "setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i > /workspace/.n; "
    "mv /workspace/.n /workspace/count; sleep 0.25; done' >/dev/null 2>&1 </dev/null & echo $!"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    process = runc_server(tmp_path_factory.mktemp("gvisor") / "home", images)
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture
def api(server: HutchProcess) -> Iterator[httpx.Client]:
    key = server.new_key(f"g{time.monotonic_ns()}")
    with server.client(key) as client:
        yield client
        # What the test made goes: under ptrace a counter left running costs a core's tenth
        # or more, and the module's later tests would share the two cores with it.
        for box in client.get("/v1/sandboxes").json()["data"]["data"]:
            client.delete(f"/v1/sandboxes/{box['id']}")


def gvisor_box(api: httpx.Client, **body: Any) -> dict[str, Any]:
    box = create(api, runtime="gvisor", **body)
    assert box["runtime"] == "gvisor"
    return box


def count(api: httpx.Client, box: dict[str, Any]) -> int:
    return int(sh(api, box, "cat /workspace/count")["stdout"])


def counts_on(api: httpx.Client, box: dict[str, Any], since: int, timeout_s: float = 10) -> bool:
    """Whether the counter goes past ``since`` within the timeout (it ticks every 0.25 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if count(api, box) > since:
            return True
        time.sleep(0.1)
    return False


def start_counter(api: httpx.Client, box: dict[str, Any]) -> int:
    pid = int(sh(api, box, COUNTER)["stdout"])
    for _ in range(100):
        if sh(api, box, "test -e /workspace/count")["exit_code"] == 0:
            break
        time.sleep(0.05)
    return pid


def runsc_sandboxes(home: Path) -> list[str]:
    """The sandboxes runsc runs for this instance (a hibernated one is not among them)."""
    listed = subprocess.run(["runsc", "--root", str(home / "runsc"), "list", "-quiet"],
                            capture_output=True, text=True, check=False)  # fmt: skip
    alive = []
    for sandbox_id in listed.stdout.split():
        state = subprocess.run(["runsc", "--root", str(home / "runsc"), "state", sandbox_id],
                               capture_output=True, text=True, check=False)  # fmt: skip
        if '"running"' in state.stdout or '"paused"' in state.stdout:
            alive.append(sandbox_id)
    return alive


def disk_unmounted(home: Path, sandbox_id: str, timeout_s: float = 30) -> bool:
    """Whether the sandbox's writable layer leaves the host's mounts within the timeout
    (a hibernate unmounts it once runsc has let go of the sandbox)."""
    layer = str(home / "sandboxes" / sandbox_id / "layer")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with open("/proc/self/mountinfo") as mountinfo:
            if not any(line.split()[4] == layer for line in mountinfo):
                return True
        time.sleep(0.1)
    return False


def test_gvisor_and_runc_sandboxes_side_by_side(api: httpx.Client, server: HutchProcess) -> None:
    hosts = api.get("/v1/hosts").json()["data"]["data"]
    assert hosts[0]["runtimes"] == ["gvisor", "runc"]
    box = gvisor_box(api, name="g-otter", envs={"STAGE": "test"})
    plain = create(api)
    assert plain["runtime"] == "runc" and box["status"] == "running"
    # gVisor's own kernel answers inside, not the host's (which runc's sandbox shares).
    assert sh(api, plain, "uname -r")["stdout"].strip() == platform.release()
    assert sh(api, box, "uname -r")["stdout"].strip() != platform.release()
    result = sh(api, box, "hostname; echo $STAGE; ls -d /workspace; df -m / | tail -1")
    lines = result["stdout"].splitlines()
    assert lines[:3] == ["g-otter", "test", "/workspace"] and result["exit_code"] == 0
    streamed = api.post(f"/v1/sandboxes/{box['id']}/exec?stream=true",
                        json={"cmd": "echo one; echo two >&2; exit 3"})  # fmt: skip
    frames = [line for line in streamed.text.splitlines() if line]
    assert frames[-1] == '{"exit_code": 3}' and '{"stdout": "one\\n"}' in frames
    put = api.put(f"/v1/sandboxes/{box['id']}/files", params={"path": "/data/x.bin"},
                  content=bytes(range(256)) * 1000)  # fmt: skip
    assert put.status_code == 200
    got = api.get(f"/v1/sandboxes/{box['id']}/files", params={"path": "/data/x.bin"})
    assert got.content == bytes(range(256)) * 1000
    assert api.get(f"/v1/sandboxes/{box['id']}").json()["data"]["runtime"] == "gvisor"
    bad = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb", "runtime": "kata"})
    assert bad.status_code == 400 and "runtime" in bad.json()["data"]
    for sandbox in (box, plain):
        assert api.delete(f"/v1/sandboxes/{sandbox['id']}").status_code == 200
    assert box["id"] not in runsc_sandboxes(server.home)


@pytest.mark.parametrize("how", ["hutch-sysview", "shell"])
def test_runsc_is_started_where_proc_sys_shows_all_of_the_hosts_but_net(
    tmp_path: Path, how: str
) -> None:
    """What ``runsc run``/``restore`` are started under on a kernel whose every network
    namespace shows rmem_default (Debian's runsc then refuses to start): the compiled
    program the driver builds, and the shell script used without a C compiler, alike."""
    view = tmp_path / "view"
    view.mkdir()
    probe = ["sh", "-c", "ls /proc/sys; cat /proc/sys/kernel/hostname; "
             "test -e /proc/sys/net/core/rmem_default && echo net-seen; true"]  # fmt: skip
    if how == "shell":
        command = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                   _HIDE_SYS_NET, "sh", str(view), *probe]  # fmt: skip
    else:
        built = asyncio.run(_build_sysview(tmp_path / "built"))
        assert built is not None, "cc is one of the Makefile's packages"
        command = [str(built), str(view), *probe]
    lines = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
    host = sorted(os.listdir("/proc/sys"))
    assert "net" in host and "net-seen" not in lines
    assert lines[:-1] == [name for name in host if name != "net"]
    assert lines[-1] == Path("/proc/sys/kernel/hostname").read_text().strip()
    # Nothing of it stays on the host: its /proc/sys is whole, nothing is mounted on view.
    assert Path("/proc/sys/net/core").is_dir() and os.listdir(view) == []


def test_pause_hibernates_and_resume_carries_on_the_same_processes(
    api: httpx.Client, server: HutchProcess
) -> None:
    box = gvisor_box(api)
    pid = start_counter(api, box)
    sh(api, box, "echo kept > /workspace/file; echo in-memory > /tmp/t")
    paused = api.post(f"/v1/sandboxes/{box['id']}/pause")
    assert paused.status_code == 202 and paused.headers["X-Poll-After"]
    view = paused.json()["data"]
    assert view["status"] == "paused" and view["hibernated"] is True
    # Nothing of it runs while paused: its memory went back to the host.
    assert box["id"] not in runsc_sandboxes(server.home)
    # Nor is its disk mounted (a mounted filesystem holds kernel memory); its files stay.
    assert disk_unmounted(server.home, box["id"])
    snapshot = server.home / "snapshots" / box["id"]
    assert (snapshot / "checkpoint.img").stat().st_size > 0
    assert api.post(f"/v1/sandboxes/{box['id']}/pause").status_code == 200  # already paused
    resumed = api.post(f"/v1/sandboxes/{box['id']}/resume")
    assert resumed.status_code == 202 and resumed.json()["data"]["status"] == "running"
    assert resumed.json()["data"]["hibernated"] is False
    assert sh(api, box, "cat /workspace/file /tmp/t")["stdout"] == "kept\nin-memory\n"
    assert "while true" in sh(api, box, f"tr '\\0' ' ' < /proc/{pid}/cmdline")["stdout"]
    assert counts_on(api, box, count(api, box))
    assert not snapshot.exists()  # used, then removed


def test_an_open_connection_pauses_in_memory_and_says_why(api: httpx.Client) -> None:
    box = gvisor_box(api)
    holder = (
        "import socket,time\ns=socket.socket();s.bind(('127.0.0.1',7001));s.listen()\n"
        "c=socket.create_connection(('127.0.0.1',7001))\na,_=s.accept()\ntime.sleep(600)"
    )
    background = f'setsid python3 -c "{holder}" >/dev/null 2>&1 </dev/null &'
    api.post(f"/v1/sandboxes/{box['id']}/exec", json={"cmd": background})
    # The connection (to port 7001, established), not the listener's line alone, which
    # comes first: hibernating between the two would not be refused.
    for _ in range(100):
        if " 0100007F:1B59 01 " in sh(api, box, "cat /proc/net/tcp")["stdout"]:
            break
        time.sleep(0.05)
    view = api.post(f"/v1/sandboxes/{box['id']}/pause").json()["data"]
    assert view["status"] == "paused" and view["hibernated"] is False
    assert "open TCP connection" in view["reason"]
    assert api.post(f"/v1/sandboxes/{box['id']}/resume").status_code == 202
    assert sh(api, box, "echo back")["stdout"] == "back\n"


# Deletes a file of the disk and one of /tmp (memory: a checkpoint saves it) and keeps both
# open, until /workspace/go appears: then it closes the disk's and carries on.
HOLDER = (
    "import os,time\nf=open('/workspace/held','w')\nos.unlink('/workspace/held')\n"
    "t=open('/tmp/kept','w')\nos.unlink('/tmp/kept')\nopen('/workspace/ready','w').close()\n"
    "while not os.path.exists('/workspace/go'): time.sleep(0.05)\n"
    "f.close()\nopen('/workspace/closed','w').close()\ntime.sleep(600)"
)


def test_a_deleted_file_held_open_on_its_disk_is_not_hibernated_and_is_named(
    api: httpx.Client, server: HutchProcess
) -> None:
    # Debian's runsc cannot save it: a checkpoint fails and stops the sandbox (it was
    # lost, `error`). The pause freezes it in memory instead, naming the process and file.
    box = gvisor_box(api)
    pid = int(sh(api, box, f'setsid python3 -c "{HOLDER}" >/dev/null 2>&1 </dev/null & echo $!')
              ["stdout"])  # fmt: skip
    assert wait_for_file(api, box, "/workspace/ready")
    paused = api.post(f"/v1/sandboxes/{box['id']}/pause")
    assert paused.status_code == 202
    view = paused.json()["data"]
    assert view["status"] == "paused" and view["hibernated"] is False
    assert f"{pid} (python3): /workspace/held" in view["reason"]
    assert "/tmp/kept" not in view["reason"]
    assert box["id"] in runsc_sandboxes(server.home)  # frozen, not stopped
    assert api.post(f"/v1/sandboxes/{box['id']}/resume").status_code == 202
    assert sh(api, box, "echo back")["stdout"] == "back\n"
    # Once the process closed it, the pause hibernates, and the same process carries on.
    sh(api, box, "touch /workspace/go")
    assert wait_for_file(api, box, "/workspace/closed")
    view = api.post(f"/v1/sandboxes/{box['id']}/pause").json()["data"]
    assert view["status"] == "paused" and view["hibernated"] is True, view["reason"]
    assert box["id"] not in runsc_sandboxes(server.home)
    assert api.post(f"/v1/sandboxes/{box['id']}/resume").status_code == 202
    assert "python3" in sh(api, box, f"tr '\\0' ' ' < /proc/{pid}/cmdline")["stdout"]


# Opens a file of the disk and deletes it only once the agent has closed its socket for a
# checkpoint (its `<wake>.closed` file in /.hutch/run), after the agent's look: runsc's
# checkpoint then fails and stops the sandbox, as any failure it was not told of would.
LATE_DELETER = (
    "import os,time\nf=open('/workspace/late','w')\nf.write('x')\nf.flush()\n"
    "open('/workspace/ready','w').close()\n"
    "while not any(n.endswith('.closed') for n in os.listdir('/.hutch/run')): time.sleep(0.001)\n"
    "os.unlink('/workspace/late')\ntime.sleep(600)"
)


def test_a_checkpoint_that_fails_all_the_same_says_what_is_left_and_resume_brings_it_back(
    api: httpx.Client, server: HutchProcess
) -> None:
    box = gvisor_box(api)
    sh(api, box, "echo kept > /workspace/file")
    view: dict[str, Any] = {}
    for _ in range(5):  # (the deletion races the checkpoint's start: it is tried again)
        sh(api, box, "rm -f /workspace/ready")
        sh(api, box, f'setsid python3 -c "{LATE_DELETER}" >/dev/null 2>&1 </dev/null &')
        assert wait_for_file(api, box, "/workspace/ready")
        paused = api.post(f"/v1/sandboxes/{box['id']}/pause")
        if paused.status_code == 503:
            view = api.get(f"/v1/sandboxes/{box['id']}").json()["data"]
            break
        assert api.post(f"/v1/sandboxes/{box['id']}/resume").status_code == 202
    # runsc stopped it: `error`, saying why (runsc's complaint, without its Go dump) and
    # what is left; resume starts it again from its disk, its files there.
    assert view["status"] == "error"
    assert "runsc checkpoint failed" in view["reason"] and "vfsd" not in view["reason"]
    assert "its files are kept on its disk" in view["reason"]
    assert box["id"] not in runsc_sandboxes(server.home)
    assert api.post(f"/v1/sandboxes/{box['id']}/resume").status_code == 202
    assert sh(api, box, "cat /workspace/file")["stdout"] == "kept\n"


def wait_for_file(api: httpx.Client, box: dict[str, Any], path: str) -> bool:
    for _ in range(200):
        if sh(api, box, f"test -e {path}")["exit_code"] == 0:
            return True
        time.sleep(0.05)
    return False


def test_fork_children_carry_on_from_the_fork_point_each_on_its_own(api: httpx.Client) -> None:
    source = gvisor_box(api, envs={"WHO": "source"}, egress=["example.com"])
    start_counter(api, source)
    sh(api, source, "echo before > /workspace/shared")
    refused = api.post(f"/v1/sandboxes/{source['id']}/fork", json={})
    assert refused.status_code == 409 and "paused" in refused.json()["data"]["status"]
    assert api.post(f"/v1/sandboxes/{source['id']}/pause").json()["data"]["hibernated"]

    def fork(body: dict[str, Any]) -> dict[str, Any]:
        response = api.post(f"/v1/sandboxes/{source['id']}/fork", json=body)
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(fork, [{"envs": {"WHO": "a"}}, {"egress": ["*"], "ingress_enabled": True}])
    for child in (a, b):
        assert child["status"] == "running" and child["forked_from"] == source["id"]
        assert child["fork_mode"] == "processes" and child["runtime"] == "gvisor"
        assert child["id"] != source["id"] and child["ip"] != source["ip"]
        assert child["name"] != source["name"]
        assert sh(api, child, "cat /workspace/shared")["stdout"] == "before\n"
        assert sh(api, child, "hostname")["stdout"].strip() == child["name"]
    assert sh(api, a, "echo $WHO")["stdout"] == "a\n"
    assert sh(api, b, "echo $WHO")["stdout"] == "source\n"
    assert a["egress"] == ["example.com"] and b["egress"] == ["*"]
    assert b["ingress_enabled"] is True and a["ingress_enabled"] is False
    sh(api, a, "echo a > /workspace/mine")
    sh(api, b, "echo b > /workspace/mine")
    assert sh(api, a, "cat /workspace/mine")["stdout"] == "a\n"
    assert sh(api, b, "cat /workspace/mine")["stdout"] == "b\n"
    assert counts_on(api, a, count(api, a)) and counts_on(api, b, count(api, b))
    # The source stayed paused and untouched; a child can start paused.
    assert api.get(f"/v1/sandboxes/{source['id']}").json()["data"]["status"] == "paused"
    still = fork({"start_paused": True})
    assert still["status"] == "paused" and still["hibernated"] is True
    assert api.post(f"/v1/sandboxes/{still['id']}/resume").status_code == 202
    assert sh(api, still, "cat /workspace/shared")["stdout"] == "before\n"
    assert api.post(f"/v1/sandboxes/{source['id']}/resume").status_code == 202
    assert sh(api, source, "ls /workspace")["stdout"].split() == ["count", "shared"]


def test_ten_children_at_once(api: httpx.Client) -> None:
    source = gvisor_box(api)
    sh(api, source, "echo seed > /workspace/seed")
    assert api.post(f"/v1/sandboxes/{source['id']}/pause").status_code == 202

    def fork(_: int) -> httpx.Response:
        return api.post(f"/v1/sandboxes/{source['id']}/fork", json={}, timeout=120)

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(fork, range(10)))
    children = [r.json()["data"] for r in responses]
    assert [r.status_code for r in responses] == [201] * 10, [r.text for r in responses]
    assert len({c["ip"] for c in children}) == 10
    for child in children:
        assert sh(api, child, "cat /workspace/seed")["stdout"] == "seed\n"
        api.delete(f"/v1/sandboxes/{child['id']}")


def test_a_runc_fork_is_a_fresh_start_on_a_copy_of_the_files(api: httpx.Client) -> None:
    source = create(api)
    sh(api, source, "echo copied > /workspace/f")
    assert api.post(f"/v1/sandboxes/{source['id']}/pause").json()["data"]["hibernated"] is False
    response = api.post(f"/v1/sandboxes/{source['id']}/fork", json={"ssh_pubkeys": []})
    assert response.status_code == 201, response.text
    child = response.json()["data"]
    assert child["fork_mode"] == "files" and child["runtime"] == "runc"
    assert sh(api, child, "cat /workspace/f")["stdout"] == "copied\n"
    bad = api.post(f"/v1/sandboxes/{source['id']}/fork", json={"colour": "red"})
    assert bad.status_code == 400 and "colour" in bad.text


@pytest.mark.parametrize("delay_s", [0.0, 0.05, 0.15])
def test_kill_9_during_a_pause_converges_at_restart(
    tmp_path: Path, images: Path, delay_s: float
) -> None:
    home, pool = tmp_path / "home", new_pool()
    first = runc_server(home, images, pool=pool)
    key = first.new_key("kim")
    try:
        with first.client(key) as api:
            box = gvisor_box(api)
            start_counter(api, box)
            sh(api, box, "echo kept > /workspace/file")
            with ThreadPoolExecutor(1) as pool_:
                pool_.submit(lambda: _quietly(api.post, f"/v1/sandboxes/{box['id']}/pause"))
                time.sleep(delay_s)
                first.stop(signal.SIGKILL)
        second = runc_server(home, images, pool=pool)
        with second.client(key) as api:
            view = api.get(f"/v1/sandboxes/{box['id']}").json()["data"]
            assert view["status"] in ("running", "paused", "error"), view
            assert not list((home / "snapshots").glob("*.partial"))  # never a half snapshot
            if view["status"] == "paused":
                assert view["hibernated"] is (box["id"] not in runsc_sandboxes(home))
            if view["status"] == "paused" and view["hibernated"]:
                assert network_on_host(home, box["id"]) == []  # its leftovers went at start
            if view["status"] != "running":
                resumed = api.post(f"/v1/sandboxes/{box['id']}/resume")
                assert resumed.status_code == 202, resumed.text
            assert sh(api, box, "cat /workspace/file")["stdout"] == "kept\n"
            if view["status"] != "error":  # the processes went on
                assert counts_on(api, box, count(api, box))
        second.stop()
    finally:
        first.stop()
        remove_instance(home)


def _quietly(call: Any, *args: Any) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server was killed under it
        call(*args)


@pytest.mark.parametrize("delay_s", [0.0, 0.1])
def test_kill_9_during_a_resume_converges_at_restart(
    tmp_path: Path, images: Path, delay_s: float
) -> None:
    home, pool = tmp_path / "home", new_pool()
    first = runc_server(home, images, pool=pool)
    key = first.new_key("ray")
    try:
        with first.client(key) as api:
            box = gvisor_box(api)
            start_counter(api, box)
            assert api.post(f"/v1/sandboxes/{box['id']}/pause").json()["data"]["hibernated"]
            with ThreadPoolExecutor(1) as pool_:
                pool_.submit(lambda: _quietly(api.post, f"/v1/sandboxes/{box['id']}/resume"))
                time.sleep(delay_s)
                first.stop(signal.SIGKILL)
        second = runc_server(home, images, pool=pool)
        with second.client(key) as api:
            view = api.get(f"/v1/sandboxes/{box['id']}").json()["data"]
            assert view["status"] in ("running", "paused"), view
            assert not list((home / "snapshots").glob("*.partial"))
            if view["status"] == "paused":
                assert view["hibernated"] and box["id"] not in runsc_sandboxes(home)
                assert network_on_host(home, box["id"]) == []
                assert api.post(f"/v1/sandboxes/{box['id']}/resume").status_code == 202
            assert counts_on(api, box, count(api, box))  # the same processes, going on
        second.stop()
    finally:
        first.stop()
        remove_instance(home)


def test_kill_9_during_a_fork_converges_at_restart(tmp_path: Path, images: Path) -> None:
    home, pool = tmp_path / "home", new_pool()
    first = runc_server(home, images, pool=pool)
    key = first.new_key("fay")
    try:
        with first.client(key) as api:
            source = gvisor_box(api)
            sh(api, source, "echo seed > /workspace/seed")
            assert api.post(f"/v1/sandboxes/{source['id']}/pause").status_code == 202
            with ThreadPoolExecutor(3) as pool_:
                for _ in range(3):
                    pool_.submit(lambda: _quietly(api.post, f"/v1/sandboxes/{source['id']}/fork"))
                time.sleep(0.4)
                first.stop(signal.SIGKILL)
        second = runc_server(home, images, pool=pool)
        with second.client(key) as api:
            boxes = api.get("/v1/sandboxes", params={"limit": 50}).json()["data"]["data"]
            children = [b for b in boxes if b["forked_from"] == source["id"]]
            assert {c["status"] for c in children} <= {"running", "failed"}, children
            for child in children:
                if child["status"] == "running":
                    assert sh(api, child, "cat /workspace/seed")["stdout"] == "seed\n"
            running = sorted(c["id"] for c in children if c["status"] == "running")
            assert sorted(set(runsc_sandboxes(home)) - {source["id"]}) == running
            view = api.get(f"/v1/sandboxes/{source['id']}").json()["data"]
            assert view["status"] == "paused" and view["hibernated"]
            assert api.post(f"/v1/sandboxes/{source['id']}/resume").status_code == 202
            assert sh(api, source, "cat /workspace/seed")["stdout"] == "seed\n"
        second.stop()
    finally:
        first.stop()
        remove_instance(home)


def test_auto_pause_hibernates(tmp_path: Path, images: Path) -> None:
    env = {"HUTCH_AUTO_PAUSE_MIN_S": "1", "HUTCH_MONITOR_INTERVAL_S": "0.2"}
    home = tmp_path / "home"
    server = runc_server(home, images, env=env)
    key = server.new_key("ida")
    try:
        with server.client(key) as api:
            box = gvisor_box(api, auto_pause_after_seconds=1)
            sh(api, box, "echo idle > /workspace/f")
            view: dict[str, Any] = {}
            for _ in range(150):
                view = api.get(f"/v1/sandboxes/{box['id']}").json()["data"]
                if view["status"] == "paused":
                    break
                time.sleep(0.1)
            assert view["status"] == "paused" and view["hibernated"] is True
            assert box["id"] not in runsc_sandboxes(home)
            assert api.post(f"/v1/sandboxes/{box['id']}/resume").status_code == 202
            assert sh(api, box, "cat /workspace/f")["stdout"] == "idle\n"
            # One holding a deleted file of its disk open is auto-paused in memory, saying
            # why, and stays so (not stopped, nor tried again and again).
            held = gvisor_box(api)
            sh(api, held, f'setsid python3 -c "{HOLDER}" >/dev/null 2>&1 </dev/null &')
            assert wait_for_file(api, held, "/workspace/ready")
            api.patch(f"/v1/sandboxes/{held['id']}", json={"auto_pause_after_seconds": 1})
            for _ in range(150):
                view = api.get(f"/v1/sandboxes/{held['id']}").json()["data"]
                if view["status"] not in ("running", "pausing"):
                    break
                time.sleep(0.1)
            assert view["status"] == "paused" and view["hibernated"] is False
            assert "/workspace/held" in view["reason"]
            assert held["id"] in runsc_sandboxes(home)
            assert api.post(f"/v1/sandboxes/{held['id']}/resume").status_code == 202
            assert sh(api, held, "test -e /workspace/ready")["exit_code"] == 0
    finally:
        server.stop()
        remove_instance(home)


def test_auto_resume_wakes_a_hibernated_sandbox_for_an_exec(api: httpx.Client) -> None:
    box = gvisor_box(api, auto_resume=True)
    assert box["auto_resume"] is True
    pid = start_counter(api, box)
    assert api.post(f"/v1/sandboxes/{box['id']}/pause").json()["data"]["hibernated"]
    # The exec is answered: the sandbox is resumed for it, its processes carry on.
    assert "while true" in sh(api, box, f"tr '\\0' ' ' < /proc/{pid}/cmdline")["stdout"]
    assert api.get(f"/v1/sandboxes/{box['id']}").json()["data"]["status"] == "running"
    assert api.post(f"/v1/sandboxes/{box['id']}/pause").status_code == 202
    got = api.get(f"/v1/sandboxes/{box['id']}/files", params={"path": "/workspace/count"})
    assert got.status_code == 200 and int(got.text) > 0  # a file read wakes it too
    # Turned off, a paused sandbox refuses the exec as before.
    patched = api.patch(f"/v1/sandboxes/{box['id']}", json={"auto_resume": False})
    assert patched.json()["data"]["auto_resume"] is False
    assert api.post(f"/v1/sandboxes/{box['id']}/pause").status_code == 202
    refused = api.post(f"/v1/sandboxes/{box['id']}/exec", json={"cmd": "true"})
    assert refused.status_code == 409 and "paused" in refused.text


def test_snapshots_kept_in_s3_free_the_host_disk(
    tmp_path: Path, images: Path, s3: SeaweedS3
) -> None:
    bucket = s3.make_bucket(f"snaps-{time.monotonic_ns()}")
    env = {
        "HUTCH_SNAPSHOT_STORE": f"s3://{bucket}/hutch",
        "HUTCH_SNAPSHOT_STORE_ENDPOINT": s3.endpoint,
        "HUTCH_SNAPSHOT_STORE_ACCESS_KEY": s3.access_key,
        "HUTCH_SNAPSHOT_STORE_SECRET_KEY": s3.secret_key,
    }
    home, pool = tmp_path / "home", new_pool()
    server = runc_server(home, images, env=env, pool=pool)
    key = server.new_key("sal")

    def objects(sandbox_id: str) -> list[str]:
        listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=f"hutch/{sandbox_id}/")
        return sorted(item["Key"].rsplit("/", 1)[-1] for item in listed.get("Contents", []))

    try:
        with server.client(key) as api:
            box = gvisor_box(api)
            pid = start_counter(api, box)
            assert api.post(f"/v1/sandboxes/{box['id']}/pause").json()["data"]["hibernated"]
            assert objects(box["id"]) == ["checkpoint.img", "wake"]
            assert not (home / "snapshots" / box["id"]).exists()  # the host keeps none
            # A fork fetches it back; the child goes on from it.
            child = api.post(f"/v1/sandboxes/{box['id']}/fork", json={}).json()["data"]
            assert child["fork_mode"] == "processes"
            assert int(sh(api, child, "cat /workspace/count")["stdout"]) > 0
            assert api.post(f"/v1/sandboxes/{box['id']}/resume").status_code == 202
            assert "while true" in sh(api, box, f"tr '\\0' ' ' < /proc/{pid}/cmdline")["stdout"]
            assert objects(box["id"]) == []  # used, then removed
            # Restarted while hibernated: it stays paused, and resumes from the store.
            assert api.post(f"/v1/sandboxes/{box['id']}/pause").status_code == 202
        server.stop(signal.SIGKILL)
        server = runc_server(home, images, env=env, pool=pool)
        with server.client(key) as api:
            view = api.get(f"/v1/sandboxes/{box['id']}").json()["data"]
            assert view["status"] == "paused" and view["hibernated"], (view["reason"], view)
            assert api.post(f"/v1/sandboxes/{box['id']}/resume").status_code == 202
            assert "while true" in sh(api, box, f"tr '\\0' ' ' < /proc/{pid}/cmdline")["stdout"]
            assert api.post(f"/v1/sandboxes/{box['id']}/pause").status_code == 202
            assert objects(box["id"]) == ["checkpoint.img", "wake"]
            assert api.delete(f"/v1/sandboxes/{box['id']}").status_code == 200
            assert objects(box["id"]) == []
    finally:
        server.stop()
        remove_instance(home)
