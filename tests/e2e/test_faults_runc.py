"""Faults: the server killed mid-flight, a sandbox's agent killed, the database locked or
gone, the disk full. After each, what was answered 2xx holds, the rest converges, errors
come in the dialect's envelope, and nothing is left behind."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_sandboxes_runc import create, leftovers, new_pool, runc_server, sh
from tests.support.postgres import PostgresServer
from tests.support.server import HutchProcess, remove_instance, run_cli
from tests.support.wallet import Wallet

SHAPE = {"shape": "s-1vcpu-256mb"}


class Traffic:
    """Clients creating, exec-ing, attaching and deleting at once, remembering every 2xx."""

    def __init__(self, url: str, key: str, network: str) -> None:
        self.url, self.key, self.network = url, key, network
        self.created: list[str] = []
        self.deleted: set[str] = set()
        self.delete_tried: set[str] = set()
        self.attached: set[str] = set()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._loop, args=(job, n), daemon=True)
            for n, job in enumerate(["create", "create", "exec", "attach", "delete"])
        ]

    def _loop(self, job: str, n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(
            base_url=self.url, headers={"X-Api-Key": self.key}, timeout=30, trust_env=False
        ) as http:
            while not self.stop.is_set():
                with self.lock:
                    pool = [i for i in self.created if i not in self.delete_tried]
                target = rng.choice(pool) if pool else None
                try:
                    if job == "create":
                        answer = http.post("/v1/sandboxes", json=SHAPE)
                        if answer.status_code == 201:
                            with self.lock:
                                self.created.append(answer.json()["data"]["id"])
                    elif target and job == "exec":
                        http.post(f"/v1/sandboxes/{target}/exec", json={"cmd": "true"})
                    elif target and job == "attach":
                        answer = http.post(
                            f"/v1/sandboxes/{target}/networks", json={"id": self.network}
                        )
                        if answer.status_code == 200:
                            with self.lock:
                                self.attached.add(target)
                    elif target and job == "delete" and len(pool) > 2:
                        with self.lock:
                            self.delete_tried.add(target)
                        if http.delete(f"/v1/sandboxes/{target}").status_code == 200:
                            with self.lock:
                                self.deleted.add(target)
                    else:
                        time.sleep(0.05)
                except httpx.HTTPError:
                    time.sleep(0.05)

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def test_kill_9_mid_flight_loses_nothing_answered_and_converges(
    tmp_path: Path, images: Path
) -> None:
    home, pool = tmp_path / "home", new_pool()
    first = runc_server(home, images, pool=pool)
    key = first.new_key("dana")
    with first.client(key) as api:
        network = api.post("/v1/networks", json={"name": "busy-net"}).json()["data"]["id"]
    traffic = Traffic(first.url, key, network)
    with traffic:
        deadline = time.monotonic() + 60
        while len(traffic.created) < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(random.Random(7).uniform(0.3, 1.2))
        first.stop(signal.SIGKILL)  # while requests are in flight
    second = runc_server(home, images, pool=pool)
    try:
        with second.client(key) as api:
            boxes = api.get("/v1/sandboxes", params={"limit": 500}).json()["data"]["data"]
            by_id = {box["id"]: box for box in boxes}
            assert len(by_id) == len(boxes)  # nothing twice
            for sandbox_id in traffic.created:
                status = api.get(f"/v1/sandboxes/{sandbox_id}").json()["data"]["status"]
                if sandbox_id in traffic.deleted:
                    assert status == "destroyed", sandbox_id
                elif sandbox_id not in traffic.delete_tried:  # answered 201, never deleted
                    assert status == "running", sandbox_id
                    assert sh(api, {"id": sandbox_id}, "echo alive")["stdout"] == "alive\n"
                else:  # its delete was cut short: either outcome, but a settled one
                    assert status in ("running", "destroyed"), (sandbox_id, status)
            members = {
                m["sandbox_id"]
                for m in api.get(f"/v1/networks/{network}").json()["data"]["members"]
            }
            for sandbox_id in traffic.attached - traffic.delete_tried:
                assert sandbox_id in members, sandbox_id
            # Whatever was in flight has settled, and the host runs exactly what is live.
            after = api.get("/v1/sandboxes", params={"limit": 500}).json()["data"]["data"]
            assert {b["status"] for b in after} <= {"running", "error", "failed", "destroyed"}
            running = sorted(b["id"] for b in after if b["status"] == "running")
            assert sorted(leftovers(home)["runc"]) == running
            for box in after:
                api.delete(f"/v1/sandboxes/{box['id']}")
            assert api.delete(f"/v1/networks/{network}").status_code == 200
        assert not any(leftovers(home).values())
    finally:
        second.stop()
        remove_instance(home)


def test_a_killed_agent_puts_its_sandbox_in_error_and_it_deletes_cleanly(
    tmp_path: Path, images: Path
) -> None:
    home = tmp_path / "home"
    server = runc_server(home, images, env={"HUTCH_MONITOR_INTERVAL_S": "0.2"})
    key = server.new_key("erin")
    try:
        with server.client(key) as api:
            box = create(api)
            url = f"/v1/sandboxes/{box['id']}"
            started = api.post(f"{url}/exec", json={"cmd": "echo kept > /root/note; "
                               "nohup sleep 1000 >/dev/null 2>&1 &"})  # fmt: skip
            assert started.status_code == 200
            init_pid = int((home / "sandboxes" / box["id"] / "init.pid").read_text())
            os.kill(init_pid, signal.SIGKILL)
            for _ in range(100):
                seen = api.get(url).json()["data"]
                if seen["status"] != "running":
                    break
                time.sleep(0.1)
            assert seen["status"] == "error" and "exited" in seen["reason"]
            refused = api.post(f"{url}/exec", json={"cmd": "true"})
            assert refused.status_code == 409 and refused.json()["status"] == "fail"
            # Resume starts it again from its disk: files stay, processes are gone.
            resumed = api.post(f"{url}/resume")
            assert resumed.status_code == 202 and resumed.json()["data"]["status"] == "running"
            again = api.post(f"{url}/exec", json={"cmd": "cat /root/note; pgrep -x sleep "
                             "|| echo no-sleep"}).json()["data"]["result"]  # fmt: skip
            assert again["stdout"] == "kept\nno-sleep\n"
            assert api.get(url).json()["data"]["ip"] == box["ip"]
            assert api.delete(url).status_code == 200
        assert not any(leftovers(home).values())
    finally:
        server.stop()
        remove_instance(home)


def envelopes_when_down(server: HutchProcess, key: str) -> dict[str, Any]:
    """One write per dialect while the store cannot be written."""
    wallet = Wallet.new()
    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:
        createos = http.post(
            "/v1/networks", json={"name": "while-down"}, headers={"X-Api-Key": key}
        )
        nullspace = http.post(
            "/nullspace/v1/sandboxes",
            json={"template": "base"},
            headers={"Authorization": f"Bearer {key}"},
        )
        agent = http.get("/agent/projects", headers=wallet.headers())
    return {"createos": createos, "nullspace": nullspace, "agent": agent}


def check_503s(answers: dict[str, Any]) -> None:
    createos, nullspace, agent = answers["createos"], answers["nullspace"], answers["agent"]
    assert createos.status_code == 503, createos.text
    assert createos.json()["status"] == "error" and "database" in createos.json()["message"]
    assert nullspace.status_code == 503, nullspace.text
    assert nullspace.json()["error"]["code"] == "database_unavailable"
    assert agent.status_code == 503, agent.text
    assert "database" in agent.json()["error"]


def test_a_locked_sqlite_store_answers_503_in_each_dialect_then_recovers(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    server = HutchProcess(
        home, env={"HUTCH_DB_TIMEOUT_S": "1", "HUTCH_DB_LOCK_WAIT_S": "1"}
    ).wait_ready()
    key = server.new_key("finn")
    try:
        locker = sqlite3.connect(home / "hutch.db", timeout=1)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            check_503s(envelopes_when_down(server, key))
        finally:
            locker.rollback()
            locker.close()
        with server.client(key) as api:
            assert api.post("/v1/networks", json={"name": "after-lock"}).status_code == 200
            assert [n["name"] for n in api.get("/v1/networks").json()["data"]["data"]] == [
                "after-lock"
            ]
    finally:
        server.stop()
        remove_instance(home)


@pytest.mark.postgres
def test_postgres_restarted_mid_flight_answers_503_then_serves_again(tmp_path: Path) -> None:
    pg = PostgresServer(Path(tempfile.mkdtemp(prefix="hutch-test-pg-")))
    pg.init()
    pg.start()
    try:
        url = pg.create_database("hutch")
        server = HutchProcess(tmp_path / "home", "--database-url", url).wait_ready()
        key = run_cli(
            server.home, "keys", "create", "--user", "gil", "--database-url", url
        ).stdout.strip()
        try:
            with server.client(key) as api:
                assert api.post("/v1/networks", json={"name": "before"}).status_code == 200
            pg.stop()
            check_503s(envelopes_when_down(server, key))
            pg.start()
            with server.client(key) as api:
                assert api.post("/v1/networks", json={"name": "after"}).status_code == 200
                names = {n["name"] for n in api.get("/v1/networks").json()["data"]["data"]}
                assert names == {"before", "after"}
        finally:
            server.stop()
    finally:
        pg.destroy()


def test_a_full_disk_gives_clear_errors_and_corrupts_nothing(tmp_path: Path, images: Path) -> None:
    home = tmp_path / "small"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(home)], check=True)
    server = None
    try:
        server = runc_server(home / "home", images)
        key = server.new_key("hana")
        with server.client(key) as api:
            kept = create(api, name="before-full")
            sh(api, kept, "echo precious > /root/note")
            assert api.post("/v1/networks", json={"name": "net-before"}).status_code == 200
            filler = home / "filler"
            subprocess.run(
                ["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=100"], capture_output=True
            )
            answers = [
                api.post("/v1/networks", json={"name": f"net-full-{i}"}) for i in range(3)
            ] + [api.post("/v1/sandboxes", json=SHAPE)]
            for answer in answers:
                assert answer.status_code in (503, 507), (
                    answer.text,
                    "\n".join(server.stderr_lines[-8:]),
                )
                assert answer.json()["status"] == "error"
                assert "space" in answer.json()["message"] or "full" in answer.json()["message"]
            filler.unlink()
            assert api.post("/v1/networks", json={"name": "net-after"}).status_code == 200
            names = sorted(n["name"] for n in api.get("/v1/networks").json()["data"]["data"])
            assert names == ["net-after", "net-before"]
            assert sh(api, kept, "cat /root/note")["stdout"] == "precious\n"
            for box in api.get("/v1/sandboxes").json()["data"]["data"]:
                api.delete(f"/v1/sandboxes/{box['id']}")
        check = sqlite3.connect(server.home / "hutch.db")
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        check.close()
    finally:
        if server is not None:
            server.stop()
            remove_instance(server.home)
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", "-l", str(home)], check=True)
