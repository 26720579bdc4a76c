"""Metrics of real sandboxes (runc): what a program inside does shows in
``/v1/sandboxes/{id}/metrics`` within a few sampling rounds: a busy loop's CPU, a 160 MiB
allocation, a 64 MiB file, traffic over its link; the history and the owner's totals; and
nothing of it for another user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hutch.sdk import Client, Sandbox
from tests.e2e.test_sandboxes_runc import create, runc_server, sh
from tests.support.server import HutchProcess, remove_instance

MIB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    home = tmp_path_factory.mktemp("metrics") / "home"
    process = runc_server(home, images, env={"HUTCH_METRICS_INTERVAL_S": "0.5"})
    yield process
    process.stop()
    remove_instance(process.home)


def key(server: HutchProcess, user: str) -> str:
    return server.new_key(user)


@pytest.fixture
def api(server: HutchProcess) -> Iterator[httpx.Client]:
    with server.client(key(server, "watcher")) as client:
        yield client


def metrics(api: httpx.Client, box: dict[str, Any]) -> dict[str, Any] | None:
    answer = api.get(f"/v1/sandboxes/{box['id']}/metrics")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] | None = answer.json()["data"]["metrics"]
    return found


def until(api: httpx.Client, box: dict[str, Any], ok: Callable[[dict[str, Any]], bool],
          what: str) -> dict[str, Any]:  # fmt: skip
    deadline, last = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        last = metrics(api, box)
        if last is not None and ok(last):
            return last
        time.sleep(0.25)
    raise AssertionError(f"no sample showed {what}; the last: {last}")


def test_what_runs_inside_shows_in_the_sandboxs_metrics(api: httpx.Client) -> None:
    box = create(api)
    quiet = until(api, box, lambda m: True, "a first sample")
    assert quiet["cpu_count"] == 1 and quiet["mem_total_bytes"] == 256 * MIB
    assert 0 < quiet["mem_used_bytes"] < 100 * MIB and quiet["processes"] >= 1
    assert quiet["disk_total_bytes"] > 100 * MIB and quiet["disk_used_bytes"] is not None

    sh(api, box, "setsid sh -c 'while :; do :; done' >/dev/null 2>&1 &")
    busy = until(api, box, lambda m: m["cpu_used_pct"] > 50, "a busy CPU")
    assert busy["cpu_used_pct"] <= 100 and busy["processes"] > quiet["processes"]

    sh(api, box, "setsid python3 -c 'import time; b = bytearray(160 << 20); time.sleep(600)'"
                 " >/dev/null 2>&1 &")  # fmt: skip
    until(api, box, lambda m: m["mem_used_bytes"] >= quiet["mem_used_bytes"] + 150 * MIB,
          "160 MiB more memory")  # fmt: skip

    sh(api, box, "dd if=/dev/urandom of=/root/blob bs=1M count=64 2>/dev/null; sync")
    until(api, box, lambda m: m["disk_used_bytes"] >= quiet["disk_used_bytes"] + 60 * MIB,
          "64 MiB more on disk")  # fmt: skip

    # 8 MiB served from inside to the host over the sandbox's link: its tx, the host's rx.
    sh(api, box, "head -c 8388608 /dev/zero > /tmp/eight; cd /tmp && setsid python3 -m"
                 " http.server 8080 >/dev/null 2>&1 &")  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            got = httpx.get(f"http://{box['ip']}:8080/eight", timeout=10)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert len(got.content) == 8 * MIB
    sent = until(api, box, lambda m: m["net_tx_bytes"] >= (quiet["net_tx_bytes"] or 0) + 8 * MIB,
                 "8 MiB sent")  # fmt: skip
    assert sent["net_rx_bytes"] > (quiet["net_rx_bytes"] or 0)

    history = api.get(f"/v1/sandboxes/{box['id']}/metrics/timeseries").json()["data"]
    stamps = [s["timestamp"] for s in history["samples"]]
    assert len(stamps) >= 5 and stamps == sorted(stamps) and history["interval_s"] == 0.5
    assert max(s["cpu_used_pct"] for s in history["samples"]) > 50
    recent = api.get(f"/v1/sandboxes/{box['id']}/metrics/timeseries", params={"since": "2"})
    assert 0 < len(recent.json()["data"]["samples"]) < len(stamps)
    window = api.get(f"/v1/sandboxes/{box['id']}/metrics", params={"since": "2"}).json()["data"]
    assert 0 < len(window["history"]) < len(stamps) and window["metrics"] is not None
    assert api.get(f"/v1/sandboxes/{box['id']}/metrics").json()["data"]["history"] is None

    # The SDK and the CLI read the same.
    with Client(api_url=str(api.base_url), api_key=api.headers["X-Api-Key"]) as client:
        sandbox = Sandbox.connect(box["id"], client=client)
        assert (sandbox.metrics() or quiet).mem_used_bytes >= 150 * MIB
        assert len(sandbox.metrics_history()) >= 5
    shown = subprocess.run(
        [sys.executable, "-m", "hutch", "metrics", box["id"], "--json"], capture_output=True,
        text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("HUTCH_")},
             "HUTCH_API_URL": str(api.base_url), "HUTCH_API_KEY": api.headers["X-Api-Key"]},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)[0]["mem_used_bytes"] >= 150 * MIB

    totals = api.get("/v1/metrics").json()["data"]
    assert totals["counts"]["running"] == 1 and totals["usage"]["sandboxes"] == 1
    assert totals["usage"]["mem_used_bytes"] >= 150 * MIB
    series = api.get("/v1/metrics/timeseries").json()["data"]["samples"]
    assert len(series) >= 5

    bad = api.get(f"/v1/sandboxes/{box['id']}/metrics/timeseries", params={"since": "soon"})
    assert bad.status_code == 400 and "since" in bad.json()["data"]
    api.delete(f"/v1/sandboxes/{box['id']}")


def test_another_users_sandbox_has_no_metrics_for_you(
    server: HutchProcess, api: httpx.Client
) -> None:
    box = create(api)
    until(api, box, lambda m: True, "a first sample")
    with server.client(key(server, "nosy")) as other:
        assert other.get(f"/v1/sandboxes/{box['id']}/metrics").status_code == 404
        assert other.get(f"/v1/sandboxes/{box['id']}/metrics/timeseries").status_code == 404
        assert other.get("/v1/metrics").json()["data"]["usage"] is None
    api.delete(f"/v1/sandboxes/{box['id']}")
