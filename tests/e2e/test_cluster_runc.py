"""A cluster on one machine (issue 19): three hosts as network namespaces, each running
``hutch agent`` with real runc sandboxes, joined to ``hutch control`` on PostgreSQL.
One cluster serves the whole module (each start costs three agents)."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LocalChains
from tests.e2e.test_deploys_runc import MONTH, PAY_TO, files, finished, paid_deploy
from tests.e2e.test_faults_runc import Traffic
from tests.e2e.test_networks_runc import http_code, member_ip, resolves, serve_http
from tests.e2e.test_nullspace_runc import WS_ECHO
from tests.e2e.test_sandboxes_runc import sh
from tests.e2e.test_wake_on_traffic import pause, serve_app
from tests.support.cluster import AgentHost, Cluster
from tests.support.postgres import PG_BIN, PostgresServer, free_port
from tests.support.server import _env
from tests.support.wallet import Wallet

SHAPE = "s-1vcpu-256mb"

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="network namespaces")


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, images: Path, chains: LocalChains
) -> Iterator[Cluster]:
    # Each host offers 1 GiB: four 256 MiB sandboxes fill one. Each serves previews on
    # its own proxy, and the URLs name the control plane's port: the public entry.
    # Deploys are paid on the local chains, which agents reach through relays.
    entry = free_port()
    public = {"HUTCH_PUBLIC_PROXY_PORT": str(entry), "HUTCH_PAY_TO": PAY_TO,
              **{f"HUTCH_{k.upper()}": v for k, v in chains.env().items()}}  # fmt: skip
    offer = {"HUTCH_HOST_CAPACITY_MIB": "1024", "HUTCH_PROXY_ENABLED": "true",
             "HUTCH_PROXY_HOST": "0.0.0.0", "HUTCH_DEPLOY_HEALTH_TIMEOUT_S": "30",
             **public}  # fmt: skip
    started = Cluster(
        tmp_path_factory.mktemp("cluster"),
        images,
        {"h1": {"HUTCH_HOST_LABELS": "zone=a", **offer},
         "h2": {"HUTCH_HOST_LABELS": "zone=b,disk=ssd", **offer},
         "h3": {"HUTCH_HOST_LABELS": "zone=a", **offer}},
        control_env=public, control_port=entry,
        relayed={"HUTCH_CHAIN_ARBITRUM_RPC_URL": chains.arbitrum.port,
                 "HUTCH_CHAIN_BASE_RPC_URL": chains.base.port},
    )  # fmt: skip
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def api(cluster: Cluster) -> Iterator[httpx.Client]:
    with cluster.client() as client:
        yield client


def create(api: httpx.Client, **body: Any) -> httpx.Response:
    return api.post("/v1/sandboxes", json={"shape": SHAPE, **body})


def counts(cluster: Cluster) -> dict[str, int]:
    return {name: host["vm_count"] for name, host in cluster.hosts_view().items()}


def destroy_all(api: httpx.Client) -> None:
    for box in api.get("/v1/sandboxes", params={"limit": 500}).json()["data"]["data"]:
        if box["status"] not in ("destroyed", "failed"):
            assert api.delete(f"/v1/sandboxes/{box['id']}").status_code == 200


def wait_status(api: httpx.Client, sandbox_id: str, status: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        seen = api.get(f"/v1/sandboxes/{sandbox_id}").json()["data"]
        if seen["status"] == status:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"{sandbox_id} not {status}: {seen}")


def test_hosts_join_and_show_their_labels_memory_and_address(cluster: Cluster) -> None:
    hosts = cluster.hosts_view()
    assert set(hosts) == {"h1", "h2", "h3"}
    assert hosts["h2"]["labels"] == {"zone": "b", "disk": "ssd"}
    assert all(h["status"] == "active" and h["free_mib"] > 0 for h in hosts.values())
    assert "devbox:1" in hosts["h1"]["rootfses"] and "runc" in hosts["h1"]["runtimes"]
    listed = cluster.cli("hosts", "ls").stdout
    for host in cluster.hosts.values():
        assert f"{host.name}  active" in listed and host.url in listed


def test_an_agent_answers_only_its_control_plane(cluster: Cluster) -> None:
    """The agent's TCP port refuses anyone without its host token; a join token that is
    not the cluster's is refused with the reason."""
    agent = cluster.hosts["h1"]
    answer = subprocess.run(
        ["nsenter", f"--net=/run/netns/{agent.netns}", "curl", "-s", "-o", "/dev/null",
         "-w", "%{http_code}", f"{agent.url}/v1/shapes"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert answer.stdout == "401"
    stranger = subprocess.run(
        [sys.executable, "-m", "hutch", "agent", "--control", cluster.url, "--token",
         "hjt_not-one-of-ours", "--listen", "127.0.0.1:0"],
        env=_env(cluster.root / "stranger", None), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert stranger.returncode != 0
    assert "unknown or revoked join token" in stranger.stdout + stranger.stderr


def test_creates_spread_and_follow_selectors_pins_and_capacity(
    cluster: Cluster, api: httpx.Client
) -> None:
    try:
        for _ in range(6):  # least loaded of all three each time: two each
            assert create(api).status_code == 201
        assert counts(cluster) == {"h1": 2, "h2": 2, "h3": 2}

        assert create(api, node_selector={"disk": "ssd"}).status_code == 201
        assert counts(cluster)["h2"] == 3
        wrong = create(api, node_selector={"zone": "c"})
        assert wrong.status_code == 503, wrong.text
        assert "no active host has labels zone=c" in wrong.json()["message"]
        # A runtime hutch does not have is the client's mistake (a 400, as on one machine),
        # not a host missing (a 503 a client would retry).
        for runtime in ("kata", 5):
            bad = create(api, runtime=runtime)
            assert bad.status_code == 400 and "runtime" in bad.json()["data"], bad.text

        for _ in range(2):  # back to back: the last create's hold is gone when it answers
            pinned = create(api, host_id="h3")
            assert pinned.status_code == 201, pinned.text
        assert counts(cluster)["h3"] == 4
        full = create(api, host_id="h3")  # h3 offers 1024 MiB: four are all it takes
        assert full.status_code == 503 and "no host has 256 MiB free" in full.json()["message"]
        assert counts(cluster) == {"h1": 2, "h2": 3, "h3": 4}
    finally:
        destroy_all(api)
    assert counts(cluster) == {"h1": 0, "h2": 0, "h3": 0}


def test_exec_files_and_streams_reach_a_sandbox_on_each_host(
    cluster: Cluster, api: httpx.Client
) -> None:
    try:
        for name in ("h1", "h2", "h3"):
            made = create(api, host_id=name, name=f"box-{name}", envs={"HOST": name})
            assert made.status_code == 201, made.text
            box = made.json()["data"]
            ran = api.post(f"/v1/sandboxes/box-{name}/exec", json={"cmd": "echo $HOST; hostname"})
            assert ran.status_code == 200, ran.text
            assert ran.json()["data"]["result"]["stdout"].split() == [name, f"box-{name}"]
            payload = bytes(range(256)) * 4096  # 1 MiB, through the control plane both ways
            put = api.put(f"/v1/sandboxes/{box['id']}/files", params={"path": "/tmp/blob"},
                          content=payload)  # fmt: skip
            assert put.status_code in (200, 201, 204), put.text
            got = api.get(f"/v1/sandboxes/{box['id']}/files", params={"path": "/tmp/blob"})
            assert got.content == payload
            streamed = api.post(f"/v1/sandboxes/{box['id']}/exec", params={"stream": "true"},
                                json={"cmd": "for i in 1 2 3; do echo $i; done"})  # fmt: skip
            assert streamed.status_code == 200
            frames = [json.loads(line) for line in streamed.text.splitlines() if line]
            assert "".join(f.get("stdout", "") for f in frames) == "1\n2\n3\n"
            assert frames[-1] == {"exit_code": 0}
            assert api.get(f"/v1/sandboxes/{box['id']}").json()["data"]["status"] == "running"
    finally:
        destroy_all(api)


def test_drained_hosts_get_no_new_sandboxes(cluster: Cluster, api: httpx.Client) -> None:
    cluster.cli("hosts", "drain", "h2")
    try:
        cluster.wait_hosts({"h2"}, status="draining")
        for _ in range(3):
            assert create(api).status_code == 201
        assert counts(cluster)["h2"] == 0
        pinned = create(api, host_id="h2")
        assert pinned.status_code == 503 and "not an active host" in pinned.json()["message"]
    finally:
        cluster.cli("hosts", "undrain", "h2")
        destroy_all(api)


def test_a_killed_agent_shows_its_sandboxes_error_and_they_come_back(
    cluster: Cluster, api: httpx.Client
) -> None:
    host = cluster.hosts["h1"]
    box = create(api, host_id="h1", name="survivor").json()["data"]
    api.post(f"/v1/sandboxes/{box['id']}/exec", json={"cmd": "echo kept > /tmp/mark"})
    try:
        host.kill()
        cluster.wait_hosts({"h1"}, status="dead", timeout=60)
        lost = wait_status(api, box["id"], "error")
        assert "its host h1 stopped answering" in lost["reason"]
        host.start(cluster.url, cluster.token)
        cluster.wait_hosts({"h1"}, status="active")
        back = wait_status(api, box["id"], "running")
        assert back["reason"] in (None, "")
        ran = api.post(f"/v1/sandboxes/{box['id']}/exec", json={"cmd": "cat /tmp/mark"})
        assert ran.json()["data"]["result"]["stdout"] == "kept\n"  # the same sandbox, not a new one
    finally:
        if host.proc is None or host.proc.poll() is not None:
            host.start(cluster.url, cluster.token)
            cluster.wait_hosts({"h1"}, status="active")
        destroy_all(api)


def test_a_sandbox_of_a_removed_host_can_be_deleted(cluster: Cluster, api: httpx.Client) -> None:
    """The host is gone for good (killed, then hutch hosts rm --force): its sandbox is in
    error with the reason, and its owner's DELETE takes it away (not a 503 forever)."""
    host = cluster.hosts["h1"]
    box = create(api, host_id="h1").json()["data"]
    try:
        host.kill()
        cluster.wait_hosts({"h1"}, status="dead", timeout=60)
        cluster.cli("hosts", "rm", "h1", "--force")
        wait_status(api, box["id"], "error")
        deleted = api.delete(f"/v1/sandboxes/{box['id']}")
        assert deleted.status_code == 200, deleted.text
        assert wait_status(api, box["id"], "destroyed")["destroyed_at"]
    finally:
        if host.proc is None or host.proc.poll() is not None:
            host.start(cluster.url, cluster.token)
            cluster.wait_hosts({"h1"}, status="active")
        destroy_all(api)


INJECTOR = """
import socket, struct
def checksum(data):
    total = sum(struct.unpack("!10H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
payload = b"forged"
udp = struct.pack("!HHHH", 40000, 9999, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                 socket.inet_aton("{src}"), socket.inet_aton("{dst}"))
ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
frame = bytes.fromhex("{mac}".replace(":", "")) + bytes.fromhex("02aabbccddee") + b"\\x08\\x00"
header = struct.pack("!II", 0x08000000, {vni} << 8)
for _ in range(5):
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(header + frame + ip + udp,
                                                             ("{target}", 4789))
"""


def _member_mac(ip: str) -> str:
    return "02:42:" + ":".join(f"{int(part):02x}" for part in ip.split("."))


def vxlan_devices(host: AgentHost) -> list[str]:
    shown = subprocess.run(
        ["nsenter", f"--net=/run/netns/{host.netns}", "ip", "-o", "link", "show", "type",
         "vxlan"], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line.split(":")[1].strip().split("@")[0] for line in shown.splitlines() if line]


def stored(cluster: Cluster, query: str) -> str:
    """One value from the cluster's store (``psql``)."""
    done = subprocess.run(
        [str(PG_BIN / "psql"), "-h", str(cluster.postgres.root), "-p", str(cluster.postgres.port),
         "-U", PostgresServer.user, "-d", "cluster", "-tAc", query],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return done.stdout.strip()


def stored_vni(cluster: Cluster, network_id: str) -> int:
    """The network's VXLAN id, as the store handed it out."""
    return int(stored(cluster, f"SELECT vni FROM networks WHERE id = '{network_id}'"))


def vxlan_ids(host: AgentHost) -> set[int]:
    """The VXLAN ids of the devices on ``host``."""
    shown = subprocess.run(
        ["nsenter", f"--net=/run/netns/{host.netns}", "ip", "-d", "-o", "link", "show", "type",
         "vxlan"], capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return {int(shown[i + 1]) for i, word in enumerate(shown[:-1]) if word == "id"}


def eventually(check: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.3)
    return check()


def test_a_network_spans_hosts_with_names_and_stays_isolated(
    cluster: Cluster, api: httpx.Client
) -> None:
    """Members of one network on all three hosts reach each other by name (DNS, TCP, UDP);
    a member of another network spanning the same hosts reaches none of them; when the
    members go, no VXLAN port is left on any host."""
    try:
        for network in ("mesh", "other"):
            assert api.post("/v1/networks", json={"name": network}).status_code == 200
        mesh = {}
        for name in ("h1", "h2", "h3"):
            made = create(api, host_id=name, name=f"m-{name}", networks=[{"id": "mesh"}])
            assert made.status_code == 201, made.text
            mesh[name] = made.json()["data"]
        outsiders = [create(api, host_id=name, name=f"o-{name}", networks=[{"id": "other"}])
                     .json()["data"] for name in ("h1", "h3")]  # fmt: skip
        for box in mesh.values():
            serve_http(api, box)
        m3_ip = member_ip(api, "mesh", mesh["h3"])
        assert resolves(api, mesh["h1"], "m-h3") == m3_ip
        # Members' interfaces leave room for the VXLAN header on the hosts' 1500-byte
        # links, so full frames cross hosts whole (not as two IP fragments each).
        assert sh(api, mesh["h1"], "cat /sys/class/net/eth1/mtu")["stdout"] == "1450\n"
        # The segment between the hosts is made within a second of the members joining.
        assert eventually(lambda: http_code(api, mesh["h1"], "m-h3") == "200")
        assert eventually(lambda: http_code(api, mesh["h3"], "m-h2") == "200")
        assert eventually(lambda: http_code(api, mesh["h2"], "m-h1") == "200")
        m2_ip = member_ip(api, "mesh", mesh["h2"])
        receive = (
            "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.bind(('0.0.0.0', 9999)); open('/tmp/udp','wb').write(s.recv(100))"
        )
        send = ("import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                f".sendto(b'over', ('{m2_ip}', 9999))")  # fmt: skip
        sh(api, mesh["h2"], f'nohup python3 -c "{receive}" >/dev/null 2>&1 &')
        time.sleep(0.5)
        sh(api, mesh["h1"], f'python3 -c "{send}"')
        assert eventually(lambda: sh(api, mesh["h2"], "cat /tmp/udp")["stdout"] == "over", 10)

        # A VXLAN packet from an address that is no peer (the test bridge's own, in the
        # host's namespace) with mesh's VNI and a frame for m-h2 is dropped at h2: only
        # the hosts that share a network may put frames on it.
        mesh_id = api.get("/v1/networks/mesh").json()["data"]["id"]
        other_id = api.get("/v1/networks/other").json()["data"]["id"]
        # Each network has its own VXLAN id from the store, and that is what the hosts use.
        mesh_vni, other_vni = stored_vni(cluster, mesh_id), stored_vni(cluster, other_id)
        assert mesh_vni != other_vni
        assert all(mesh_vni in vxlan_ids(host) for host in cluster.hosts.values())
        assert eventually(lambda: other_vni in vxlan_ids(cluster.hosts["h1"]))
        inject = INJECTOR.format(
            vni=mesh_vni, mac=_member_mac(m2_ip), src=member_ip(api, "mesh", mesh["h1"]),
            dst=m2_ip, target=cluster.hosts["h2"].address,
        )  # fmt: skip
        sh(api, mesh["h2"], f'rm -f /tmp/udp; nohup python3 -c "{receive}" >/dev/null 2>&1 &')
        time.sleep(0.5)
        subprocess.run([sys.executable, "-c", inject], check=True, timeout=30)
        sh(api, mesh["h1"], f'python3 -c "{send.replace("over", "peer")}"')
        assert eventually(lambda: sh(api, mesh["h2"], "cat /tmp/udp")["stdout"] == "peer", 10)
        # The same packet from a peer host (h1's namespace) is delivered: the frame is
        # well made, so what refused it above was the rule.
        sh(api, mesh["h2"], f'rm -f /tmp/udp; nohup python3 -c "{receive}" >/dev/null 2>&1 &')
        time.sleep(0.5)
        subprocess.run(["nsenter", f"--net=/run/netns/{cluster.hosts['h1'].netns}",
                        sys.executable, "-c", inject], check=True, timeout=30)  # fmt: skip
        assert eventually(lambda: sh(api, mesh["h2"], "cat /tmp/udp")["stdout"] == "forged", 10)

        # Another network on the same hosts: no name, no TCP, no ICMP.
        for outsider in outsiders:
            assert resolves(api, outsider, "m-h3") == ""
            assert http_code(api, outsider, m3_ip) == "000"
            assert sh(api, outsider, f"ping -c 1 -W 1 {m2_ip}")["exit_code"] != 0
        assert all(vxlan_devices(host) for host in cluster.hosts.values())
    finally:
        destroy_all(api)
        for network in ("mesh", "other"):
            api.delete(f"/v1/networks/{network}")
    for host in cluster.hosts.values():
        assert eventually(lambda host=host: vxlan_devices(host) == []), host.name  # type: ignore[misc]


def test_a_control_plane_killed_under_load_loses_no_2xx(
    cluster: Cluster, api: httpx.Client
) -> None:
    """Two control planes on one database, each under the load generator; the first is
    killed with SIGKILL. The second goes on answering, and everything either answered
    with a 2xx took effect: each sandbox a 201 reported is there (running, or destroyed
    where a delete was answered 200), each 200 attach is a membership."""
    assert api.post("/v1/networks", json={"name": "faults"}).status_code == 200
    output: list[str] = []
    doomed, doomed_url = cluster.start_control(output)
    try:
        with Traffic(doomed_url, cluster.key, "faults") as first, \
                Traffic(cluster.url, cluster.key, "faults") as second:  # fmt: skip
            assert eventually(lambda: len(first.created) >= 2 and len(second.created) >= 2, 120)
            doomed.kill()
            doomed.wait()
            after = len(second.created)
            assert eventually(lambda: len(second.created) >= after + 2, 120), "second stalled"
        for traffic in (first, second):
            # (A delete that got no answer may or may not have happened: not checked.)
            untouched = set(traffic.created) - traffic.delete_tried
            for sandbox_id in [*untouched, *traffic.deleted]:
                seen = api.get(f"/v1/sandboxes/{sandbox_id}").json()["data"]
                wanted = "destroyed" if sandbox_id in traffic.deleted else "running"
                assert seen["status"] == wanted, (sandbox_id, seen)
            members = {m["sandbox_id"] for m in
                       api.get("/v1/networks/faults").json()["data"]["members"]}  # fmt: skip
            assert traffic.attached & untouched <= members
    finally:
        if doomed.poll() is None:
            doomed.kill()
        destroy_all(api)
        api.delete("/v1/networks/faults")


def at_the_entry(cluster: Cluster, url: str, *, method: str = "GET") -> httpx.Response:
    """A request for a preview or ingress URL sent to the control plane's address with the
    URL's host name (what a wildcard DNS name for the preview domain would do)."""
    authority, _, path = url.split("//", 1)[1].partition("/")
    host, port = authority.rsplit(":", 1)
    assert int(port) == cluster.control_port  # the URL names the public entry
    return httpx.request(method, f"http://{cluster.gateway}:{port}/{path}",
                         headers={"Host": host}, timeout=120)  # fmt: skip


def ws_echo_at_the_entry(cluster: Cluster, host: str, payload: bytes) -> bytes:
    """One WebSocket message to the sandbox's echo server through the entry; its answer."""
    with socket.create_connection((str(cluster.gateway), cluster.control_port), 10) as conn:
        key = base64.b64encode(os.urandom(16)).decode()
        conn.sendall((f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())  # fmt: skip
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        assert head.startswith(b"HTTP/1.1 101"), head
        frame = head.split(b"\r\n\r\n", 1)[1]
        mask = os.urandom(4)
        conn.sendall(bytes([0x81, 0x80 | len(payload)]) + mask
                     + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))  # fmt: skip
        while len(frame) < 2 or len(frame) < 2 + frame[1]:
            frame += conn.recv(4096)
        return frame[2 : 2 + frame[1]]


def test_previews_and_ingress_of_any_host_answer_at_the_control_plane(
    cluster: Cluster, api: httpx.Client
) -> None:
    """One public entry: the preview and ingress URLs of a sandbox on h2 name the control
    plane's port, and the control plane passes them to h2's proxy (HTTP and a WebSocket);
    a request there for a paused auto_resume sandbox wakes it as on one machine."""
    nullspace = httpx.Client(base_url=f"{cluster.url}/nullspace", timeout=60,
                             headers={"Authorization": f"Bearer {cluster.key}"})  # fmt: skip
    try:
        made = create(api, host_id="h2", auto_resume=True, ingress_enabled=True)
        assert made.status_code == 201, made.text
        box = made.json()["data"]
        serve_app(api, box, "hello from h2")
        put = api.put(f"/v1/sandboxes/{box['id']}/files", params={"path": "/workspace/ws.py"},
                      content=WS_ECHO.encode())  # fmt: skip
        assert put.status_code < 300, put.text
        sh(api, box, "setsid python3 /workspace/ws.py >/dev/null 2>&1 </dev/null &")
        sh(api, box, "for i in $(seq 100); do ss -ltn | grep -q :9000 && break; sleep 0.1; done")
        preview = nullspace.post(f"/v1/sandboxes/{box['id']}/host", json={"port": 8080})
        assert preview.status_code in (200, 201), preview.text
        shown = api.get(f"/v1/sandboxes/{box['id']}").json()["data"]  # the control plane's view
        assert shown["ingress_url_template"] == box["ingress_url_template"]
        ingress = box["ingress_url_template"]

        answered = at_the_entry(cluster, preview.json()["url"])
        assert answered.status_code == 200 and answered.text == "hello from h2", answered.text
        by_ingress = at_the_entry(cluster, ingress.replace("<port>", "8080"))
        assert by_ingress.status_code == 200 and by_ingress.text == "hello from h2"
        ws_host = ingress.replace("<port>", "9000").split("//", 1)[1].split(":")[0]
        assert ws_echo_at_the_entry(cluster, ws_host, b"hi") == b"echo:hi"
        token = ingress.split("//", 1)[1].split("-", 1)[1].split(".")[0]
        unknown = at_the_entry(cluster, ingress.replace("<port>", "8080").replace(token, "a" * 26))
        assert unknown.status_code == 404 and "no such preview" in unknown.text

        pause(api, box)
        woken = at_the_entry(cluster, preview.json()["url"])
        assert woken.status_code == 200 and woken.text == "hello from h2", woken.text
        assert api.get(f"/v1/sandboxes/{box['id']}").json()["data"]["status"] == "running"
    finally:
        nullspace.close()
        destroy_all(api)


def test_a_deployed_project_answers_at_the_entry_whichever_host_runs_it(
    cluster: Cluster, chains: LocalChains
) -> None:
    """A project deployed through the control plane runs on whichever host's agent took
    the deploy; its URL names the public entry, which passes it to that host's proxy. An
    unknown name, and the project once deleted, are a 404 there."""
    wallet = Wallet.new()
    wallet.fund(chains.arbitrum, chains.tokens["arbitrum"]["usdc"], 2 * MONTH)
    site = {"index.html": "<h1>deployed in a cluster</h1>"}
    with httpx.Client(base_url=f"{cluster.url}/agent", timeout=60) as agent:
        started = paid_deploy(agent, chains, wallet, "fleet-site", files(site))
        ready = finished(agent, wallet, started)
        assert ready["status"] == "ready", ready
        assert ready["endpoint"] == f"http://fleet-site.localhost:{cluster.control_port}"
        host = stored(cluster, "SELECT s.host_id FROM projects p JOIN sandboxes s "
                      "ON s.id = p.sandbox_id WHERE p.unique_name = 'fleet-site'")  # fmt: skip
        assert host in cluster.hosts
        page = at_the_entry(cluster, ready["endpoint"] + "/")
        assert page.status_code == 200, (host, page.text)
        assert page.text == "<h1>deployed in a cluster</h1>"
        unknown = at_the_entry(cluster, f"http://nobody-here.localhost:{cluster.control_port}/")
        assert unknown.status_code == 404 and "no such project" in unknown.text
        deleted = agent.delete(f"/projects/{started['projectId']}", headers=wallet.headers())
        assert deleted.json()["status"] == "deleted", deleted.text
    assert eventually(lambda: at_the_entry(cluster, ready["endpoint"] + "/").status_code == 404)
