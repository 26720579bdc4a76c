"""Cluster placement, images and drain across hosts (issue 19, the ``fleet`` part): a
template built on one host is fetched by another that lacks it (never rebuilt there), and
gVisor runs (and hibernates) inside a cluster host's namespace.

One cluster of two hosts (network namespaces, real runc sandboxes, PostgreSQL) for the
module; see :mod:`tests.support.cluster`."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_cluster_runc import at_the_entry, counts, create
from tests.e2e.test_sandboxes_runc import sh
from tests.e2e.test_wake_on_traffic import serve_app
from tests.support.cluster import AgentHost, Cluster, Relay
from tests.support.postgres import free_port
from tests.support.seaweed import SeaweedS3

SHAPE = "s-1vcpu-256mb"

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="network namespaces")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[Cluster]:
    started = Cluster(tmp_path_factory.mktemp("fleet"), images, {"f1": {}, "f2": {}})
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def api(cluster: Cluster) -> Iterator[httpx.Client]:
    with cluster.client() as client:
        yield client


def eventually(check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if result := check():
            return result
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.2)


def build_template(api: httpx.Client, name: str, dockerfile: str) -> dict[str, Any]:
    answer = api.post("/v1/templates", json={"name": name, "dockerfile": dockerfile})
    assert answer.status_code == 201, answer.text
    template_id = answer.json()["data"]["id"]

    def ready() -> dict[str, Any] | None:
        data: dict[str, Any] = api.get(f"/v1/templates/{template_id}").json()["data"]
        assert data["status"] not in ("failed", "cancelled"), data
        return data if data["status"] == "ready" else None

    built: dict[str, Any] = eventually(ready, timeout=600)
    return built


def image_file(host: AgentHost, template_id: str) -> Path:
    return host.home / "template-images" / f"{template_id}.json"


def own_layers(host: AgentHost, template_id: str) -> list[Path]:
    """The image's lowers in the host's own layer store (not the shared catalog rootfs)."""
    lowers = json.loads(image_file(host, template_id).read_text())["lowers"]
    return [Path(p) for p in lowers if Path(p).parent == host.home / "layers"]


def leftovers(host: AgentHost) -> list[str]:
    """Half-fetched directories anywhere in the host's layer store."""
    layers = host.home / "layers"
    return (
        sorted(p.name for p in layers.iterdir() if ".fetching-" in p.name)
        if layers.is_dir()
        else []
    )


def test_a_template_built_on_one_host_runs_on_another_that_fetches_it(
    cluster: Cluster, api: httpx.Client
) -> None:
    # The build's own output, unique to this build: a rebuild would write another stamp.
    dockerfile = (
        "FROM devbox:1\n"
        "RUN echo built-once > /etc/fleet-marker && head -c16 /dev/urandom | od -An -tx1 "
        "| tr -d ' \\n' > /etc/fleet-stamp\n"
        "ENV FLEET=yes\n"
    )
    template = build_template(api, "fetched", dockerfile)
    tid = template["id"]
    holders = [h for h in cluster.hosts.values() if image_file(h, tid).is_file()]
    assert len(holders) == 1, "one host built it"
    builder = holders[0]
    other = next(h for h in cluster.hosts.values() if h is not builder)
    layers = own_layers(builder, tid)
    assert layers, "the template has layers of its own"
    eventually(lambda: counts(cluster) == {"f1": 0, "f2": 0})  # the build's sandbox is gone
    try:
        # The control plane knows the builder has it once a heartbeat said so.
        first = eventually(lambda: (r := create(api, rootfs="fetched", host_id=builder.name))
                           .status_code == 201 and r)  # fmt: skip
        assert counts(cluster) == {builder.name: 1, other.name: 0}
        stamp = sh(api, first.json()["data"], "cat /etc/fleet-stamp")["stdout"]
        assert len(stamp) == 32
        # Placement prefers the host that has the image (the other is emptier).
        preferred = create(api, rootfs="fetched")
        assert preferred.status_code == 201, preferred.text
        assert counts(cluster) == {builder.name: 2, other.name: 0}

        # A fetch that fails (a layer missing on the only holder) is a 503 saying why, and
        # leaves nothing of the image on the host that tried.
        hidden = layers[0].with_name(layers[0].name + ".away")
        layers[0].rename(hidden)
        try:
            failed = create(api, rootfs="fetched", host_id=other.name)
        finally:
            hidden.rename(layers[0])
        assert failed.status_code == 503, failed.text
        message = failed.json()["message"]
        assert tid in message and other.name in message and builder.name in message, message
        assert not image_file(other, tid).exists()
        assert leftovers(other) == []
        assert counts(cluster)[other.name] == 0

        # Pinned to the host that lacks it: fetched from the builder, and run there.
        second = create(api, rootfs="fetched", host_id=other.name)
        assert second.status_code == 201, second.text
        box = second.json()["data"]
        assert counts(cluster) == {builder.name: 2, other.name: 1}
        seen = sh(api, box, "cat /etc/fleet-marker /etc/fleet-stamp; echo; echo $FLEET")
        assert seen["exit_code"] == 0, seen
        assert seen["stdout"].split() == ["built-once", stamp, "yes"]  # the same build's files
        # Its image on that host is the builder's layers, copied (not built: no build ran
        # there, and the template was built once).
        assert [p.name for p in own_layers(other, tid)] == [p.name for p in layers]
        assert leftovers(other) == []
        after = api.get(f"/v1/templates/{tid}").json()["data"]
        assert after["status"] == "ready"
        assert (after["attempts"], after["built_at"]) == (
            template["attempts"],
            template["built_at"],
        )
        # A second create there uses what it has (no fetch): still the same layers.
        third = create(api, rootfs="fetched", host_id=other.name)
        assert third.status_code == 201, third.text
        assert counts(cluster)[other.name] == 2
    finally:
        for box in api.get("/v1/sandboxes", params={"limit": 500}).json()["data"]["data"]:
            if box["status"] not in ("destroyed", "failed"):
                api.delete(f"/v1/sandboxes/{box['id']}")


def test_a_root_filesystem_fetch_cut_by_a_kill_is_swept_at_the_next_start(
    cluster: Cluster, api: httpx.Client
) -> None:
    """What a kill -9 mid-fetch leaves (a catalog root filesystem unpacked into
    ``images/<name>/<build>.fetching-<host>-…``) goes when that host's agent starts again;
    another host's (the images directory may be shared, as here) stays."""
    catalog = cluster.images / "devbox_1"  # built for every test run, never rebuilt
    mine = catalog / f"0000.fetching-f2-{secrets.token_hex(4)}"
    theirs = catalog / f"0000.fetching-f1-{secrets.token_hex(4)}"
    for partial in (mine, theirs):
        (partial / "rootfs" / "etc").mkdir(parents=True)
        (partial / "rootfs" / "etc" / "half").write_text("cut\n")
    try:
        host = cluster.hosts["f2"]
        host.kill()
        host.start(cluster.url, cluster.token)
        eventually(lambda: not mine.exists())
        assert theirs.is_dir(), "".join(cluster.hosts["f1"].output + host.output)
        cluster.wait_hosts({"f2"}, status="active")
        made = create(api, host_id="f2")  # the restarted host runs sandboxes as before
        assert made.status_code == 201, made.text
        assert sh(api, made.json()["data"], "echo up")["stdout"] == "up\n"
        api.delete(f"/v1/sandboxes/{made.json()['data']['id']}")
    finally:
        for partial in (mine, theirs):
            shutil.rmtree(partial, ignore_errors=True)


def test_a_gvisor_sandbox_hibernates_and_resumes_on_a_cluster_host(
    cluster: Cluster, api: httpx.Client
) -> None:
    """gVisor inside a cluster host's namespace (the base of moving hibernated sandboxes
    off a draining host): created there, hibernated, resumed with its processes."""
    hosts = cluster.hosts_view()
    if "gvisor" not in hosts["f1"]["runtimes"]:
        pytest.fail(f"the cluster host offers no gvisor runtime: {hosts['f1']}")
    made = create(api, runtime="gvisor", host_id="f1")
    assert made.status_code == 201, made.text
    box = made.json()["data"]
    try:
        pid = sh(api, box, "setsid sleep 600 >/dev/null 2>&1 </dev/null & echo $!")["stdout"]
        paused = api.post(f"/v1/sandboxes/{box['id']}/pause")
        assert paused.status_code == 202, paused.text
        view = eventually(
            lambda: (
                (v := api.get(f"/v1/sandboxes/{box['id']}").json()["data"])["status"] == "paused"
                and v
            )
        )
        assert view["hibernated"], view
        assert api.post(f"/v1/sandboxes/{box['id']}/resume").status_code == 202
        assert sh(api, box, f"cat /proc/{pid.strip()}/cmdline")["stdout"].startswith("sleep")
    finally:
        api.delete(f"/v1/sandboxes/{box['id']}")


# -- drain with the S3 snapshot store ----------------------------------------------------


# One DNS query (example.test, A) to the sandbox's nameserver (its host's end of its link):
# prints the address it left from and whether an answer came.
_DNS_PROBE = (
    "import socket; "
    "ns = [l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver')][0]; "
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); s.connect((ns, 53)); "
    "s.send(bytes.fromhex('123401000001000000000000076578616d706c65047465737400000100 01'"
    ".replace(' ', ''))); "
    "print(s.getsockname()[0], 'answered' if s.recv(512) else 'silent')"
)


class _S3Cluster(Cluster):
    """The cluster, each agent keeping hibernated snapshots in one S3 bucket, and every
    part sharing one master key (as the README's "Run a cluster" says: a draining agent
    opens the host token of the agent it moves a sandbox to)."""

    def __init__(self, root: Path, images: Path, s3: SeaweedS3, bucket: str) -> None:
        self._s3, self.bucket = s3, bucket
        self._key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.relay: Relay | None = None
        # Each host's proxy behind the public entry (the control plane's port).
        entry = free_port()
        public = {"HUTCH_PUBLIC_PROXY_PORT": str(entry)}
        proxy = {"HUTCH_PROXY_ENABLED": "true", "HUTCH_PROXY_HOST": "0.0.0.0", **public}
        super().__init__(root, images, {"d1": proxy, "d2": proxy}, control_env=public,
                         control_port=entry)  # fmt: skip

    def _control_env(self) -> dict[str, str]:
        return {**super()._control_env(), "HUTCH_DISK_MASTER_KEY": self._key}

    def _network(self, hosts: dict[str, dict[str, str]]) -> None:
        super()._network(hosts)
        self.relay = Relay(str(self.gateway), self._s3.port, record=True)
        for host in self.hosts.values():
            host.env.update({
                "HUTCH_SNAPSHOT_STORE": f"s3://{self.bucket}/hutch",
                "HUTCH_SNAPSHOT_STORE_ENDPOINT": f"http://{self.gateway}:{self.relay.port}",
                "HUTCH_SNAPSHOT_STORE_ACCESS_KEY": self._s3.access_key,
                "HUTCH_SNAPSHOT_STORE_SECRET_KEY": self._s3.secret_key,
                "HUTCH_DISK_MASTER_KEY": self._key,
            })  # fmt: skip

    def stop(self) -> None:
        super().stop()
        if self.relay is not None:
            self.relay.close()


def at_a_proxy(host: AgentHost, url: str) -> httpx.Response:
    """A request for a preview or ingress URL sent straight to ``host``'s own proxy."""
    authority, _, path = url.split("//", 1)[1].partition("/")
    return httpx.get(f"http://{host.address}:8701/{path}",
                     headers={"Host": authority.rsplit(":", 1)[0]}, timeout=120)  # fmt: skip


@pytest.fixture(scope="module")
def drained(
    tmp_path_factory: pytest.TempPathFactory, images: Path, s3: SeaweedS3
) -> Iterator[_S3Cluster]:
    """Two hosts, d1 and d2, keeping snapshots in one bucket (``cluster.bucket``)."""
    bucket = s3.make_bucket(f"drain-{time.monotonic_ns()}")
    cluster = _S3Cluster(tmp_path_factory.mktemp("drain"), images, s3, bucket)
    try:
        yield cluster
    finally:
        cluster.stop()


def _hibernated(api: httpx.Client, sandbox_id: str) -> dict[str, Any]:
    assert api.post(f"/v1/sandboxes/{sandbox_id}/pause").status_code == 202
    view: dict[str, Any] = eventually(
        lambda: (
            (v := api.get(f"/v1/sandboxes/{sandbox_id}").json()["data"])["status"] == "paused" and v
        )
    )
    assert view["hibernated"], view
    return view


def warm_routes(cluster: Cluster, sandbox_id: str, workers: int = 2) -> None:
    """A request about ``sandbox_id`` through each control worker (new connections until
    every worker answered one), so that each keeps where the sandbox lives."""
    seen: set[str] = set()
    for _ in range(200):
        with cluster.client() as fresh:  # a new connection: any worker may take it
            answer = fresh.get(f"/v1/sandboxes/{sandbox_id}/no-such-route")
        assert answer.status_code == 404, answer.text  # its host's agent's answer
        seen.add(answer.headers["x-hutch-worker"])
        if len(seen) == workers:
            return
    raise AssertionError(f"only workers {seen} answered")


def _said(host: AgentHost, *words: str) -> str | None:
    return next((line for line in host.output if all(w in line for w in words)), None)


def _uploads(requests: list[str], sandbox_id: str) -> list[str]:
    """The uploads of a sandbox's moving disk: one PUT, or a multipart upload's start."""
    return [
        r for r in requests
        if f"{sandbox_id}.moving" in r
        and ((r.startswith("POST") and "uploads" in r)
             or (r.startswith("PUT") and "partNumber" not in r))
    ]  # fmt: skip


def test_drain_moves_hibernated_gvisor_sandboxes_through_s3(
    drained: _S3Cluster, s3: SeaweedS3
) -> None:
    cluster = drained
    assert cluster.relay is not None
    requests = cluster.relay.requests
    try:
        with cluster.client() as api:
            sleeper = create(api, runtime="gvisor", host_id="d1", auto_resume=True,
                             ingress_enabled=True)  # fmt: skip
            assert sleeper.status_code == 201, sleeper.text
            box = sleeper.json()["data"]
            sh(api, box, "echo kept > /workspace/kept")
            serve_app(api, box, "moved and woken")
            ingress = box["ingress_url_template"].replace("<port>", "8080")
            pid = sh(api, box, "setsid sleep 900 >/dev/null 2>&1 </dev/null & echo $!")["stdout"]
            awake = create(api, host_id="d1")  # runc, running: it stays
            assert awake.status_code == 201, awake.text
            _hibernated(api, box["id"])
            assert counts(cluster) == {"d1": 2, "d2": 0}

            # No host can take it (the other one drains too): nothing is uploaded, and the
            # draining host's log says why; it stays whole where it is.
            cluster.cli("hosts", "drain", "d2")
            cluster.cli("hosts", "drain", "d1")
            said = eventually(lambda: _said(cluster.hosts["d1"], box["id"], "stays on this"))
            assert "no host can take it now" in said and "nothing was uploaded" in said, said
            assert [r for r in requests if f"{box['id']}.moving" in r] == []
            assert counts(cluster) == {"d1": 2, "d2": 0}
            # Every control worker keeps that it lives on d1 (what a request about it
            # routed there taught it).
            warm_routes(cluster, box["id"])
            # Room again: it moves, its disk uploaded once.
            cluster.cli("hosts", "undrain", "d2")
            eventually(lambda: counts(cluster) == {"d1": 1, "d2": 1}, timeout=120)
            assert len(_uploads(requests, box["id"])) == 1, requests
            moved = api.get(f"/v1/sandboxes/{box['id']}").json()["data"]
            assert moved["status"] == "paused" and moved["hibernated"], moved
            assert moved["ip"] != box["ip"]  # an address of the other host's pool
            # Its bundle is the new host's own, made there from the record (not a file
            # that came through the bucket): its paths are that host's.
            there = cluster.hosts["d2"].home / "sandboxes" / box["id"]
            config = json.loads((there / "config.json").read_text())
            assert config["root"]["path"] == str(there / "rootfs")
            assert str(cluster.hosts["d1"].home) not in json.dumps(config)
            # Once the drained host has let go of what it had of it (its directory last),
            # its ingress route is gone too: a request that still reaches its proxy finds
            # nothing there, and wakes nothing on the wrong host.
            left = cluster.hosts["d1"].home / "sandboxes" / box["id"]
            eventually(lambda: not left.exists())
            stale = at_a_proxy(cluster.hosts["d1"], ingress)
            assert stale.status_code == 404, stale.text
            still = api.get(f"/v1/sandboxes/{box['id']}").json()["data"]
            assert (still["status"], still["reason"]) == ("paused", moved["reason"]), still
            # A request to its ingress URL at the public entry wakes it on its new host.
            woken = at_the_entry(cluster, ingress)
            assert woken.status_code == 200 and woken.text == "moved and woken", woken.text
            assert api.get(f"/v1/sandboxes/{box['id']}").json()["data"]["status"] == "running"
            # Its recorded addresses are the new host's (a pause reads them to find its
            # connections in TIME_WAIT, which gVisor cannot save).
            kept = there / "addresses.json"
            assert [a[1] for a in json.loads(kept.read_text())["addresses"]] == [moved["ip"]]
            assert sh(api, box, "cat /workspace/kept")["stdout"] == "kept\n"
            # Those went first where each worker kept that it lives (d1: nothing but a
            # lookup of the store replaces a kept route), and reached it on d2: d1 answers
            # such a request "not here" and runs nothing of it.
            socket = cluster.hosts["d1"].home / "run" / "agent.sock"
            with httpx.Client(
                transport=httpx.HTTPTransport(uds=str(socket)),
                base_url="http://d1",
                headers={"X-Api-Key": cluster.key},
            ) as d1:
                stale = d1.post(f"/v1/sandboxes/{box['id']}/exec", json={"cmd": "true"},
                                headers={"X-Hutch-Routed-To": "d1"})  # fmt: skip
            assert stale.status_code == 421 and stale.headers["x-hutch-not-here"], stale.text
            assert sh(api, box, f"cat /proc/{pid.strip()}/cmdline")["stdout"].startswith("sleep")
            assert sh(api, box, "hostname")["stdout"].strip() == box["name"]
            # Its network is the new host's: a DNS query to the new host's end of its link
            # leaves from its new address and is answered.
            asked = sh(api, box, f'python3 -c "{_DNS_PROBE}"')
            assert asked["stdout"].split() == [moved["ip"], "answered"], asked
            # The running one kept running where it was; new ones go to the other host.
            assert sh(api, awake.json()["data"], "echo up")["stdout"] == "up\n"
            assert create(api).status_code == 201
            assert counts(cluster) == {"d1": 1, "d2": 2}
            leftover = s3.client().list_objects_v2(Bucket=cluster.bucket,
                                                   Prefix=f"hutch/{box['id']}")  # fmt: skip
            assert leftover.get("KeyCount", 0) == 0, leftover
            for view in api.get("/v1/sandboxes", params={"limit": 500}).json()["data"]["data"]:
                if view["status"] not in ("destroyed", "failed"):
                    api.delete(f"/v1/sandboxes/{view['id']}")
    except BaseException:
        for host in cluster.hosts.values():  # what the agents said, for the failure
            print(f"--- agent {host.name}:\n" + "".join(host.output[-60:]))
        raise


def _tar(directory: Path, archive: Path, *names: str) -> str:
    subprocess.run(["tar", "--sparse", "-C", str(directory), "-cf", str(archive), *names],
                   check=True)  # fmt: skip
    return hashlib.sha256(archive.read_bytes()).hexdigest()


def test_a_disk_upload_changed_in_the_bucket_is_refused_and_nothing_of_it_runs(
    drained: _S3Cluster, s3: SeaweedS3, tmp_path: Path
) -> None:
    """Whoever can write the snapshot bucket cannot run anything on the host that takes a
    moved sandbox: the object the adopting host reads must be the draining host's upload
    (its digest comes over the agents' own link) and only a disk file; the bundle is
    always made on the adopting host. Here the bucket's object carries a bundle with an OCI
    hook and a bind mount of the host's root, as an attacker would put there."""
    cluster = drained
    cluster.cli("hosts", "undrain", "d1")
    cluster.wait_hosts({"d1", "d2"}, status="active")
    ran = tmp_path / "the-hook-ran"
    with cluster.client() as api:
        made = create(api, runtime="gvisor", host_id="d2")
        assert made.status_code == 201, made.text
        box = made.json()["data"]
        try:
            sh(api, box, "echo mine > /workspace/mine")
            _hibernated(api, box["id"])
            source = cluster.hosts["d2"].home / "sandboxes" / box["id"]
            hostile = tmp_path / "hostile"
            hostile.mkdir()
            subprocess.run(["cp", "--sparse=always", str(source / "disk.img"),
                            str(hostile / "disk.img")], check=True)  # fmt: skip
            bundle = json.loads((source / "config.json").read_text())
            bundle.setdefault("hooks", {})["prestart"] = [
                {"path": "/bin/sh", "args": ["sh", "-c", f"touch {ran}"]}
            ]
            bundle["mounts"].append({"destination": "/host", "type": "bind", "source": "/",
                                     "options": ["rbind", "rw"]})  # fmt: skip
            (hostile / "config.json").write_text(json.dumps(bundle))
            honest = _tar(hostile, tmp_path / "honest.tar", "disk.img")
            tampered = _tar(hostile, tmp_path / "tampered.tar", "disk.img", "config.json")
            key = f"hutch/{box['id']}.moving/sandbox.tar"
            home = cluster.hosts["d1"].home
            transport = httpx.HTTPTransport(uds=str(home / "run" / "agent.sock"))
            with httpx.Client(transport=transport, base_url="http://agent", timeout=120) as d1:
                url = f"/internal/v1/moves/{box['id']}"
                # Nothing in the bucket (an upload that never arrived): refused saying why
                # (not a 500), and nothing of it is left on d1.
                missing = d1.post(url, json={"from_host": "d2", "disk_sha256": honest})
                assert missing.status_code == 503, missing.text
                assert "could not be taken from the snapshot store" in missing.text, missing.text
                assert not (home / "sandboxes" / box["id"]).exists()
                s3.client().upload_file(str(tmp_path / "tampered.tar"), cluster.bucket, key)
                # Asked (over its own socket) to take the sandbox from d2 with the digest
                # of what d2 would have sent, d1 finds another object in the bucket: refused.
                refused = d1.post(url, json={"from_host": "d2", "disk_sha256": honest})
                assert refused.status_code == 409, refused.text
                assert "not the one d2 sent" in refused.text, refused.text
                # Even with the digest of the changed object itself (as if the draining
                # host had uploaded it), an archive with more than the disk file is refused.
                refused = d1.post(url, json={"from_host": "d2", "disk_sha256": tampered})
                assert refused.status_code == 409, refused.text
                assert "something else than one disk file" in refused.text, refused.text
            assert not (home / "sandboxes" / box["id"]).exists()
            assert not ran.exists()
            # The sandbox is where it was, whole: it resumes on d2 with its file.
            view = api.get(f"/v1/sandboxes/{box['id']}").json()["data"]
            assert (view["status"], view["hibernated"]) == ("paused", True), view
            assert counts(cluster) == {"d1": 0, "d2": 1}
            assert api.post(f"/v1/sandboxes/{box['id']}/resume").status_code == 202
            assert sh(api, box, "cat /workspace/mine")["stdout"] == "mine\n"
            assert (
                sh(api, box, "ls /host 2>&1; true")["stdout"]
                .strip()
                .endswith("No such file or directory")
            )
            assert not ran.exists()
        finally:
            api.delete(f"/v1/sandboxes/{box['id']}")


def test_a_move_whose_answer_was_lost_is_finished_by_the_draining_host(
    drained: _S3Cluster, s3: SeaweedS3, tmp_path: Path
) -> None:
    """The host that took a sandbox moved its row, but the draining host never heard so
    (its request timed out): the draining host's next pass removes what is left there."""
    cluster = drained
    cluster.cli("hosts", "undrain", "d1")
    cluster.wait_hosts({"d1", "d2"}, status="active")
    with cluster.client() as api:
        # (placement sees d1 active again within its next read of the hosts)
        made = eventually(lambda: (r := create(api, runtime="gvisor", host_id="d1"))
                          .status_code == 201 and r)  # fmt: skip
        box = made.json()["data"]
        try:
            sh(api, box, "echo moved-anyway > /workspace/kept")
            _hibernated(api, box["id"])
            left = cluster.hosts["d1"].home / "sandboxes" / box["id"]
            # What the draining host sends, once the checkpoint's unmount is done.
            eventually(lambda: f"{left}/" not in Path("/proc/mounts").read_text())
            digest = _tar(left, tmp_path / "disk.tar", "disk.img")
            key = f"hutch/{box['id']}.moving/sandbox.tar"
            s3.client().upload_file(str(tmp_path / "disk.tar"), cluster.bucket, key)
            home = cluster.hosts["d2"].home
            transport = httpx.HTTPTransport(uds=str(home / "run" / "agent.sock"))
            with httpx.Client(transport=transport, base_url="http://agent", timeout=120) as d2:
                taken = d2.post(f"/internal/v1/moves/{box['id']}",
                                json={"from_host": "d1", "disk_sha256": digest})  # fmt: skip
            assert taken.status_code == 200, taken.text
            assert counts(cluster) == {"d1": 0, "d2": 1}
            assert left.is_dir()  # d1 did not hear: its copy is still there
            cluster.cli("hosts", "drain", "d1")
            eventually(lambda: not left.exists())
            # On d2 it resumes with its file.
            assert api.post(f"/v1/sandboxes/{box['id']}/resume").status_code == 202
            assert sh(api, box, "cat /workspace/kept")["stdout"] == "moved-anyway\n"
            view = api.get(f"/v1/sandboxes/{box['id']}").json()["data"]
            assert view["status"] == "running", view
        except BaseException:
            for host in cluster.hosts.values():
                print(f"--- agent {host.name}:\n" + "".join(host.output[-40:]))
            raise
        finally:
            api.delete(f"/v1/sandboxes/{box['id']}")
            cluster.cli("hosts", "undrain", "d1")
