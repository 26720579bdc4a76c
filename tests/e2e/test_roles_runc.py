"""The two roles as separate processes: ``hutch agent`` and ``hutch control --workers 2``,
and ``hutch serve`` supervising both while its children are killed under traffic."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_faults_runc import Traffic
from tests.e2e.test_sandboxes_runc import leftovers, new_pool, runc_server, sh
from tests.support.server import _env, remove_instance, run_cli

SHAPE = {"shape": "s-1vcpu-256mb"}
_CONTROL_LINE = re.compile(r"hutch control is serving on (http://\S+)")


class Roles:
    """``hutch agent`` and ``hutch control --workers 2`` started on their own."""

    def __init__(self, home: Path, images: Path) -> None:
        self.home = home
        self.env = _env(home, {"HUTCH_DRIVER": "runc", "HUTCH_IMAGES_DIR": str(images),
                               "HUTCH_LINK_POOL": new_pool(), "HUTCH_AUTO_PAUSE_MIN_S": "1",
                               "HUTCH_MONITOR_INTERVAL_S": "0.5"})  # fmt: skip
        self.agent = self._start("agent")
        self.control = self._start("control", "--workers", "2", "--port", "0")
        self.url = ""
        assert self.control.stdout is not None
        for line in self.control.stdout:
            if match := _CONTROL_LINE.search(line):
                self.url = match.group(1)
                break
        assert self.url, "hutch control printed no URL"
        threading.Thread(target=self.control.stdout.read, daemon=True).start()

    def _start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "hutch", *args, "--log-level", "warning"],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def stop(self) -> None:
        for process in (self.control, self.agent):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def roles(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[Roles]:
    started = Roles(tmp_path_factory.mktemp("roles") / "home", images)
    try:
        yield started
    finally:
        started.stop()
        remove_instance(started.home)


def answered_by_each_worker(url: str, key: str, path: str, workers: int = 2) -> dict[str, int]:
    """One request per new connection until every worker has answered one; the status each
    worker gave (the kernel spreads connections, so this takes a few tries)."""
    statuses: dict[str, int] = {}
    for _ in range(400):
        with httpx.Client(base_url=url, headers={"X-Api-Key": key}, timeout=30) as fresh:
            answer = fresh.get(path)
        worker = answer.headers["x-hutch-worker"]
        statuses.setdefault(worker, answer.status_code)
        assert statuses[worker] == answer.status_code, (worker, answer.text)
        if len(statuses) == workers:
            return statuses
    raise AssertionError(f"only workers {sorted(statuses)} answered")


def test_create_exec_stream_files_pause_delete_through_two_workers_and_an_agent(
    roles: Roles,
) -> None:
    key = run_cli(roles.home, "keys", "create", "--user", "ria").stdout.strip()
    with httpx.Client(base_url=roles.url, headers={"X-Api-Key": key}, timeout=60) as api:
        created = api.post("/v1/sandboxes", json={**SHAPE, "name": "split-box"})
        assert created.status_code == 201, created.text
        box = created.json()["data"]
        assert answered_by_each_worker(roles.url, key, f"/v1/sandboxes/{box['id']}") == {
            worker: 200 for worker in answered_by_each_worker(roles.url, key, "/v1/whoami")
        }
        assert sh(api, box, "hostname")["stdout"] == "split-box\n"

        # The stream is passed on as it is made: the first line arrives while the command
        # still waits for a file that only a second exec creates.
        script = "echo first; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo second"
        with api.stream("POST", f"/v1/sandboxes/{box['id']}/exec",
                        json={"cmd": script, "stream": True}) as stream:  # fmt: skip
            lines = stream.iter_lines()
            assert json.loads(next(lines)) == {"stdout": "first\n"}
            assert sh(api, box, "touch /tmp/go")["exit_code"] == 0
            rest = [json.loads(line) for line in lines if line]
        assert [f for f in rest if "hb" not in f] == [{"stdout": "second\n"}, {"exit_code": 0}]

        payload = bytes(range(256)) * 12_000  # 3 MB, every byte value
        put = api.put(f"/v1/sandboxes/{box['id']}/files", params={"path": "/data/blob"},
                      content=payload)  # fmt: skip
        assert put.status_code == 200, put.text
        got = api.get(f"/v1/sandboxes/{box['id']}/files", params={"path": "/data/blob"})
        assert got.status_code == 200 and got.content == payload

        assert api.post(f"/v1/sandboxes/{box['id']}/pause").status_code == 202
        assert api.get(f"/v1/sandboxes/{box['id']}").json()["data"]["status"] == "paused"
        assert api.post(f"/v1/sandboxes/{box['id']}/resume").status_code == 202
        assert sh(api, box, "cat /tmp/go && echo back")["stdout"] == "back\n"

        deleted = api.delete(f"/v1/sandboxes/{box['id']}")
        assert deleted.json()["data"] == {"id": box["id"], "status": "destroyed"}
        assert api.get(f"/v1/sandboxes/{box['id']}").json()["data"]["status"] == "destroyed"
    assert leftovers(roles.home)["runc"] == []


def test_a_revoked_key_fails_at_every_worker_on_its_next_request(roles: Roles) -> None:
    key = run_cli(roles.home, "keys", "create", "--user", "sol").stdout.strip()
    with httpx.Client(base_url=roles.url, headers={"X-Api-Key": key}, timeout=60) as api:
        created = api.post("/v1/sandboxes", json=SHAPE)
        assert created.status_code == 201, created.text
    box = f"/v1/sandboxes/{created.json()['data']['id']}"
    before = answered_by_each_worker(roles.url, key, "/v1/whoami")
    assert set(before.values()) == {200}  # each worker has now seen (and kept) the key
    # ... and its answer to a read of the sandbox (a worker keeps it while nothing changes)
    assert answered_by_each_worker(roles.url, key, box) == before
    assert answered_by_each_worker(roles.url, key, box) == before
    run_cli(roles.home, "keys", "revoke", key)
    assert answered_by_each_worker(roles.url, key, "/v1/whoami") == {w: 401 for w in before}
    assert answered_by_each_worker(roles.url, key, box) == {w: 401 for w in before}
    admin = run_cli(roles.home, "keys", "create", "--user", "sol").stdout.strip()
    with httpx.Client(base_url=roles.url, headers={"X-Api-Key": admin}, timeout=60) as api:
        assert api.delete(box).status_code == 200


def test_execs_run_by_workers_keep_a_sandbox_awake_and_a_paused_one_is_woken(
    roles: Roles,
) -> None:
    """A worker runs an exec of a running sandbox itself; the agent, which auto-pauses
    idle sandboxes, still hears of each one. A paused sandbox's exec is the agent's (here,
    it wakes the sandbox: auto_resume)."""
    key = run_cli(roles.home, "keys", "create", "--user", "ivy").stdout.strip()
    with httpx.Client(base_url=roles.url, headers={"X-Api-Key": key}, timeout=60) as api:
        created = api.post("/v1/sandboxes", json={**SHAPE, "auto_pause_after_seconds": 3,
                                                  "auto_resume": True})  # fmt: skip
        assert created.status_code == 201, created.text
        box = created.json()["data"]
        url = f"/v1/sandboxes/{box['id']}"
        busy_until = time.monotonic() + 8  # well past the idle limit, never 3 s idle
        while time.monotonic() < busy_until:
            with httpx.Client(base_url=roles.url, headers={"X-Api-Key": key}) as fresh:
                answer = fresh.post(f"{url}/exec", json={"cmd": "sleep 0.3; echo busy"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["data"]["result"]["stdout"] == "busy\n"
            assert api.get(url).json()["data"]["status"] == "running"
            time.sleep(0.5)
        deadline = time.monotonic() + 30
        while api.get(url).json()["data"]["status"] != "paused":
            assert time.monotonic() < deadline, "an idle sandbox was never paused"
            time.sleep(0.2)
        woken = api.post(f"{url}/exec", json={"cmd": "echo awake"})
        assert woken.status_code == 200, woken.text
        assert woken.json()["data"]["result"]["stdout"] == "awake\n"
        assert api.get(url).json()["data"]["status"] == "running"
        assert api.patch(url, json={"auto_resume": False}).status_code == 200
        assert api.post(f"{url}/pause").status_code == 202
        refused = api.post(f"{url}/exec", json={"cmd": "true"})
        assert refused.status_code == 409 and "paused" in refused.text, refused.text
        assert api.delete(url).status_code == 200


def test_a_workers_plain_exec_answers_as_the_app_does(roles: Roles) -> None:
    """A worker answers a plain exec (an ``X-Api-Key``, a JSON body, no stream) without
    the framework (hutch.roles.exec_answer); the same request with the key as a Bearer
    token goes through the app. Both answer alike: the same body (but for its timing),
    the same headers, the same envelope for what the service refuses, and the app keeps
    answering what the plain path leaves to it (a body the model refuses)."""
    key = run_cli(roles.home, "keys", "create", "--user", "pia").stdout.strip()
    plain = httpx.Client(base_url=roles.url, headers={"X-Api-Key": key}, timeout=60)
    framed = httpx.Client(base_url=roles.url, headers={"Authorization": f"Bearer {key}"},
                          timeout=60)  # fmt: skip
    with plain, framed:
        created = plain.post("/v1/sandboxes", json=SHAPE)
        assert created.status_code == 201, created.text
        url = f"/v1/sandboxes/{created.json()['data']['id']}/exec"
        command = {"cmd": "printf 'h\u00e9\\n'; echo oops >&2; exit 3", "env": {"A": "1"}}
        # A worker's first request with a key reads the key from the store (the app); the
        # next ones, on the same connection, are the plain path's while nothing commits.
        for attempt in range(5):
            answers = [client.post(url, json=command, headers={"X-Request-ID": f"req-{n}"})
                       for n, client in enumerate((plain, framed))]  # fmt: skip
            for n, answer in enumerate(answers):
                assert answer.status_code == 200, answer.text
                assert answer.headers["x-request-id"] == f"req-{n}"
                assert answer.headers["content-type"] == "application/json"
            bodies = [answer.json() for answer in answers]
            for body in bodies:
                assert isinstance(body["data"].pop("exec_ms"), int)
            assert bodies[0] == bodies[1] == {
                "status": "success",
                "data": {"result": {"stdout": "h\u00e9\n", "stderr": "oops\n",
                                    "exit_code": 3, "error": None}},
            }, attempt  # fmt: skip
            assert {k for k in answers[0].headers if k != "date"} == {
                k for k in answers[1].headers if k != "date"
            }

        refused = [
            client.post(path, json=body)
            for path, body in (
                (url, {"cmd": "true", "timeout_secs": 10**9}),  # the service refuses it
                ("/v1/sandboxes/no-such-box/exec", {"cmd": "true"}),  # no such sandbox
                (url, {"cmd": "true", "colour": "red"}),  # the model refuses it: the app's
            )
            for client in (plain, framed)
        ]
        for first, second in zip(refused[::2], refused[1::2], strict=True):
            assert first.status_code == second.status_code != 200, first.text
            assert first.json() == second.json(), (first.text, second.text)
            assert first.json()["status"] == "fail"
        assert [r.status_code for r in refused[::2]] == [400, 404, 400]
        assert "colour" in refused[4].json()["data"]
        assert plain.delete(url.removesuffix("/exec")).status_code == 200


def _children(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _agent_and_workers(home: Path, supervisor: int) -> tuple[int, list[int]]:
    """The agent (its pid as it wrote it in run/agent.json) and the workers: the
    supervisor's other children; waits until the supervisor has all three again."""
    deadline = time.monotonic() + 120
    while True:
        try:
            agent = json.loads((home / "run" / "agent.json").read_text())["pid"]
        except (OSError, ValueError):
            agent = None
        children = {c for c in _children(supervisor) if _alive(c)}
        if agent in children and len(children) == 3:
            return agent, sorted(children - {agent})
        assert time.monotonic() < deadline, (agent, children)
        time.sleep(0.2)


def test_kill_9_of_a_worker_and_of_the_agent_under_traffic_loses_no_2xx(
    tmp_path: Path, images: Path
) -> None:
    home = tmp_path / "home"
    server = runc_server(home, images, env={"HUTCH_WORKERS": "2"})
    try:
        key = server.new_key("kai")
        with server.client(key) as api:
            network = api.post("/v1/networks", json={"name": "kill-net"}).json()["data"]["id"]
        agent, workers = _agent_and_workers(home, server.proc.pid)
        traffic = Traffic(server.url, key, network)
        with traffic:
            deadline = time.monotonic() + 60
            while len(traffic.created) < 4 and time.monotonic() < deadline:
                time.sleep(0.1)
            subprocess.run(["kill", "-9", str(workers[0])], check=True)
            time.sleep(1.0)
            subprocess.run(["kill", "-9", str(agent)], check=True)
            count = len(traffic.created)
            deadline = time.monotonic() + 90
            while len(traffic.created) < count + 3 and time.monotonic() < deadline:
                time.sleep(0.2)  # the supervisor brings both back; creates succeed again
        assert len(traffic.created) >= count + 3, "no create succeeded after the kills"
        new_agent, new_workers = _agent_and_workers(home, server.proc.pid)
        assert new_agent != agent and workers[0] not in new_workers
        with server.client(key) as api:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # in-flight steps settle after adoption
                boxes = api.get("/v1/sandboxes", params={"limit": 500}).json()["data"]["data"]
                if {b["status"] for b in boxes} <= {"running", "error", "failed", "destroyed"}:
                    break
                time.sleep(0.5)
            for sandbox_id in traffic.created:
                status = api.get(f"/v1/sandboxes/{sandbox_id}").json()["data"]["status"]
                if sandbox_id in traffic.deleted:
                    assert status == "destroyed", sandbox_id
                elif sandbox_id not in traffic.delete_tried:  # answered 201, never deleted
                    assert status == "running", (sandbox_id, status)
                    assert sh(api, {"id": sandbox_id}, "echo alive")["stdout"] == "alive\n"
            members = {
                m["sandbox_id"]
                for m in api.get(f"/v1/networks/{network}").json()["data"]["members"]
            }
            for sandbox_id in traffic.attached - traffic.delete_tried:
                assert sandbox_id in members, sandbox_id
            after = api.get("/v1/sandboxes", params={"limit": 500}).json()["data"]["data"]
            running = sorted(b["id"] for b in after if b["status"] == "running")
            assert sorted(leftovers(home)["runc"]) == running
            for box in after:
                api.delete(f"/v1/sandboxes/{box['id']}")
            assert api.delete(f"/v1/networks/{network}").status_code == 200
        assert not any(leftovers(home).values())
    finally:
        server.stop()
        remove_instance(home)
    assert server.proc.returncode == 0


def test_kill_9_of_the_supervisor_takes_its_children_and_the_next_start_adopts(
    tmp_path: Path, images: Path
) -> None:
    home, pool = tmp_path / "home", new_pool()
    first = runc_server(home, images, pool=pool, env={"HUTCH_WORKERS": "2"})
    try:
        agent, workers = _agent_and_workers(home, first.proc.pid)
        key = first.new_key("lee")
        with first.client(key) as api:
            box = api.post("/v1/sandboxes", json=SHAPE).json()["data"]
    except BaseException:
        first.stop()
        remove_instance(home)
        raise
    first.stop(signal.SIGKILL)
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in (agent, *workers)):
        assert time.monotonic() < deadline, "a child outlived its supervisor"
        time.sleep(0.1)
    second = runc_server(home, images, pool=pool)
    try:
        with second.client(key) as api:
            assert api.get(f"/v1/sandboxes/{box['id']}").json()["data"]["status"] == "running"
            assert sh(api, box, "echo adopted")["stdout"] == "adopted\n"
            api.delete(f"/v1/sandboxes/{box['id']}")
    finally:
        second.stop()
        remove_instance(home)


def test_without_an_agent_workers_answer_reads_and_refuse_the_rest_with_a_503(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    key = run_cli(home, "keys", "create", "--user", "ned").stdout.strip()  # migrates the store
    control = subprocess.Popen(
        [sys.executable, "-m", "hutch", "control", "--workers", "1", "--port", "0",
         "--log-level", "warning"],  # a request is held 1 s (not 15) for the agent, then a 503
        env=_env(home, {"HUTCH_AGENT_WAIT_S": "1"}), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert control.stdout is not None
        url = next(m.group(1) for line in control.stdout if (m := _CONTROL_LINE.search(line)))
        with httpx.Client(base_url=url, timeout=60) as api:
            assert api.get("/v1/shapes").status_code == 200  # the worker's own
            # The lists of networks and disks read only the store: the worker's own too.
            for path in ("/v1/networks", "/v1/disks"):
                listed = api.get(path, headers={"X-Api-Key": key})
                assert listed.status_code == 200, listed.text
                assert listed.json()["data"]["pagination"]["total"] == 0
            refused = api.post("/v1/sandboxes", json=SHAPE)  # held, then refused
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert refused.json()["status"] == "error" and "agent" in refused.json()["message"]
            nullspace = api.get("/nullspace/v1/sandboxes")
            assert nullspace.status_code == 503 and "error" in nullspace.json()
    finally:
        control.send_signal(signal.SIGTERM)
        control.wait(timeout=60)
