"""Templates (issue 16) on real runc sandboxes through a real ``hutch serve``: a Dockerfile
built step by step in sandboxes (pip from the small internet's pypiserver, through
``HUTCH_BUILD_ENV``), its layers cached, its image used by new sandboxes; logs, cancel,
failures, delete, tenancy, and a server killed mid-build."""

from __future__ import annotations

import base64
import io
import json
import signal
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_faults_runc import leftovers
from tests.e2e.test_sandboxes_runc import create, new_pool, runc_server, sh
from tests.support.internet import Internet
from tests.support.server import HutchProcess, remove_instance

APP = """FROM devbox:1
ARG GREETING=hello
ENV APP_GREETING=$GREETING APP_MODE=test
RUN useradd --create-home --uid 1500 app
RUN pip install --break-system-packages hutch-hello==1.0.0
WORKDIR /srv/app
COPY --chown=app:app src/ ./
COPY notes.txt /opt/notes/
USER app
CMD ["/bin/sh", "-c", "echo started as $(id -un) in $(pwd) > /tmp/started; exec sleep 100000"]
"""


def context(files: dict[str, bytes]) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            archive.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()


STATUSES = ("creating", "running", "pausing", "paused", "resuming", "forking", "error",
            "destroying", "destroyed", "failed")  # fmt: skip

APP_CONTEXT = {
    "src/main.py": b"from hutch_hello import hello\nprint(hello())\n",
    "src/run.sh": b"#!/bin/sh\npython3 main.py\n",
    "notes.txt": b"kept\n",
    "unused.txt": b"not copied\n",
}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, images: Path, internet: Internet
) -> Iterator[HutchProcess]:
    build_env = {
        "PIP_INDEX_URL": internet.pypi_index,
        "PIP_TRUSTED_HOST": "pypi.test",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    process = runc_server(
        tmp_path_factory.mktemp("templates") / "home",
        images,
        env={
            "HUTCH_EGRESS_DEFAULT": "closed",  # the builds pass only because they run open
            "HUTCH_DNS_UPSTREAM": internet.resolver,
            "HUTCH_BUILD_ENV": ",".join(f"{k}={v}" for k, v in build_env.items()),
            "HUTCH_TEMPLATE_MAX_CONTEXT_BYTES": str(64 * 1024),
            "HUTCH_TEMPLATE_BUILD_SHAPE": "s-1vcpu-512mb",
        },
    )
    yield process
    process.stop()
    remove_instance(process.home)


def user_key(server: HutchProcess, name: str) -> str:
    return server.new_key(name)


@pytest.fixture
def api(server: HutchProcess) -> Iterator[httpx.Client]:
    with server.client(user_key(server, f"t{time.monotonic_ns()}")) as client:
        yield client


def submit(api: httpx.Client, name: str, dockerfile: str, **extra: Any) -> dict[str, Any]:
    answer = api.post("/v1/templates", json={"name": name, "dockerfile": dockerfile, **extra})
    assert answer.status_code == 201, answer.text
    data: dict[str, Any] = answer.json()["data"]
    assert data["status"] == "pending"
    return data


def follow(api: httpx.Client, template_id: str) -> list[dict[str, Any]]:
    """Every frame of the follow stream, to its end."""
    with api.stream(
        "GET", f"/v1/templates/{template_id}/logs", params={"follow": "true"}, timeout=600
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in stream.iter_lines() if line]


def built(api: httpx.Client, name: str, dockerfile: str, **extra: Any) -> dict[str, Any]:
    template = submit(api, name, dockerfile, **extra)
    frames = follow(api, template["id"])
    assert frames[-1] == {"final": True, "status": "ready"}, frames[-12:]
    data: dict[str, Any] = api.get(f"/v1/templates/{template['id']}").json()["data"]
    return data


def gone(home: Path, keep: list[str] | None = None) -> None:
    """Wait until the host runs no sandbox of ``home`` but ``keep`` (a build's sandboxes
    are not in the user's list: the host is where to look)."""
    deadline = time.monotonic() + 120
    while (running := leftovers(home)["runc"]) != (keep or []):
        assert time.monotonic() < deadline, running
        time.sleep(0.2)


def wait_for(api: httpx.Client, template_id: str, *statuses: str) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        data: dict[str, Any] = api.get(f"/v1/templates/{template_id}").json()["data"]
        if data["status"] in statuses:
            return data
        time.sleep(0.2)
    raise AssertionError(f"{template_id} never became {statuses}")


def test_a_sandbox_from_a_template_has_its_files_env_user_workdir_and_start_command(
    api: httpx.Client, server: HutchProcess
) -> None:
    template = built(api, "app", APP, context=context(APP_CONTEXT))
    assert template["steps_total"] == 4 and template["steps_cached"] == 0
    assert template["env"] == {"APP_GREETING": "hello", "APP_MODE": "test"}
    assert (template["workdir"], template["user"]) == ("/srv/app", "app")
    assert template["start_cmd"][:2] == ["/bin/sh", "-c"]
    assert template["ext4_size_bytes"] > 0 and template["built_at"]
    text = api.get(f"/v1/templates/{template['id']}/logs")
    assert text.headers["content-type"].startswith("text/plain")
    installed = [line for line in text.text.splitlines() if "Successfully installed" in line]
    assert "hutch-hello-1.0.0" in installed[0], text.text  # pip's own output
    assert "4 filesystem steps: 0 cached, 4 run" in text.text

    box = create(api, rootfs="app")
    assert box["rootfs"] == template["id"]
    out = sh(
        api,
        box,
        'id -un; pwd; echo "$APP_GREETING $APP_MODE $HOME"; sh run.sh; '
        "stat -c '%U %a %n' main.py run.sh; cat /opt/notes/notes.txt; "
        "ls /srv/app; ls /opt/notes",
    )
    assert out["exit_code"] == 0, out
    assert out["stdout"].splitlines() == [
        "app",
        "/srv/app",
        "hello test /home/app",
        "hutch-hello and hutch-dep says hi",  # the package pip installed at build time
        "app 644 main.py",
        "app 755 run.sh",
        "kept",
        "main.py",
        "run.sh",
        "notes.txt",
    ]
    deadline = time.monotonic() + 30
    started = sh(api, box, "cat /tmp/started")
    while started["exit_code"] != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        started = sh(api, box, "cat /tmp/started")
    assert started["stdout"] == "started as app in /srv/app\n"
    # The build's own sandboxes are gone from the host (destroyed once it was ready).
    gone(server.home, keep=[box["id"]])
    api.delete(f"/v1/sandboxes/{box['id']}")


def test_a_rebuild_reruns_nothing_and_a_changed_last_line_reruns_one_step(
    api: httpx.Client,
) -> None:
    dockerfile = (
        "FROM devbox:1\nRUN echo one > /one\nRUN echo two > /two\nRUN echo three > /three\n"
    )
    first = built(api, "cached", dockerfile)
    assert (first["steps_total"], first["steps_cached"]) == (3, 0)
    again = built(api, "cached", dockerfile)
    assert (again["version"], again["steps_cached"]) == (2, 3)
    log = api.get(f"/v1/templates/{again['id']}/logs").text
    assert log.count(" ---> cached") == 3 and "3 cached, 0 run" in log
    changed = built(api, "cached", dockerfile.replace("echo three", "echo THREE"))
    assert (changed["version"], changed["steps_cached"]) == (3, 2)
    assert "2 cached, 1 run" in api.get(f"/v1/templates/{changed['id']}/logs").text
    # Creates use the newest ready version.
    box = create(api, rootfs="cached")
    assert box["rootfs"] == changed["id"]
    assert sh(api, box, "cat /one /two /three")["stdout"] == "one\ntwo\nTHREE\n"
    api.delete(f"/v1/sandboxes/{box['id']}")


def test_a_failing_run_fails_the_build_with_its_last_lines(api: httpx.Client) -> None:
    template = submit(api, "broken", "FROM devbox:1\nRUN echo first line; echo the end; exit 3\n")
    frames = follow(api, template["id"])
    assert frames[-1] == {"final": True, "status": "failed"}
    lines = [frame["line"] for frame in frames[:-1]]
    assert "the end" in lines and all(frame["attempt"] == 1 for frame in frames[:-1])
    failed = api.get(f"/v1/templates/{template['id']}").json()["data"]
    assert failed["status"] == "failed"
    assert "exit code 3" in failed["reason"] and "the end" in failed["reason"]
    assert "line 2" in failed["reason"]
    refused = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb", "rootfs": "broken"})
    assert refused.status_code == 404, refused.text


def test_cancel_stops_a_build_and_leaves_no_sandbox(
    api: httpx.Client, server: HutchProcess
) -> None:
    template = submit(api, "slow", "FROM devbox:1\nRUN echo sleeping; sleep 600\n")
    deadline = time.monotonic() + 120
    while "sleeping" not in api.get(f"/v1/templates/{template['id']}/logs").text.splitlines():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    answer = api.post(f"/v1/templates/{template['id']}/cancel")
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["status"] == "cancelled"
    assert follow(api, template["id"])[-1] == {"final": True, "status": "cancelled"}
    assert api.post(f"/v1/templates/{template['id']}/cancel").status_code == 409
    gone(server.home)


def test_deleting_a_template_keeps_its_sandboxes_and_refuses_new_creates(
    api: httpx.Client,
) -> None:
    template = built(api, "doomed", "FROM devbox:1\nRUN echo kept > /marker\n")
    running, paused = create(api, rootfs="doomed"), create(api, rootfs=template["id"])
    assert api.post(f"/v1/sandboxes/{paused['id']}/pause").status_code in (200, 202)
    assert api.delete("/v1/templates/doomed").json() == {"status": "success", "data": {"ok": True}}
    assert api.get(f"/v1/templates/{template['id']}").status_code == 404
    for rootfs in ("doomed", template["id"]):
        answer = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb", "rootfs": rootfs})
        assert answer.status_code == 404, answer.text
    assert sh(api, running, "cat /marker")["stdout"] == "kept\n"
    assert api.post(f"/v1/sandboxes/{paused['id']}/resume").status_code in (200, 202)
    assert sh(api, paused, "cat /marker")["stdout"] == "kept\n"
    for box in (running, paused):
        api.delete(f"/v1/sandboxes/{box['id']}")


def test_another_users_template_is_missing_to_them(server: HutchProcess) -> None:
    with (
        server.client(user_key(server, "tpl-alice")) as alice,
        server.client(user_key(server, "tpl-bob")) as bob,
    ):
        mine = built(alice, "private", "FROM devbox:1\nRUN echo secret > /secret\n")
        for ident in (mine["id"], "private"):
            theirs = bob.get(f"/v1/templates/{ident}")
            missing = bob.get("/v1/templates/no-such-template")
            assert theirs.status_code == missing.status_code == 404
            assert bob.get(f"/v1/templates/{ident}/logs").status_code == 404
            assert bob.post(f"/v1/templates/{ident}/cancel").status_code == 404
            assert bob.delete(f"/v1/templates/{ident}").status_code == 404
            create_theirs = bob.post(
                "/v1/sandboxes", json={"shape": "s-1vcpu-256mb", "rootfs": ident}
            )
            nothing = {"shape": "s-1vcpu-256mb", "rootfs": "nothing-here"}
            create_missing = bob.post("/v1/sandboxes", json=nothing)
            assert create_theirs.status_code == create_missing.status_code == 404
            assert create_theirs.json()["data"]["rootfs"].replace(ident, "X") == (
                create_missing.json()["data"]["rootfs"].replace("nothing-here", "X")
            )
            body = {"name": "copy", "dockerfile": f"FROM {ident}\n"}
            from_theirs = bob.post("/v1/templates", json=body)
            assert from_theirs.status_code == 400
            assert "line 1" in from_theirs.json()["data"]["dockerfile"]
        assert bob.get("/v1/templates").json()["data"]["pagination"]["total"] == 0
        # The layer cache is per user: the same Dockerfile builds afresh for another.
        same = built(bob, "private", "FROM devbox:1\nRUN echo secret > /secret\n")
        assert (same["steps_total"], same["steps_cached"]) == (1, 0)
        assert alice.get("/v1/templates/private").json()["data"]["status"] == "ready"
        # The owner builds on it.
        child = built(alice, "child", "FROM private\nRUN cat /secret > /copied\n")
        box = create(alice, rootfs="child")
        assert sh(alice, box, "cat /copied")["stdout"] == "secret\n"
        alice.delete(f"/v1/sandboxes/{box['id']}")
        assert child["base"] == "private"


def test_bad_input_is_a_400_naming_the_line(api: httpx.Client) -> None:
    cases = {
        "FROM devbox:1\nRUN true\nFROM node\n": "line 3",
        "FROM devbox:1\nCOPY --from=builder /a /b\n": "line 2",
        "FROM devbox:1\n\nHEALTHCHECK CMD true\n": "line 3",
        "RUN true\n": "line 1",
        "FROM devbox:1\nCOPY missing.txt /x\n": "line 2",
        "FROM no-such-image\n": "line 1",
        "FROM devbox:1\nSHELL bash\n": "line 2",
        "FROM devbox:1\nADD https://example.com/x /x\n": "line 2",
    }
    for dockerfile, where in cases.items():
        answer = api.post("/v1/templates", json={"name": "bad", "dockerfile": dockerfile})
        assert answer.status_code == 400, (dockerfile, answer.text)
        assert answer.json()["status"] == "fail"
        assert where in answer.json()["data"]["dockerfile"], (dockerfile, answer.text)
    deep = "FROM devbox:1\n" + "RUN true\n" * 61
    answer = api.post("/v1/templates", json={"name": "deep", "dockerfile": deep})
    assert answer.status_code == 400 and "at most 60" in answer.json()["data"]["dockerfile"]
    big = "FROM devbox:1\n" + "RUN true\n" * 8000
    assert api.post("/v1/templates", json={"name": "big", "dockerfile": big}).status_code == 400
    too_much = context({"blob": bytes(100 * 1024)})
    answer = api.post(
        "/v1/templates", json={"name": "ctx", "dockerfile": "FROM devbox:1\n", "context": too_much}
    )
    assert answer.status_code == 413 and "context" in answer.json()["data"]
    not_archive = base64.b64encode(b"just some bytes").decode()
    answer = api.post(
        "/v1/templates",
        json={"name": "ctx", "dockerfile": "FROM devbox:1\n", "context": not_archive},
    )
    assert answer.status_code == 400 and "context" in answer.json()["data"]
    answer = api.post(
        "/v1/templates", json={"name": "x", "dockerfile": "FROM devbox:1\n", "colour": "red"}
    )
    assert answer.status_code == 400 and "colour" in answer.json()["data"]
    assert api.get("/v1/templates").json()["data"]["pagination"]["total"] == 0


def test_a_server_killed_mid_build_fails_the_build_and_leaves_no_sandbox(
    tmp_path: Path, images: Path
) -> None:
    home, pool = tmp_path / "home", new_pool()
    first = runc_server(home, images, pool=pool)
    key = first.new_key("kim")
    try:
        with first.client(key) as api:
            template = submit(api, "killed", "FROM devbox:1\nRUN echo working; sleep 600\n")
            deadline = time.monotonic() + 120
            log = f"/v1/templates/{template['id']}/logs"
            while "working" not in api.get(log).text.splitlines():
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert leftovers(home)["runc"]  # the build's sandbox runs
        first.stop(signal.SIGKILL)
        second = runc_server(home, images, pool=pool)
        try:
            with second.client(key) as api:
                after = api.get(f"/v1/templates/{template['id']}").json()["data"]
                assert after["status"] == "failed"
                assert "server stopped during the build" in after["reason"]
                assert follow(api, template["id"])[-1] == {"final": True, "status": "failed"}
                body = {"shape": "s-1vcpu-256mb", "rootfs": "killed"}
                assert api.post("/v1/sandboxes", json=body).status_code == 404
            assert leftovers(home)["runc"] == []
            assert not list((home / "layers").glob("*.partial"))
        finally:
            second.stop()
    finally:
        first.stop()
        remove_instance(home)


def test_at_most_two_builds_per_user_run_at_once_the_rest_wait_pending(
    api: httpx.Client,
) -> None:
    nonce = time.monotonic_ns()
    made = [
        submit(api, f"queued-{i}", f"FROM devbox:1\nRUN sleep 2; echo {nonce}-{i}\n")
        for i in range(3)
    ]
    seen_building = 0
    done: list[dict[str, Any]] = []
    while len(done) < 3:
        listed = api.get("/v1/templates").json()["data"]["data"]
        mine = [t for t in listed if t["name"].startswith("queued-")]
        building = [t for t in mine if t["status"] == "building"]
        assert len(building) <= 2, mine
        seen_building = max(seen_building, len(building))
        done = [t for t in mine if t["status"] == "ready"]
        time.sleep(0.1)
    assert seen_building >= 1
    first, second, third = (api.get(f"/v1/templates/{t['id']}").json()["data"] for t in made)
    # The third started only once one of the first two had finished.
    assert third["started_at"] >= min(first["built_at"], second["built_at"])


def test_logs_by_attempt(api: httpx.Client) -> None:
    template = built(api, "attempts", "FROM devbox:1\nRUN echo only once\n")
    url = f"/v1/templates/{template['id']}/logs"
    every = api.get(url).text
    assert api.get(url, params={"attempt": 1}).text == every and "only once" in every
    assert api.get(url, params={"attempt": 2}).text == ""
    with api.stream("GET", url, params={"follow": "true", "attempt": 2}) as stream:
        frames = [json.loads(line) for line in stream.iter_lines() if line]
    assert frames == [{"final": True, "status": "ready"}]
    assert api.get(url, params={"attempt": 0}).status_code == 400


def test_the_size_cap_the_build_timeout_and_the_templates_cap(tmp_path: Path, images: Path) -> None:
    env = {
        "HUTCH_TEMPLATE_MAX_BYTES": str(1 << 20),
        "HUTCH_TEMPLATE_BUILD_TIMEOUT_S": "5",
        "HUTCH_TEMPLATE_MAX_PER_USER": "3",
    }
    limited = runc_server(tmp_path / "home", images, env=env)
    try:
        with limited.client(user_key(limited, "capped")) as api:
            big = submit(api, "big", "FROM devbox:1\nRUN head -c 3000000 /dev/urandom > /blob\n")
            slow = submit(api, "slow", "FROM devbox:1\nRUN sleep 600\n")
            for template, why in (
                (big, "HUTCH_TEMPLATE_MAX_BYTES"),
                (slow, "HUTCH_TEMPLATE_BUILD_TIMEOUT_S"),
            ):
                assert follow(api, template["id"])[-1] == {"final": True, "status": "failed"}
                reason = api.get(f"/v1/templates/{template['id']}").json()["data"]["reason"]
                assert why in reason, reason
            submit(api, "third", "FROM devbox:1\n")
            over = api.post(
                "/v1/templates", json={"name": "fourth", "dockerfile": "FROM devbox:1\n"}
            )
            assert over.status_code == 403, over.text
            assert "HUTCH_TEMPLATE_MAX_PER_USER" in over.json()["data"]["quota"]
            gone(limited.home)
    finally:
        limited.stop()
        remove_instance(limited.home)


def test_a_template_sixty_layers_deep_starts(api: httpx.Client) -> None:
    steps = "".join(f"RUN echo {i} > /layer-{i}\n" for i in range(60))
    template = built(api, "deep", f"FROM devbox:1\n{steps}")
    assert template["steps_total"] == 60
    box = create(api, rootfs="deep")
    out = sh(api, box, "cat /layer-0 /layer-59; ls / | grep -c '^layer-'")
    assert out["stdout"] == "0\n59\n60\n", out
    api.delete(f"/v1/sandboxes/{box['id']}")


def test_each_steps_layer_holds_its_changes_deletes_and_replaced_directories(
    api: httpx.Client,
) -> None:
    """Consecutive steps run in one sandbox; each step's layer is what changed since the one
    before (files, deletions as whiteouts, a directory replaced as opaque), and the stack
    of them is the same filesystem."""
    dockerfile = (
        "FROM devbox:1\n"
        "RUN mkdir -p /d/sub && echo a > /d/a && echo b > /d/sub/b && echo keep > /d/keep\n"
        "RUN rm /d/a && echo changed > /d/keep && rm /etc/debian_version\n"
        "RUN rm -rf /d/sub && mkdir /d/sub && echo new > /d/sub/c\n"
        "RUN sleep 1000 &\n"
        "RUN rm -rf /usr/share/doc && mkdir /usr/share/doc && echo only > /usr/share/doc/only\n"
        "RUN ! pgrep -x sleep && echo more > /usr/share/doc/more && chmod 700 /d\n"
        "RUN ln -s /d/keep /d/link\n"
    )
    check = (
        "ls /d; ls /d/sub; cat /d/keep /d/link; stat -c %a /d; ls /usr/share/doc; "
        "test -e /etc/debian_version || echo no-version"
    )
    expected = "keep\nlink\nsub\nc\nchanged\nchanged\n700\nmore\nonly\nno-version\n"
    template = built(api, "layered", dockerfile)
    assert (template["steps_total"], template["steps_cached"]) == (7, 0)
    box = create(api, rootfs="layered")
    assert sh(api, box, check)["stdout"] == expected
    api.delete(f"/v1/sandboxes/{box['id']}")
    # The same stack with the last step rebuilt alone, over the cached four.
    again = built(api, "layered", dockerfile.replace("echo more", "echo MORE"))
    assert again["steps_cached"] == 5
    box = create(api, rootfs="layered")
    assert sh(api, box, check + "; cat /usr/share/doc/more")["stdout"] == expected + "MORE\n"
    api.delete(f"/v1/sandboxes/{box['id']}")


def test_build_sandboxes_are_not_the_users_nor_counted_toward_their_running_cap(
    tmp_path: Path, images: Path
) -> None:
    """A user at HUTCH_MAX_RUNNING_PER_USER still builds; while the build runs, their list
    shows only their own sandbox and the build's sandbox cannot be read or deleted by id."""
    capped = runc_server(tmp_path / "home", images, env={"HUTCH_MAX_RUNNING_PER_USER": "1"})
    try:
        with capped.client(user_key(capped, "at-cap")) as api:
            mine = create(api)
            over = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
            assert over.status_code == 429, over.text  # the cap is reached
            steps = "FROM devbox:1\nRUN echo building; sleep 4\nRUN echo 2 > /two\n"
            template = submit(api, "while-capped", steps)
            log = f"/v1/templates/{template['id']}/logs"
            deadline = time.monotonic() + 120
            while "building" not in api.get(log).text.splitlines():
                status = api.get(f"/v1/templates/{template['id']}").json()["data"]["status"]
                assert status in ("pending", "building"), api.get(log).text
                assert time.monotonic() < deadline
                time.sleep(0.1)
            building = [box for box in leftovers(capped.home)["runc"] if box != mine["id"]]
            assert len(building) == 1  # the build's sandbox runs on the host...
            every = ",".join(STATUSES)
            for query in ({}, {"status": every}):
                listed = api.get("/v1/sandboxes", params=query).json()["data"]
                assert [box["id"] for box in listed["data"]] == [mine["id"]], listed
                assert listed["pagination"]["total"] == 1
            for answer in (  # ...but is not the user's to see or touch
                api.get(f"/v1/sandboxes/{building[0]}"),
                api.post(f"/v1/sandboxes/{building[0]}/exec", json={"cmd": "true"}),
                api.delete(f"/v1/sandboxes/{building[0]}"),
            ):
                assert answer.status_code == 404, answer.text
            assert follow(api, template["id"])[-1] == {"final": True, "status": "ready"}
            # The build's sandbox goes (after the template is ready: nobody waits for it).
            while leftovers(capped.home)["runc"] != [mine["id"]]:
                assert time.monotonic() < deadline + 60
                time.sleep(0.1)
            # The template's sandboxes are the user's own, counted as any other.
            assert (
                api.post(
                    "/v1/sandboxes", json={"shape": "s-1vcpu-256mb", "rootfs": "while-capped"}
                ).status_code
                == 429
            )
            api.delete(f"/v1/sandboxes/{mine['id']}")
            box = create(api, rootfs="while-capped")
            assert sh(api, box, "cat /two")["stdout"] == "2\n"
    finally:
        capped.stop()
        remove_instance(capped.home)
