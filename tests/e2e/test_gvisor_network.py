"""gvisor sandboxes on the network, through a real ``hutch serve``: the tests' small
internet (tests.support.internet) with hutch's DNS forwarding to it, egress rules set at
create and replaced live, the bandwidth quota, private networks (joined at create; a live
join is a 409), preview URLs through the proxy, a server killed with -9, and all of it
after a hibernate, which takes the sandbox's network off the host."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hutch.host.drivers.runc import instance_tag
from hutch.host.link import host_interface, netns_name
from hutch.host.networks import BridgeNetworks
from tests.e2e.test_nullspace_runc import serve_http, through_proxy
from tests.e2e.test_sandboxes_runc import create, runc_server, sh
from tests.e2e.test_wake_on_traffic import get, serve_app
from tests.support.internet import Internet
from tests.support.server import HutchProcess, remove_instance

QUOTA = 1 << 20


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, images: Path, internet: Internet
) -> Iterator[tuple[HutchProcess, httpx.Client]]:
    home = tmp_path_factory.mktemp("gvisor-net") / "home"
    # 10.104/16 is this module's (see own_pool in test_egress_kernel_runc.py).
    pool = f"10.104.{internet.slot * 4}.0/22"
    env = {"HUTCH_DNS_UPSTREAM": internet.resolver, "HUTCH_BANDWIDTH_QUOTA_BYTES": str(QUOTA),
           "HUTCH_DEFAULT_RUNTIME": "gvisor"}  # fmt: skip
    server = runc_server(home, images, pool=pool, env=env)
    key = server.new_key("gnet")
    try:
        with server.client(key) as api:
            yield server, api
    finally:
        server.stop()
        remove_instance(server.home)


def reaches(api: httpx.Client, box: dict[str, Any], url: str) -> bool:
    return sh(api, box, f"curl -sS -m 5 -o /dev/null {url}")["exit_code"] == 0


def _interfaces() -> set[str]:
    with open("/proc/self/net/dev") as table:
        return {line.split(":", 1)[0].strip() for line in table.readlines()[2:]}


def network_on_host(home: Path, sandbox_id: str, *networks: str) -> list[str]:
    """What the host holds of a sandbox's network: its namespace, the host end of its
    link, its ports on ``networks``' bridges."""
    tag = instance_tag(home)
    netns = netns_name(tag, sandbox_id)
    held = [netns] if (Path("/run/netns") / netns).exists() else []
    wanted = [host_interface(tag, sandbox_id)]
    wanted += [BridgeNetworks(tag=tag).port(sandbox_id, n) for n in networks]
    return held + sorted(set(wanted) & _interfaces())


def released(home: Path, sandbox_id: str, *networks: str, timeout_s: float = 30) -> list[str]:
    """Wait for a hibernated sandbox's network to leave the host (it goes once its
    Sentry has exited, in the background); what is left at the timeout."""
    deadline = time.monotonic() + timeout_s
    while (held := network_on_host(home, sandbox_id, *networks)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return held


def hibernate(api: httpx.Client, box: dict[str, Any]) -> None:
    paused = api.post(f"/v1/sandboxes/{box['id']}/pause")
    assert paused.status_code == 202 and paused.json()["data"]["hibernated"], paused.text


def resume(api: httpx.Client, box: dict[str, Any]) -> None:
    resumed = api.post(f"/v1/sandboxes/{box['id']}/resume")
    assert resumed.status_code == 202, resumed.text


def used_bytes(api: httpx.Client, box: dict[str, Any]) -> int:
    return int(api.get(f"/v1/sandboxes/{box['id']}/bandwidth").json()["data"]["used_bytes"])


def test_dns_and_egress_rules_hold_on_gvisor(
    served: tuple[HutchProcess, httpx.Client], internet: Internet
) -> None:
    _, api = served
    a, b = internet.address("example.test"), internet.address("evil.test")
    open_box = create(api)
    assert open_box["runtime"] == "gvisor"  # HUTCH_DEFAULT_RUNTIME
    resolved = sh(api, open_box, "getent hosts example.test | awk '{print $1}'")["stdout"]
    assert resolved.split() == [a]  # through hutch's DNS, forwarded to the internet's
    assert reaches(api, open_box, "http://example.test/")
    box = create(api, egress=[f"{a}:80"])
    assert reaches(api, box, f"http://{a}/")
    assert not reaches(api, box, f"http://{a}:8080/") and not reaches(api, box, f"http://{b}/")
    put = api.put(f"/v1/sandboxes/{box['id']}/egress", json={"egress": [b]})
    assert put.status_code == 200, put.text
    assert reaches(api, box, f"http://{b}:8080/") and not reaches(api, box, f"http://{a}/")


def test_the_bandwidth_quota_caps_a_gvisor_sandbox(
    served: tuple[HutchProcess, httpx.Client], internet: Internet
) -> None:
    _, api = served
    b = internet.address("evil.test")
    box = create(api)
    sh(api, box, "head -c 3000000 /dev/zero > /tmp/big")
    upload = sh(api, box, f"curl -sS -m 8 -o /dev/null --data-binary @/tmp/big http://{b}/sink")
    assert upload["exit_code"] != 0, "3 MB cannot go out on a 1 MiB quota"
    spent = api.get(f"/v1/sandboxes/{box['id']}/bandwidth").json()["data"]
    assert spent["capped"] and spent["used_bytes"] > QUOTA // 2
    recharged = api.post(f"/v1/sandboxes/{box['id']}/bandwidth/recharge",
                         json={"add_bytes": 8 * QUOTA})  # fmt: skip
    assert recharged.status_code == 200, recharged.text
    assert reaches(api, box, f"http://{b}/")


def test_private_networks_are_joined_at_create(served: tuple[HutchProcess, httpx.Client]) -> None:
    _, api = served
    net = api.post("/v1/networks", json={"name": f"gnet-{time.monotonic_ns()}"}).json()["data"]
    one = create(api, name="g-one", networks=[{"id": net["id"]}])
    two = create(api, name="g-two", networks=[{"id": net["id"]}])
    plain = create(api, runtime="runc", name="r-three", networks=[{"id": net["id"]}])
    stranger = create(api, name="g-stranger")
    sh(api, two, "setsid python3 -m http.server 8080 >/dev/null 2>&1 </dev/null &")
    peer = ""
    for _ in range(50):
        peer = sh(api, one, "getent hosts g-two | awk '{print $1}'")["stdout"].strip()
        if peer and reaches(api, one, f"http://{peer}:8080/"):
            break
        time.sleep(0.2)
    assert peer and reaches(api, one, "http://g-two:8080/")
    assert reaches(api, plain, "http://g-two:8080/")  # a runc member too
    assert sh(api, stranger, "getent hosts g-two")["exit_code"] != 0
    assert not reaches(api, stranger, f"http://{peer}:8080/")
    live = api.post(f"/v1/sandboxes/{stranger['id']}/networks", json={"id": net["id"]})
    assert live.status_code == 409 and "at create" in live.text


def test_a_hibernated_sandbox_holds_no_network_and_wakes_with_all_of_it(
    served: tuple[HutchProcess, httpx.Client], internet: Internet
) -> None:
    server, api = served
    a, b = internet.address("example.test"), internet.address("evil.test")
    net = api.post("/v1/networks", json={"name": f"gwake-{time.monotonic_ns()}"}).json()["data"]
    sleeper = create(api, name="g-sleeper", networks=[{"id": net["id"]}], egress=[f"{a}:80"])
    peer = create(api, name="g-peer", networks=[{"id": net["id"]}])
    sh(api, peer, "setsid python3 -m http.server 8080 >/dev/null 2>&1 </dev/null &")
    # Metered traffic before the pause, over UDP: a TCP connection closed in the last
    # minute would have the pause keep the sandbox in memory for that minute.
    send = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"for _ in range(40): s.sendto(b'x' * 1000, ('{a}', 80))"
    )
    assert sh(api, sleeper, f'python3 -c "{send}"')["exit_code"] == 0
    spent = used_bytes(api, sleeper)
    assert spent >= 40_000
    for box in (sleeper, peer):
        hibernate(api, box)
    # Nothing of their network is left on the host: namespace, veth, network ports.
    for box in (sleeper, peer):
        assert released(server.home, box["id"], net["id"]) == [], box["name"]
    assert used_bytes(api, sleeper) == spent  # the ledger, kept in the store meanwhile
    for box in (sleeper, peer):
        resume(api, box)
    assert network_on_host(server.home, sleeper["id"], net["id"]) != []
    # The same private network and names: the peer's restored server, by its name.
    assert reaches(api, sleeper, "http://g-peer:8080/")
    # The same egress policy, and the ledger goes on from where it was.
    assert reaches(api, sleeper, f"http://{a}/")
    assert not reaches(api, sleeper, f"http://{b}/")
    assert used_bytes(api, sleeper) > spent
    # DNS forwarded to the internet, for a sandbox with open egress.
    resolved = sh(api, peer, "getent hosts example.test | awk '{print $1}'")["stdout"]
    assert resolved.split() == [a] and reaches(api, peer, "http://example.test/")


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    process = runc_server(
        tmp_path_factory.mktemp("gvisor-proxy") / "home",
        images,
        env={"HUTCH_PROXY_ENABLED": "true", "HUTCH_PROXY_PORT": "0",
             "HUTCH_DEFAULT_RUNTIME": "gvisor"},
    )  # fmt: skip
    yield process
    process.stop()
    remove_instance(process.home)


def test_a_preview_url_serves_a_gvisor_sandbox(proxied: HutchProcess) -> None:
    assert proxied.admin_key
    headers = {"Authorization": f"Bearer {proxied.admin_key}"}
    with httpx.Client(base_url=f"{proxied.url}/nullspace", headers=headers, timeout=60) as api:
        box = api.post("/v1/sandboxes", json={"template": "base"}).json()
        serve_http(api, box, "hello from gVisor")
        preview = api.post(f"/v1/sandboxes/{box['id']}/host", json={"port": 8080}).json()
        page = through_proxy(preview, "/index.html")
        assert page.status_code == 200 and page.text == "hello from gVisor"
        view = httpx.get(f"{proxied.url}/v1/sandboxes/{box['id']}",
                         headers={"X-Api-Key": proxied.admin_key}).json()["data"]  # fmt: skip
        runtime = view["runtime"]
        assert runtime == "gvisor"
        api.delete(f"/v1/sandboxes/{box['id']}")
        assert through_proxy(preview).status_code == 404


def test_ingress_serves_a_gvisor_sandbox_again_after_its_hibernate(
    proxied: HutchProcess,
) -> None:
    """Its ingress URL is routed again once it runs (the wake on a request to it, with
    ``auto_resume``, is tests/e2e/test_wake_on_traffic.py's, on gvisor too)."""
    assert proxied.admin_key
    with proxied.client(proxied.admin_key) as api:
        box = create(api, ingress_enabled=True)
        serve_app(api, box, "awake again")
        ingress = box["ingress_url_template"].replace("<port>", "8080")
        hibernate(api, box)  # (before any request: no connection in TIME_WAIT)
        assert released(proxied.home, box["id"]) == []
        resume(api, box)
        page = get(ingress)
        assert page.status_code == 200 and page.text == "awake again", page.text
        api.delete(f"/v1/sandboxes/{box['id']}")


def test_kill_9_of_the_server_keeps_gvisor_sandboxes(
    tmp_path: Path, images: Path, internet: Internet
) -> None:
    home, pool = tmp_path / "home", f"10.105.{internet.slot * 4}.0/22"
    first = runc_server(home, images, pool=pool, env={"HUTCH_DEFAULT_RUNTIME": "gvisor"})
    key = first.new_key("gail")
    with first.client(key) as api:
        survivor = create(api, name="g-survivor")
        sh(api, survivor, "echo kept > /root/note")
        victim = create(api, name="g-victim")
        sleeper = create(api, name="g-sleeper")
        assert api.post(f"/v1/sandboxes/{sleeper['id']}/pause").json()["data"]["hibernated"]
    first.stop(signal.SIGKILL)
    victim_pid = int((home / "sandboxes" / victim["id"] / "init.pid").read_text())
    os.kill(victim_pid, signal.SIGKILL)  # its Sentry: the whole sandbox dies
    time.sleep(0.5)
    second = runc_server(home, images, pool=pool, env={"HUTCH_DEFAULT_RUNTIME": "gvisor"})
    try:
        with second.client(key) as api:
            assert sh(api, survivor, "cat /root/note")["stdout"] == "kept\n"
            dead = api.get(f"/v1/sandboxes/{victim['id']}").json()["data"]
            assert dead["status"] == "error" and dead["reason"]
            assert api.post(f"/v1/sandboxes/{victim['id']}/resume").status_code == 202
            assert sh(api, victim, "hostname")["stdout"] == "g-victim\n"
            view = api.get(f"/v1/sandboxes/{sleeper['id']}").json()["data"]
            assert view["status"] == "paused" and view["hibernated"]
            assert network_on_host(home, sleeper["id"]) == []  # gone, or went at the start
            assert api.post(f"/v1/sandboxes/{sleeper['id']}/resume").status_code == 202
            assert sh(api, sleeper, "echo awake")["stdout"] == "awake\n"
            assert reaches(api, sleeper, f"http://{internet.address('example.test')}/")
            for box in (survivor, victim, sleeper):
                assert api.delete(f"/v1/sandboxes/{box['id']}").status_code == 200
    finally:
        second.stop()
        remove_instance(home)
