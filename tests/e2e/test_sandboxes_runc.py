"""Real sandboxes (runc, overlayfs, cgroups, netns, nftables) through a real ``hutch serve``.

Every isolation claim is a test that tries from inside and fails. Traffic goes only to
loopback and to addresses of links hutch itself made.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import httpx
import pytest

from hutch.host.drivers.runc import RuncDriver, instance_tag
from tests.support.server import HutchProcess, remove_instance

# Test sessions run side by side on one machine (several checkouts at once): each starts
# at its own place in the 64 pools, and skips a pool that a link of the host is in (a server
# refuses a link pool another instance's links use: tests/e2e/test_host_ownership_runc.py).
_pools = itertools.count(os.getpid() % 64)


def _part_octet() -> int:
    """The second octet of this session's link pools: 10.91, or 10.112 in ``make test``'s
    second part (tests/support/run_suite.py), whose runc servers run beside the first's."""
    return 112 if os.environ.get("HUTCH_TEST_PART") == "rest" else 91


def new_pool() -> str:
    """A /22 of 10.91.0.0/16 (10.112 in the suite's second part) that no address or route
    of the host is in right now."""
    octet = _part_octet()
    shown = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                           check=False).stdout  # fmt: skip
    shown += subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True,
                            check=False).stdout  # fmt: skip
    used = [IPv4Address(a) for a in re.findall(rf"\b(10\.{octet}\.\d+\.\d+)\b", shown)]
    for _ in range(64):
        pool = IPv4Network(f"10.{octet}.{(next(_pools) % 64) * 4}.0/22")
        if not any(address in pool for address in used):
            return str(pool)
    return str(pool)  # all in use: the server will say which clash


def runc_server(
    home: Path, images: Path, *, pool: str | None = None, env: dict[str, str] | None = None
) -> HutchProcess:
    """A ``hutch serve`` with real sandboxes, a link pool of its own, and ``env`` besides."""
    return HutchProcess(
        home,
        env={
            "HUTCH_DRIVER": "runc",
            "HUTCH_IMAGES_DIR": str(images),
            "HUTCH_LINK_POOL": pool or new_pool(),
            # The suite's second part keeps its private networks' bridges off the first's.
            **({"HUTCH_NETWORK_POOL": "10.113.0.0/16"} if _part_octet() == 112 else {}),
            **(env or {}),
        },
    ).wait_ready()


@contextlib.contextmanager
def served_by(
    home: Path, images: Path, *, user: str, env: dict[str, str]
) -> Iterator[tuple[HutchProcess, httpx.Client]]:
    """A runc server and a client with a new user's key; torn down with all it made."""
    server = runc_server(home, images, env=env)
    key = server.new_key(user)
    try:
        with server.client(key) as api:
            yield server, api
    finally:
        server.stop()
        remove_instance(server.home)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    process = runc_server(tmp_path_factory.mktemp("runc") / "home", images)
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture
def api(server: HutchProcess) -> Iterator[httpx.Client]:
    key = server.new_key(f"u{time.monotonic_ns()}")
    with server.client(key) as client:
        yield client


def create(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb", **body})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def sh(api: httpx.Client, sandbox: dict[str, Any], script: str, **extra: Any) -> dict[str, Any]:
    response = api.post(f"/v1/sandboxes/{sandbox['id']}/exec", json={"cmd": script, **extra})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["data"]["result"]
    return result


def leftovers(home: Path) -> dict[str, list[str]]:
    driver = RuncDriver(home, images=home)
    return asyncio.run(driver.leftovers())


# -- lifecycle ----------------------------------------------------------------------------


def test_a_sandbox_is_a_machine_of_its_own(api: httpx.Client, server: HutchProcess) -> None:
    box = create(api, name="brave-otter", envs={"STAGE": "test"})
    assert box["status"] == "running" and box["spawn_ms"] > 0
    result = sh(api, box, "hostname; echo $STAGE; ip -4 -o addr show eth0 | awk '{print $4}'")
    assert result["stdout"].split() == ["brave-otter", "test", f"{box['ip']}/30"]
    os_release = sh(api, box, ". /etc/os-release; echo $VERSION_CODENAME")["stdout"]
    assert os_release == "bookworm\n"
    renamed = api.patch(f"/v1/sandboxes/{box['id']}", json={"name": "calm-heron"})
    assert renamed.status_code == 200 and renamed.json()["data"]["name"] == "calm-heron"
    result = sh(api, box, "hostname; grep -c calm-heron /etc/hosts; cat /etc/hostname")
    assert result["stdout"].split() == ["calm-heron", "1", "calm-heron"]
    for tool in ("bash --version", "python3 -m venv --help", "git --version", "curl --version",
                 "ps --version", "ip -V", "pip --version"):  # fmt: skip
        assert sh(api, box, tool)["exit_code"] == 0, tool
    assert api.delete(f"/v1/sandboxes/{box['id']}").json()["data"]["status"] == "destroyed"
    assert all(not found for found in leftovers(server.home).values())


def test_the_node_image(api: httpx.Client) -> None:
    box = create(api, rootfs="node")
    assert sh(api, box, "node -e 'console.log(6*7)'")["stdout"] == "42\n"
    assert sh(api, box, "npm --version")["exit_code"] == 0


def test_a_100_mb_file_round_trips_exactly(api: httpx.Client) -> None:
    box = create(api)
    chunk = os.urandom(1024 * 1024)
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for i in range(100):
            piece = chunk[i:] + chunk[:i]
            digest.update(piece)
            yield piece

    put = api.put(f"/v1/sandboxes/{box['id']}/files", params={"path": "/data/big.bin"},
                  content=body(), timeout=300)  # fmt: skip
    assert put.json()["data"]["bytes"] == 100 * 1024 * 1024
    assert sh(api, box, "sha256sum /data/big.bin | cut -d' ' -f1")["stdout"].strip() == (
        digest.hexdigest()
    )
    back = hashlib.sha256()
    size = 0
    with api.stream("GET", f"/v1/sandboxes/{box['id']}/files",
                    params={"path": "/data/big.bin"}, timeout=300) as response:  # fmt: skip
        assert response.headers["content-length"] == str(100 * 1024 * 1024)
        for part in response.iter_bytes():
            back.update(part)
            size += len(part)
    assert (size, back.hexdigest()) == (100 * 1024 * 1024, digest.hexdigest())


def test_pause_freezes_every_process(api: httpx.Client, server: HutchProcess) -> None:
    box = create(api)
    sh(api, box, "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count; "
                 "sleep 0.05; done' >/dev/null 2>&1 &")  # fmt: skip
    counter = server.home / "sandboxes" / box["id"] / "layer" / "upper" / "tmp" / "count"

    def count() -> int:
        for _ in range(50):
            text = counter.read_text().strip() if counter.exists() else ""
            if text:
                return int(text)
            time.sleep(0.05)
        raise AssertionError("the counter never wrote")

    assert api.post(f"/v1/sandboxes/{box['id']}/pause").json()["data"]["status"] == "paused"
    tag = instance_tag(server.home)
    freezer = Path(f"/sys/fs/cgroup/freezer/hutch-{tag}/{box['id']}/freezer.state")
    if freezer.exists():
        assert freezer.read_text().strip() == "FROZEN"
    frozen_at = count()
    time.sleep(1)
    assert count() == frozen_at
    assert api.post(f"/v1/sandboxes/{box['id']}/resume").json()["data"]["status"] == "running"
    deadline = time.monotonic() + 10
    while count() == frozen_at and time.monotonic() < deadline:
        time.sleep(0.1)
    assert count() > frozen_at


# -- limits -------------------------------------------------------------------------------


def test_a_memory_hog_is_killed_inside_and_the_sandbox_lives_on(api: httpx.Client) -> None:
    box = create(api)
    hog = sh(api, box, "python3 -c 'b = bytearray(700 * 1024 * 1024); print(len(b))'")
    assert hog["exit_code"] != 0 and hog["stdout"] == ""
    assert sh(api, box, "echo survived")["stdout"] == "survived\n"
    limit = sh(api, box, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || "
                         "cat /sys/fs/cgroup/memory.max")["stdout"]  # fmt: skip
    assert int(limit) == 256 * 1024 * 1024


def test_a_fork_bomb_is_contained(api: httpx.Client) -> None:
    box = create(api, shape="s-1vcpu-1gb")
    # Once the bomb has every pid, only shell builtins can run: read, echo, kill.
    bomb = sh(
        api,
        box,
        "sh -c 'while :; do sleep 30 </dev/null >/dev/null 2>&1 & done' 2>/dev/null; "
        "read current < /sys/fs/cgroup/pids/pids.current; "
        "read most < /sys/fs/cgroup/pids/pids.max; echo $current $most; kill -9 -1",
        timeout_secs=60,
    )
    current, most = bomb["stdout"].split()
    assert most == "1024" and 1000 <= int(current) <= 1024, bomb
    assert sh(api, box, "echo fine")["stdout"] == "fine\n"


def test_writing_past_disk_mib_is_enospc_inside(api: httpx.Client) -> None:
    box = create(api, disk_mib=300)
    before = os.statvfs("/")
    result = sh(api, box, "dd if=/dev/zero of=/fill bs=1M count=1000 2>&1; echo rc=$?")
    assert "No space left on device" in result["stdout"] and "rc=1" in result["stdout"]
    after = os.statvfs("/")
    assert (before.f_bavail - after.f_bavail) * before.f_frsize < 400 * 1024 * 1024
    assert sh(api, box, "rm /fill; echo ok > /after; cat /after")["stdout"] == "ok\n"


def test_cpu_quota_follows_the_shape(api: httpx.Client) -> None:
    one = create(api)
    two = create(api, shape="s-2vcpu-2gb")
    script = ("cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || "
              "cut -d' ' -f1 /sys/fs/cgroup/cpu.max")  # fmt: skip
    assert int(sh(api, one, script)["stdout"]) == 100_000
    assert int(sh(api, two, script)["stdout"]) == 200_000


# -- isolation ----------------------------------------------------------------------------
# Every isolation test runs on both runtimes: runc, and gvisor (gVisor's kernel in user space).


@pytest.fixture(params=["runc", "gvisor"])
def runtime(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


def test_no_host_processes_are_visible(
    api: httpx.Client, server: HutchProcess, runtime: str
) -> None:
    box = create(api, runtime=runtime)
    pids = sh(api, box, "ls /proc | grep -E '^[0-9]+$'")["stdout"].split()
    assert "1" in pids and len(pids) < 10
    cmdlines = sh(api, box, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")["stdout"]
    assert "hutch" not in cmdlines.replace("/.hutch", "")  # the agent is from /.hutch/guest
    assert str(server.proc.pid) not in pids or "serve" not in cmdlines


def test_capabilities_are_the_default_container_set(api: httpx.Client, runtime: str) -> None:
    box = create(api, runtime=runtime)
    effective = sh(api, box, "grep CapEff /proc/self/status | cut -f2")["stdout"].strip()
    # gVisor also drops CAP_NET_RAW (its raw sockets are off), the one difference.
    assert effective == ("00000000a80425fb" if runtime == "runc" else "00000000a80405fb")
    # prctl(PR_GET_NO_NEW_PRIVS): gVisor's /proc/self/status has no NoNewPrivs line.
    no_new_privs = "import ctypes; print(ctypes.CDLL(None).prctl(39, 0, 0, 0, 0))"
    assert sh(api, box, f'python3 -c "{no_new_privs}"')["stdout"] == "1\n"


_OPEN_FDS = """python3 -c 'import os
for fd in sorted(os.listdir("/proc/self/fd"), key=int):
    try:
        print(fd, os.readlink("/proc/self/fd/" + fd))
    except OSError:
        pass  # the descriptor listdir used, closed by now'
"""


def test_a_command_holds_no_descriptor_of_the_agent(api: httpx.Client, runtime: str) -> None:
    """An exec's command has its stdin, stdout and stderr and nothing else of the guest
    agent's: above all not its listening socket, with which a command could answer the
    host in the agent's place (runc passes it in inheritable)."""
    box = create(api, runtime=runtime)
    held = dict(line.split(" ", 1) for line in sh(api, box, _OPEN_FDS)["stdout"].splitlines())
    assert sorted(held) == ["0", "1", "2"], held
    assert held["0"] == "/dev/null"
    assert not any(target.startswith("socket:") for target in held.values()), held


@pytest.mark.parametrize(
    "attempt",
    [
        "mount -t tmpfs none /mnt",
        "python3 -c 'import ctypes,os; l=ctypes.CDLL(None,use_errno=True); "
        'r=l.syscall(313,0,b"",0); os._exit(0 if r==0 else 1)\'',  # finit_module
        "date -s '2001-01-01 00:00:00'",
        "hostname evil-host",
        "echo 1 > /proc/sys/kernel/sysrq",
        "echo b > /proc/sysrq-trigger",
        "echo 1 > /sys/kernel/mm/ksm/run",
        "mknod /tmp/vda b 253 0 && head -c 1 /tmp/vda",
        "unshare --user --map-root-user true",
        "python3 -c 'import socket; socket.sethostname(\"x\")'",
        "head -c 1 /proc/kcore | grep -q .",
    ],
)
def test_escapes_fail(api: httpx.Client, attempt: str, runtime: str) -> None:
    box = create(api, runtime=runtime)
    result = sh(api, box, attempt, timeout_secs=30)
    assert result["exit_code"] != 0, attempt
    assert sh(api, box, "hostname")["stdout"].strip() == box["name"]
    assert socket.gethostname() != "evil-host"


def test_the_sandbox_has_no_route_but_its_link(api: httpx.Client, runtime: str) -> None:
    box = create(api, runtime=runtime)
    host_end = ".".join([*box["ip"].split(".")[:3], str(int(box["ip"].split(".")[3]) - 1)])
    routes = sh(api, box, "ip -4 route")["stdout"].strip().splitlines()
    # gVisor lists its loopback route too, and says "proto unspec scope link".
    routes = [r for r in routes if not r.startswith("127.0.0.0/8 dev lo")]
    defaults = [r for r in routes if r.startswith("default")]
    # Its way out (egress, issue 14) is the host end of its own link, and nothing else.
    assert len(defaults) == 1 and defaults[0].split()[:5] == ["default", "via", host_end,
                                                               "dev", "eth0"]  # fmt: skip
    others = [r for r in routes if not r.startswith("default")]
    assert len(others) == 1 and others[0].startswith(box["ip"].rsplit(".", 1)[0])
    assert "default" not in sh(api, box, "ip -6 route")["stdout"]


def test_host_services_are_unreachable(
    api: httpx.Client, server: HutchProcess, runtime: str
) -> None:
    box = create(api, runtime=runtime)
    host_end = sh(api, box, "ip -4 -o addr show eth0 | awk '{print $4}'")["stdout"]
    link_host_ip = ".".join([*box["ip"].split(".")[:3], str(int(box["ip"].split(".")[3]) - 1)])
    assert host_end.strip() == f"{box['ip']}/30"

    # A service bound to every host address, as many careless services are.
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 0))
    listener.listen()
    port = listener.getsockname()[1]
    accepted: list[Any] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    try:
        probe = sh(api, box, f"curl -sS -m 3 http://{link_host_ip}:{port}/ ; echo rc=$?")
        assert "rc=0" not in probe["stdout"]
        api_port = server.url.rsplit(":", 1)[1]
        for target in (f"127.0.0.1:{api_port}", f"{link_host_ip}:{api_port}"):
            result = sh(api, box, f"curl -sS -m 3 http://{target}/healthz; echo rc=$?")
            assert "rc=0" not in result["stdout"], target
        ping = sh(api, box, f"ping -c 1 -W 2 {link_host_ip}")
        assert ping["exit_code"] != 0
        assert accepted == []
        # The host itself can still reach the sandbox (that is how previews will work).
        with socket.create_connection((link_host_ip, port), timeout=3):
            pass
    finally:
        listener.close()


def test_sandboxes_cannot_reach_each_other(api: httpx.Client, runtime: str) -> None:
    one, two = create(api, runtime=runtime), create(api, runtime=runtime)
    up = "curl -so /dev/null http://127.0.0.1:8080/"
    listening = f"for i in $(seq 100); do {up} && break; sleep 0.1; done"
    sh(api, two, f"nohup python3 -m http.server 8080 >/dev/null 2>&1 & {listening}")
    assert (
        "rc=0"
        in sh(api, two, "curl -sS -m 3 -o /dev/null http://127.0.0.1:8080/; echo rc=$?")["stdout"]
    )
    probe = sh(api, one, f"curl -sS -m 3 -o /dev/null http://{two['ip']}:8080/; echo rc=$?")
    assert "rc=0" not in probe["stdout"]
    assert sh(api, one, f"ping -c 1 -W 2 {two['ip']}")["exit_code"] != 0


# -- recovery and leaks -------------------------------------------------------------------


def test_kill_9_and_restart_keeps_sandboxes_and_marks_dead_ones(
    tmp_path: Path, images: Path
) -> None:
    home = tmp_path / "home"
    pool = new_pool()
    first = runc_server(home, images, pool=pool)
    key = first.new_key("carol")
    with first.client(key) as api:
        survivor = create(api, name="survivor")
        sh(api, survivor, "echo kept > /root/note")
        victim = create(api, name="victim")
        paused = create(api, name="sleeper")
        api.post(f"/v1/sandboxes/{paused['id']}/pause")
    first.stop(signal.SIGKILL)

    init_pid = int((home / "sandboxes" / victim["id"] / "init.pid").read_text())
    os.kill(init_pid, signal.SIGKILL)
    time.sleep(0.5)

    second = runc_server(home, images, pool=pool)
    try:
        with second.client(key) as api:
            assert sh(api, survivor, "cat /root/note")["stdout"] == "kept\n"
            dead = api.get(f"/v1/sandboxes/{victim['id']}").json()["data"]
            assert dead["status"] == "error" and dead["reason"]
            # Kept through the restart with its disk: resume starts it again from there.
            assert api.post(f"/v1/sandboxes/{victim['id']}/resume").status_code == 202
            assert sh(api, victim, "hostname")["stdout"] == "victim\n"
            assert api.get(f"/v1/sandboxes/{paused['id']}").json()["data"]["status"] == "paused"
            assert api.post(f"/v1/sandboxes/{paused['id']}/resume").status_code == 202
            assert sh(api, paused, "echo awake")["stdout"] == "awake\n"
            fresh = create(api)
            assert fresh["ip"] not in (survivor["ip"], paused["ip"], victim["ip"])
            for box in (survivor, victim, paused, fresh):
                assert api.delete(f"/v1/sandboxes/{box['id']}").status_code == 200
        assert all(not found for found in leftovers(home).values())
    finally:
        second.stop()
        remove_instance(home)


def test_many_create_delete_cycles_leave_nothing(api: httpx.Client, server: HutchProcess) -> None:
    created = []
    for _ in range(15):
        box = create(api)
        created.append(box["id"])
        assert sh(api, box, "echo $((6*7))")["stdout"] == "42\n"
        assert api.delete(f"/v1/sandboxes/{box['id']}").status_code == 200
    found = leftovers(server.home)
    # Other tests' sandboxes in this module may still run; none of these may linger.
    lingering = [item for items in found.values() for item in items
                 if any(sandbox_id in item for sandbox_id in created)]  # fmt: skip
    assert lingering == []
    assert api.get("/v1/sandboxes").json()["data"]["data"] == []
