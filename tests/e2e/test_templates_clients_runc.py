"""Templates through hutch's own clients (issue 16): the SDK's ``Template.build`` with its
log streamed, and ``hutch template create -f Dockerfile --context DIR --name N --follow``,
``ls``, ``logs``, ``rm`` and ``hutch sandbox create --rootfs NAME``, against a real
``hutch serve`` with runc sandboxes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hutch.sdk import Client, Sandbox, Template, TemplateBuildError, TemplateLogEvent
from tests.e2e.test_cli_client import hutch
from tests.e2e.test_sandboxes_runc import runc_server
from tests.support.server import HutchProcess, remove_instance

DOCKERFILE = """FROM devbox:1
RUN echo "building now"
COPY greeting.txt /etc/greeting
ENV WHO=sdk
CMD ["sh", "-c", "echo up > /tmp/up; exec sleep 100000"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    process = runc_server(tmp_path_factory.mktemp("templates-clients") / "home", images)
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture
def key(server: HutchProcess) -> str:
    return server.new_key(f"c{time.monotonic_ns()}")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "greeting.txt").write_text("hello from the context\n")
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    return tmp_path


def test_the_sdk_builds_a_template_streaming_its_log(
    server: HutchProcess, key: str, project: Path
) -> None:
    lines: list[TemplateLogEvent] = []
    with Client(server.url, key) as client:
        template = Template.build(
            "sdk-web", DOCKERFILE, context_dir=project, on_log=lines.append, client=client
        )
        assert template.status == "ready" and template.info.env == {"WHO": "sdk"}
        texts = [event.line for event in lines]
        assert texts[0] == "Step 1/5 : FROM devbox:1"
        assert "building now" in texts and all(event.attempt == 1 for event in lines)
        assert [t.id for t in Template.list(client=client)] == [template.id]
        with Sandbox.create(rootfs="sdk-web", client=client) as sandbox:
            run = sandbox.commands.run("cat /etc/greeting; echo $WHO")
            assert run.stdout == "hello from the context\nsdk\n"
        again = Template.build("sdk-web", DOCKERFILE, context_dir=project, client=client)
        assert (again.info.version, again.info.steps_cached) == (2, 2)
        with pytest.raises(TemplateBuildError) as failed:
            Template.build("sdk-broken", "FROM devbox:1\nRUN echo oops >&2; false\n", client=client)
        assert failed.value.template.status == "failed"
        assert "oops" in (failed.value.reason or "")
        assert "oops" in Template.get("sdk-broken", client=client).logs()


def test_the_cli_builds_lists_logs_and_removes_templates(
    server: HutchProcess, key: str, project: Path
) -> None:
    made = hutch(
        server,
        key,
        "template",
        "create",
        "-f",
        str(project / "Dockerfile"),
        "--context",
        str(project),
        "--name",
        "cli-web",
        "--follow",
    )
    assert made.returncode == 0, made.stderr
    out = made.stdout.splitlines()
    assert out[0] == "Step 1/5 : FROM devbox:1" and "building now" in out
    assert out[-1].endswith("cli-web version 1: ready")
    listed = json.loads(hutch(server, key, "template", "ls", "--json").stdout)
    assert [(t["name"], t["status"]) for t in listed] == [("cli-web", "ready")]
    assert "building now" in hutch(server, key, "template", "logs", "cli-web").stdout
    box = json.loads(
        hutch(server, key, "sandbox", "create", "--rootfs", "cli-web", "--json").stdout
    )
    assert box["rootfs"] == listed[0]["id"]
    said = hutch(server, key, "exec", box["id"], "--", "cat", "/etc/greeting")
    assert said.stdout == "hello from the context\n"
    assert hutch(server, key, "template", "rm", "cli-web").returncode == 0
    assert hutch(server, key, "template", "ls", "--json").stdout.strip() == "[]"
    missing = hutch(server, key, "template", "get", "cli-web")
    assert missing.returncode != 0 and "hutch template ls" in missing.stderr
    failed = hutch(
        server,
        key,
        "template",
        "create",
        "-f",
        "/dev/stdin",
        "--name",
        "bad",
        "--follow",
        stdin=b"FROM devbox:1\nRUN exit 7\n",
    )
    assert failed.returncode == 1 and "exit code 7" in failed.stderr
    refused = hutch(
        server,
        key,
        "template",
        "create",
        "-f",
        "/dev/stdin",
        "--name",
        "bad",
        stdin=b"FROM devbox:1\nFROM node\n",
    )
    assert refused.returncode != 0 and "line 2" in refused.stderr
    hutch(server, key, "sandbox", "rm", box["id"])
