"""Snapshots of running sandboxes (issue 16) through a real ``hutch serve`` with runc:
``POST /v1/sandboxes/{id}/snapshot`` makes a ready template of the sandbox's files while
it keeps running; new sandboxes and Dockerfile builds start from it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hutch.sdk import Client, Sandbox, Template
from tests.e2e.test_sandboxes_runc import create, runc_server, sh
from tests.e2e.test_templates_runc import built
from tests.support.server import HutchProcess, remove_instance, run_cli


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    process = runc_server(tmp_path_factory.mktemp("snapshots") / "home", images)
    yield process
    process.stop()
    remove_instance(process.home)


def user_client(server: HutchProcess, name: str) -> httpx.Client:
    key = server.new_key(name)
    return server.client(key)


@pytest.fixture
def api(server: HutchProcess) -> Iterator[httpx.Client]:
    with user_client(server, f"s{time.monotonic_ns()}") as client:
        yield client


def snapshot(api: httpx.Client, sandbox: dict[str, object], name: str) -> dict[str, object]:
    answer = api.post(f"/v1/sandboxes/{sandbox['id']}/snapshot", json={"name": name}, timeout=120)
    assert answer.status_code == 201, answer.text
    data: dict[str, object] = answer.json()["data"]
    return data


def test_a_snapshot_holds_the_files_and_the_source_keeps_running(api: httpx.Client) -> None:
    source = create(api, envs={"SECRET_OF_THE_SOURCE": "s3cret"})
    setup = sh(api, source, "echo written in the sandbox > /root/note.txt && rm /etc/motd && "
                            "mkdir -p /srv/data && seq 1000 > /srv/data/numbers && "
                            "setsid sh -c 'while :; do echo t >> /tmp/ticks; sleep 0.05; done' "
                            "</dev/null >/dev/null 2>&1 &")  # fmt: skip
    assert setup["exit_code"] == 0, setup
    template = snapshot(api, source, "my-snap")
    assert template["status"] == "ready" and template["name"] == "my-snap"
    assert template["base"] == f"snapshot of sandbox {source['id']}"
    assert "SECRET_OF_THE_SOURCE" not in template["env"]

    # The source runs on: its background loop goes on, and it changes files afterwards.
    assert api.get(f"/v1/sandboxes/{source['id']}").json()["data"]["status"] == "running"
    ticks = int(sh(api, source, "wc -l < /tmp/ticks")["stdout"])
    sh(api, source, "sleep 0.3; echo after > /root/after.txt")
    assert int(sh(api, source, "wc -l < /tmp/ticks")["stdout"]) > ticks

    copy = create(api, rootfs="my-snap")
    seen = sh(api, copy, "cat /root/note.txt; wc -l < /srv/data/numbers; "
                         "test -e /etc/motd || echo motd-gone; test -e /root/after.txt || "
                         "echo no-later-writes; echo \"[$SECRET_OF_THE_SOURCE]\"")  # fmt: skip
    assert seen["stdout"].splitlines() == [
        "written in the sandbox", "1000", "motd-gone", "no-later-writes", "[]"
    ]  # fmt: skip

    # A snapshot of the copy stacks on the first one: both sets of changes are there.
    sh(api, copy, "echo second > /root/second.txt")
    again = snapshot(api, copy, "my-snap-2")
    third = create(api, rootfs=again["id"])
    assert sh(api, third, "cat /root/note.txt /root/second.txt")["stdout"] == (
        "written in the sandbox\nsecond\n"
    )
    # The name again is a new version, and creates take the newest.
    sh(api, source, "echo v2 > /root/note.txt")
    newer = snapshot(api, source, "my-snap")
    assert newer["version"] == int(str(template["version"])) + 1
    assert sh(api, create(api, rootfs="my-snap"), "cat /root/note.txt")["stdout"] == "v2\n"


def test_a_paused_sandbox_is_snapshot_and_stays_paused(api: httpx.Client) -> None:
    box = create(api)
    sh(api, box, "echo paused > /root/p.txt")
    assert api.post(f"/v1/sandboxes/{box['id']}/pause").status_code == 202
    template = snapshot(api, box, "from-paused")
    assert api.get(f"/v1/sandboxes/{box['id']}").json()["data"]["status"] == "paused"
    assert sh(api, create(api, rootfs=template["id"]), "cat /root/p.txt")["stdout"] == "paused\n"


def test_a_dockerfile_builds_on_a_snapshot(api: httpx.Client) -> None:
    box = create(api)
    sh(api, box, "echo from the snapshot > /opt/base.txt")
    snapshot(api, box, "snap-base")
    template = built(api, "on-snap", "FROM snap-base\nRUN cat /opt/base.txt > /opt/built.txt\n")
    assert template["status"] == "ready"
    seen = sh(api, create(api, rootfs="on-snap"), "cat /opt/base.txt /opt/built.txt")
    assert seen["stdout"] == "from the snapshot\nfrom the snapshot\n"


def test_bad_snapshot_requests_are_clear_errors(api: httpx.Client, server: HutchProcess) -> None:
    box = create(api)
    url = f"/v1/sandboxes/{box['id']}/snapshot"
    bad_name = api.post(url, json={"name": "Not A Name!"})
    assert bad_name.status_code == 400 and "name" in bad_name.json()["data"]
    extra = api.post(url, json={"name": "ok-name", "colour": "red"})
    assert extra.status_code == 400 and "colour" in extra.json()["data"]
    assert api.post(url, json={}).status_code == 400
    with user_client(server, f"other{time.monotonic_ns()}") as other:
        stranger = other.post(url, json={"name": "stolen"})
        assert stranger.status_code == 404, stranger.text
        assert other.get("/v1/templates").json()["data"]["pagination"]["total"] == 0
    api.delete(f"/v1/sandboxes/{box['id']}")
    gone = api.post(url, json={"name": "too-late"})
    assert gone.status_code in (404, 409) and gone.json()["status"] == "fail", gone.text
    names = [t["name"] for t in api.get("/v1/templates").json()["data"]["data"]]
    assert names == []


def test_the_sdk_and_the_cli_snapshot_a_sandbox(server: HutchProcess) -> None:
    key = server.new_key(f"c{time.monotonic_ns()}")
    with Client(server.url, key) as client:
        with Sandbox.create(client=client) as source:
            source.files.write("/root/sdk.txt", b"written through the sdk")
            template = source.snapshot("sdk-snap")
            assert isinstance(template, Template)
            assert (template.name, template.status) == ("sdk-snap", "ready")
            with Sandbox.create(client=client, rootfs="sdk-snap") as copy:
                assert copy.files.read_text("/root/sdk.txt") == "written through the sdk"
            done = run_cli(server.home, "sandbox", "snapshot", source.id, "--name", "cli-snap",
                           env={"HUTCH_API_URL": server.url, "HUTCH_API_KEY": key},
                           check=False)  # fmt: skip
            assert done.returncode == 0, done.stderr
            template_id, name, _, version, status = done.stdout.split()
            assert (name, version, status) == ("cli-snap", "1", "ready")
            assert Template.get(template_id, client=client).name == "cli-snap"
        missing = run_cli(server.home, "sandbox", "snapshot", "no-such-box", "--name", "x",
                          env={"HUTCH_API_URL": server.url, "HUTCH_API_KEY": key},
                          check=False)  # fmt: skip
        assert missing.returncode != 0 and "Traceback" not in missing.stderr
