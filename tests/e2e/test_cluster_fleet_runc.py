"""Cluster placement, images and drain across hosts (issue 19, the ``fleet`` part): a
template built on one host is fetched by another that lacks it (never rebuilt there), and
gVisor runs (and hibernates) inside a cluster host's namespace.

One cluster of two hosts (network namespaces, real runc sandboxes, PostgreSQL) for the
module; see :mod:`tests.support.cluster`."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_sandboxes_runc import sh
from tests.support.cluster import AgentHost, Cluster

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


def create(api: httpx.Client, **body: Any) -> httpx.Response:
    return api.post("/v1/sandboxes", json={"shape": SHAPE, **body})


def counts(cluster: Cluster) -> dict[str, int]:
    return {name: host["vm_count"] for name, host in cluster.hosts_view().items()}


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
