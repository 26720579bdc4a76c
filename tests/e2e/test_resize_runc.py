"""Growing a real sandbox's disk online (runc): ``df`` inside shows the new size at once,
what did not fit before fits now, files and running processes are untouched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_sandboxes_runc import create, runc_server, sh
from tests.support.server import HutchProcess, remove_instance


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    process = runc_server(tmp_path_factory.mktemp("resize") / "home", images)
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture
def api(server: HutchProcess) -> Iterator[httpx.Client]:
    key = server.new_key("grower")
    with server.client(key) as client:
        yield client


def df_mib(api: httpx.Client, box: dict[str, str]) -> int:
    return int(sh(api, box, "df -m --output=size / | tail -1")["stdout"])


def test_the_disk_grows_online_and_what_did_not_fit_now_does(api: httpx.Client) -> None:
    box = create(api, disk_mib=300)
    before = df_mib(api, box)
    assert 280 <= before <= 300, before
    sh(api, box, "echo precious > /root/kept")
    # When the sandbox's init started (field 22 of /proc/1/stat): a restart would change it.
    booted = sh(api, box, "cut -d' ' -f22 /proc/1/stat")["stdout"]
    too_big = sh(api, box, "dd if=/dev/zero of=/root/big bs=1M count=400 2>&1; echo rc=$?; "
                           "rm -f /root/big; sync")  # fmt: skip
    assert "No space left on device" in too_big["stdout"] and "rc=1" in too_big["stdout"]

    grown = api.post(f"/v1/sandboxes/{box['id']}/resize", json={"disk_mib": 700})
    assert grown.status_code == 200, grown.text
    assert grown.json()["data"] == {"id": box["id"], "disk_mib": 700}
    after = df_mib(api, box)
    assert 660 <= after <= 700 and after > before + 350, (before, after)
    fits = sh(api, box, "dd if=/dev/zero of=/root/big bs=1M count=400 2>&1; echo rc=$?")
    assert "rc=0" in fits["stdout"], fits
    assert sh(api, box, "cat /root/kept")["stdout"] == "precious\n"
    assert sh(api, box, "cut -d' ' -f22 /proc/1/stat")["stdout"] == booted
    assert api.get(f"/v1/sandboxes/{box['id']}").json()["data"]["disk_mib"] == 700

    # Paused, it grows too, and shows it when it runs again.
    assert api.post(f"/v1/sandboxes/{box['id']}/pause").status_code in (200, 202)
    assert api.post(f"/v1/sandboxes/{box['id']}/resize", json={"disk_mib": 900}).status_code == 200
    assert api.post(f"/v1/sandboxes/{box['id']}/resume").status_code in (200, 202)
    assert 860 <= df_mib(api, box) <= 900
    assert sh(api, box, "cut -d' ' -f22 /proc/1/stat")["stdout"] == booted
    smaller = api.post(f"/v1/sandboxes/{box['id']}/resize", json={"disk_mib": 800})
    assert smaller.status_code == 400 and "disk_mib" in smaller.json()["data"]
    assert 860 <= df_mib(api, box) <= 900
    api.delete(f"/v1/sandboxes/{box['id']}")
