"""hutch's own SDK for access tokens and resize, against a real ``hutch serve`` on runc."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hutch import Sandbox
from hutch.sdk import AuthenticationError, Client, ConflictError, HutchError, NotFoundError
from tests.e2e.test_sandboxes_runc import runc_server
from tests.support.server import HutchProcess, remove_instance


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    process = runc_server(tmp_path_factory.mktemp("sdk-tokens") / "home", images)
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture
def client(server: HutchProcess) -> Iterator[Client]:
    key = server.new_key("sdk-tokens")
    with Client(server.url, key) as client:
        yield client


def test_a_token_connects_to_its_sandbox_only(server: HutchProcess, client: Client) -> None:
    with Sandbox.create(client=client) as sandbox, Sandbox.create(client=client) as other:
        token = sandbox.create_access_token()
        assert token.startswith("skp_sb_")
        with pytest.raises(ConflictError):
            sandbox.create_access_token()
        with Client(server.url, token) as delegated:
            worker = Sandbox.connect(sandbox.id, client=delegated)
            worker.files.write("/work/from-worker.txt", "hi")
            assert worker.commands.run("cat /work/from-worker.txt").stdout == "hi"
            with pytest.raises(NotFoundError):
                Sandbox.connect(other.id, client=delegated)
            with pytest.raises(HutchError) as refused:
                worker.resize(2048)
            assert refused.value.status == 403
            rotated = sandbox.rotate_access_token()
            with pytest.raises(AuthenticationError):
                worker.commands.run("true")
        with Client(server.url, rotated) as delegated:
            assert Sandbox.connect(sandbox.id, client=delegated).commands.run("echo ok").stdout == (
                "ok\n"
            )
            sandbox.disable_access_token()
            sandbox.disable_access_token()
            with pytest.raises(AuthenticationError):
                Sandbox.connect(sandbox.id, client=delegated)


def test_resize_grows_the_disk_the_sandbox_sees(client: Client) -> None:
    with Sandbox.create(client=client, disk_mib=300) as sandbox:
        sandbox.resize(500)
        assert sandbox.info.disk_mib == 500
        assert 470 <= int(sandbox.commands.run("df -m --output=size / | tail -1").stdout) <= 500
        with pytest.raises(HutchError) as smaller:
            sandbox.resize(400)
        assert smaller.value.status == 400
