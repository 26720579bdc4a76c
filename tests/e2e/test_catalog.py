"""Seed 001, example by example, against a real ``hutch serve``."""

from __future__ import annotations

from pathlib import Path

import pytest

from hutch.host.images import COMPLETE_MARKER, image_dir
from hutch.host.machine import read_memory
from tests.support.server import HutchProcess


@pytest.fixture
def server(shared_server: HutchProcess) -> HutchProcess:
    """The tests that take it only read: they share the module's server (no sandbox is
    made here, so the host's vm_count stays 0). The others start servers of their own."""
    return shared_server


def test_shapes_match_the_seed(server: HutchProcess) -> None:
    with server.client() as client:
        response = client.get("/v1/shapes")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "data"} and body["status"] == "success"
    shapes = body["data"]["data"]
    assert {"s-1vcpu-256mb", "s-1vcpu-1gb", "s-2vcpu-2gb"} <= {s["id"] for s in shapes}
    for shape in shapes:
        assert set(shape) == {"id", "vcpu", "mem_mib", "default_disk_mib"}
    assert next(s for s in shapes if s["id"] == "s-1vcpu-256mb") == {
        "id": "s-1vcpu-256mb",
        "vcpu": 1,
        "mem_mib": 256,
        "default_disk_mib": 10240,
    }
    assert next(s for s in shapes if s["id"] == "s-1vcpu-1gb")["mem_mib"] == 1024
    assert body["data"]["pagination"] == {
        "total": len(shapes),
        "limit": 50,
        "offset": 0,
        "count": len(shapes),
    }


def test_shapes_paginate(server: HutchProcess) -> None:
    with server.client() as client:
        everything = client.get("/v1/shapes").json()["data"]["data"]
        page = client.get("/v1/shapes", params={"limit": 2, "offset": 1}).json()["data"]
        past_the_end = client.get("/v1/shapes", params={"offset": 100}).json()["data"]
    assert page["data"] == everything[1:3]
    assert page["pagination"] == {"total": len(everything), "limit": 2, "offset": 1, "count": 2}
    assert past_the_end["data"] == [] and past_the_end["pagination"]["count"] == 0


def test_rootfs_matches_the_seed(server: HutchProcess) -> None:
    with server.client() as client:
        body = client.get("/v1/rootfs").json()
    assert body["status"] == "success"
    data = body["data"]
    # The seed's two, and CreateOS's desktop image (computer use, issue 21).
    assert data["rootfs"] == ["devbox:1", "node", "desktop:1"]
    assert data["default"] == "devbox:1"
    assert [e["name"] for e in data["entries"]] == ["devbox:1", "node", "desktop:1"]
    assert all(e["description"] for e in data["entries"])


def test_hosts_report_this_machine(server: HutchProcess) -> None:
    with server.client() as client:
        body = client.get("/v1/hosts").json()
    assert body["status"] == "success"
    hosts = body["data"]["data"]
    assert len(hosts) == 1
    host = hosts[0]
    # Seed 001's five fields, the host's placement labels (for node_selector, issue 15) and
    # the runtimes it runs (issue 17).
    assert set(host) == {"id", "status", "free_mib", "vm_count", "rootfses", "labels", "runtimes"}
    assert isinstance(host["runtimes"], list)  # the fake driver here runs none of them
    assert host["status"] == "active"
    assert host["vm_count"] == 0
    assert host["rootfses"] == []
    memory = read_memory()
    # Real free memory: a heartbeat's reading, so it moves a little between then and now.
    assert 0 < host["free_mib"] <= memory.total_mib
    assert abs(host["free_mib"] - memory.available_mib) < memory.total_mib * 0.2
    assert body["data"]["pagination"] == {"total": 1, "limit": 50, "offset": 0, "count": 1}


def test_hosts_and_rootfs_report_built_images(home: Path) -> None:
    node = image_dir(home / "images", "node")
    (node / "abc").mkdir(parents=True)
    (node / "abc" / COMPLETE_MARKER).write_text("")
    (node / "current").symlink_to("abc")
    (image_dir(home / "images", "devbox:1") / "def.partial").mkdir(parents=True)  # unfinished
    server = HutchProcess(home).wait_ready()
    try:
        with server.client() as client:
            host = client.get("/v1/hosts").json()["data"]["data"][0]
            entries = client.get("/v1/rootfs").json()["data"]["entries"]
    finally:
        server.stop()
    assert host["rootfses"] == ["node"]
    assert {e["name"]: e["available"] for e in entries} == {
        "devbox:1": False,
        "node": True,
        "desktop:1": False,
    }


def test_health_probes_match_the_seed(server: HutchProcess) -> None:
    with server.client() as client:
        assert client.get("/healthz").json() == {"status": "success", "data": {"up": True}}
        ready = client.get("/readyz")
        # Seed 001 shows {"ready": true}; CreateOS also reports its scheduler's last pass.
        assert ready.status_code == 200 and ready.json()["status"] == "success"
        assert ready.json()["data"]["ready"] is True
        assert set(ready.json()["data"]) == {"ready", "scheduler_last_ok_ms_ago"}
        assert isinstance(ready.json()["data"]["scheduler_last_ok_ms_ago"], int)


def test_every_response_has_a_request_id(server: HutchProcess) -> None:
    with server.client() as client:
        for path in ("/healthz", "/v1/shapes", "/v1/whoami", "/v1/nowhere", "/v1/shapes?limit=-1"):
            assert client.get(path).headers["X-Request-ID"]


def test_configured_shapes_and_environment_settings(tmp_path: Path) -> None:
    from tests.support.postgres import free_port

    port = free_port()
    home = tmp_path / "from-env"
    env = {
        "HUTCH_PORT": str(port),
        "HUTCH_SHAPES": '[{"id": "s-tiny", "vcpu": 1, "mem_mib": 128, "default_disk_mib": 1024}]',
    }
    server = HutchProcess(home, env=env, port=None).wait_ready()
    try:
        assert server.url == f"http://127.0.0.1:{port}"
        with server.client() as client:
            shapes = client.get("/v1/shapes").json()["data"]["data"]
    finally:
        server.stop()
    assert shapes == [{"id": "s-tiny", "vcpu": 1, "mem_mib": 128, "default_disk_mib": 1024}]
    assert (home / "hutch.db").is_file()
