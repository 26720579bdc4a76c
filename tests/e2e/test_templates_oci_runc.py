"""Templates FROM an OCI image of a registry the operator allows (issue 16): a real
registry on loopback (Debian's docker-registry, images pushed with skopeo; see
tests.support.registry), pulled at build time, built on, and run as a sandbox; a registry
not on ``HUTCH_TEMPLATE_REGISTRIES`` is a 400 naming the line."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_sandboxes_runc import create, runc_server, sh
from tests.e2e.test_templates_runc import built
from tests.integration.test_oci_import_runc import PushedImages, pushed
from tests.support.server import HutchProcess, remove_instance

__all__ = ["pushed"]  # the registry fixture, shared with the import tests


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, images: Path, pushed: PushedImages
) -> Iterator[HutchProcess]:
    process = runc_server(
        tmp_path_factory.mktemp("templates-oci") / "home",
        images,
        env={"HUTCH_TEMPLATE_REGISTRIES": f"http://{pushed.registry.host}/team"},
    )
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture
def api(server: HutchProcess) -> Iterator[httpx.Client]:
    key = server.new_key(f"o{time.monotonic_ns()}")
    with server.client(key) as client:
        yield client


def test_a_template_from_a_registry_image_keeps_its_files_config_and_start_command(
    api: httpx.Client, pushed: PushedImages
) -> None:
    dockerfile = f"FROM {pushed.app}\nUSER root\nRUN echo built > /built\nUSER nobody\n"
    template = built(api, "from-oci", dockerfile)
    assert template["base"] == pushed.app
    assert template["workdir"] == "/srv/app" and template["user"] == "nobody"
    assert template["start_cmd"] == ["python3", "-m", "http.server"]
    assert template["env"]["GREETING_FROM_IMAGE"] == "hi there"
    log = api.get(f"/v1/templates/{template['id']}/logs").text
    assert f"pulling {pushed.app}" in log
    box = create(api, rootfs="from-oci")
    out = sh(api, box, 'cat hello.txt /built; id -un; echo "$GREETING_FROM_IMAGE"; pwd')
    assert out["stdout"] == "hello from the image\nbuilt\nnobody\nhi there\n/srv/app\n", out
    deadline = time.monotonic() + 30
    while "http.server" not in sh(api, box, "ps -eo user,args")["stdout"]:
        assert time.monotonic() < deadline, "the image's start command never ran"
        time.sleep(0.2)
    assert "nobody" in sh(api, box, "ps -eo user,args | grep [h]ttp.server")["stdout"]
    api.delete(f"/v1/sandboxes/{box['id']}")


def test_a_registry_not_on_the_allowlist_is_a_400_naming_the_line(api: httpx.Client) -> None:
    answer = api.post(
        "/v1/templates",
        json={"name": "elsewhere", "dockerfile": "FROM registry.example.org/team/app:1\n"},
    )
    assert answer.status_code == 400, answer.text
    message = answer.json()["data"]["dockerfile"]
    assert message.startswith("line 1: FROM registry.example.org/team/app:1") and (
        "HUTCH_TEMPLATE_REGISTRIES" in message
    ), message
