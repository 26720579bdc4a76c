"""Access tokens and resize through CreateOS's own published Python client
(``createos-sandbox`` 0.1.3, unchanged) against a real ``hutch serve`` on runc: the owner
makes a token, a worker's handle (``with_access_token``) drives the sandbox and nothing
else, rotation and disabling cut it off at once; ``resize`` grows the disk online."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from createos import APIError, Client, CreateSandboxRequest, RunCommandRequest, SandboxStatus

from tests.e2e.test_sandboxes_runc import runc_server
from tests.support.server import HutchProcess, remove_instance


@pytest.fixture(scope="module")
def hutch(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    server = runc_server(tmp_path_factory.mktemp("createos-tokens") / "home", images)
    yield server
    server.stop()
    remove_instance(server.home)


@pytest.fixture
def client(hutch: HutchProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    key = hutch.new_key("sdk-owner")
    monkeypatch.setenv("CREATEOS_SANDBOX_BASE_URL", hutch.url)
    monkeypatch.setenv("CREATEOS_API_KEY", key)
    with Client(timeout=300) as client:
        yield client


def stdout(handle: object, script: str) -> str:
    result = handle.run_command(RunCommandRequest(command="sh", arguments=["-c", script]))  # type: ignore[attr-defined]
    text: str = result.result.standard_output
    return text


def test_a_delegated_handle_drives_its_sandbox_only(client: Client) -> None:
    sandbox = client.create_sandbox(CreateSandboxRequest(shape="s-1vcpu-256mb"))
    other = client.create_sandbox(CreateSandboxRequest(shape="s-1vcpu-256mb"))
    assert sandbox.get_access_token().enabled is False
    made = sandbox.create_access_token()
    assert made.enabled is True and made.token.startswith("skp_sb_") and made.rotated_at is None
    with pytest.raises(APIError) as again:
        sandbox.create_access_token()
    assert again.value.status_code == 409
    meta = sandbox.get_access_token()
    assert meta.enabled and meta.token_hint == f"{made.token[:9]}...{made.token[-4:]}"

    worker = sandbox.with_access_token(made.token)
    assert stdout(worker, "echo from-worker") == "from-worker\n"
    worker.files.upload("/work/w/data.txt", b"worker bytes")
    with worker.files.download("/work/w/data.txt") as download:
        assert download.read() == b"worker bytes"
    assert worker.pause().status in (SandboxStatus.PAUSING, SandboxStatus.PAUSED)
    assert worker.resume().status in (SandboxStatus.RESUMING, SandboxStatus.RUNNING)
    assert stdout(worker, "cat /work/w/data.txt") == "worker bytes"

    stray = other.with_access_token(made.token)  # the same token on another sandbox
    with pytest.raises(APIError) as elsewhere:
        stray.refresh()
    assert elsewhere.value.status_code == 404
    with pytest.raises(APIError) as resize_refused:
        worker.resize(2048)
    assert resize_refused.value.status_code == 403
    with pytest.raises(APIError) as manage_refused:
        worker.rotate_access_token()
    assert manage_refused.value.status_code == 403

    rotated = sandbox.rotate_access_token()
    assert rotated.rotated_at is not None and rotated.token != made.token
    with pytest.raises(APIError) as old:
        stdout(worker, "true")
    assert old.value.status_code == 401
    fresh = sandbox.with_access_token(rotated.token)
    assert stdout(fresh, "echo ok") == "ok\n"
    assert sandbox.disable_access_token().enabled is False
    with pytest.raises(APIError) as disabled:
        stdout(fresh, "true")
    assert disabled.value.status_code == 401
    with pytest.raises(APIError) as missing:
        sandbox.rotate_access_token()
    assert missing.value.status_code == 404 and "sandbox access token not found" in str(
        missing.value
    )
    other.destroy()
    sandbox.destroy()


def test_resize_through_the_client_grows_the_disk_online(client: Client) -> None:
    sandbox = client.create_sandbox(CreateSandboxRequest(shape="s-1vcpu-256mb", disk_mib=300))
    assert 280 <= int(stdout(sandbox, "df -m --output=size / | tail -1")) <= 300
    grown = sandbox.resize(600)
    assert (grown.id, grown.disk_mib) == (sandbox.id, 600) and sandbox.data.disk_mib == 600
    assert 570 <= int(stdout(sandbox, "df -m --output=size / | tail -1")) <= 600
    with pytest.raises(APIError) as smaller:
        sandbox.resize(500)
    assert smaller.value.status_code == 400
    assert sandbox.refresh().data.disk_mib == 600
    sandbox.destroy()
