"""CreateOS's own published Python client (``createos-sandbox`` 0.1.3 from PyPI, unchanged)
against a real ``hutch serve`` with runc sandboxes, pointed at it the way its README says:
``CREATEOS_SANDBOX_BASE_URL`` and ``CREATEOS_API_KEY``.

The client decodes strictly (its status and mount-status enums raise on values it does not
know, it requires ``id`` and ``status`` in a create response and the sandbox's own id in a
disk attach answer, and it reads exec streams as CreateOS's wire frames), so every call
here passing is the proof that the wire matches.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from createos import (
    APIError,
    AttachDiskOptions,
    Client,
    CreateSandboxRequest,
    DetachDiskOptions,
    DiskConfig,
    DiskCreateRequest,
    DiskCredentials,
    ExecOptions,
    ListSandboxesOptions,
    NetworkCreateRequest,
    RunCommandRequest,
    SandboxStatus,
)
from createos.models import DiskMountStatus, ExecStreamEventType
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.e2e.test_sandboxes_runc import runc_server
from tests.support.seaweed import ROTATED_ACCESS_KEY, ROTATED_SECRET_KEY, SeaweedS3
from tests.support.server import HutchProcess, remove_instance

_names = itertools.count()


@pytest.fixture(scope="module")
def hutch(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    server = runc_server(
        tmp_path_factory.mktemp("createos-sdk") / "home",
        images,
        env={"HUTCH_REGION": "eu-test-1", "HUTCH_HOST_LABELS": "tier=test,disk=ssd"},
    )
    yield server
    server.stop()
    remove_instance(server.home)


@pytest.fixture
def client(hutch: HutchProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    key = hutch.new_key(f"sdk-{next(_names)}")
    monkeypatch.setenv("CREATEOS_SANDBOX_BASE_URL", hutch.url)
    monkeypatch.setenv("CREATEOS_API_KEY", key)
    # The client's own default is 60 s a request; this machine is shared and can be slow.
    with Client(timeout=300) as client:
        yield client


def test_catalog_identity_and_health(client: Client) -> None:
    assert client.health().up is True
    ready = client.readiness()
    assert ready.ready is True and ready.scheduler_last_ok_milliseconds_ago >= 0
    assert "s-1vcpu-256mb" in [shape.id for shape in client.list_shapes()]
    rootfs = client.list_root_file_systems()
    assert rootfs.default == "devbox:1" and "devbox:1" in rootfs.root_file_systems
    [host] = client.list_hosts()
    assert host.status.value == "active" and host.free_memory_mib > 0
    assert client.who_am_i().stats.total == 0


def test_a_sandbox_lives_its_whole_life_through_the_client(client: Client) -> None:
    [host] = client.list_hosts()
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    openssh = public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    key = f"{openssh.decode()} ci@sdk"
    sandbox = client.create_sandbox(
        CreateSandboxRequest(
            shape="s-1vcpu-256mb",
            environment_variables={"STAGE": "sdk"},
            ssh_public_keys=[key, f"  {key.replace(' ci@sdk', '')}  "],
            host_id=host.id,
            region="eu-test-1",
            node_selector={"tier": "test"},
            auto_pause_after_seconds=600,
        )
    )
    assert sandbox.status == SandboxStatus.RUNNING and sandbox.id.startswith("sb")
    assert sandbox.data.spawn_milliseconds >= 0 and sandbox.ip_address
    view = sandbox.refresh().data
    assert view.environment_variables == ["STAGE"] and view.region == "eu-test-1"
    assert view.ssh_public_keys == [key], "normalised and deduplicated"
    assert view.auto_pause_after_seconds == 600 and view.bandwidth_ingress_bytes == 0

    result = sandbox.run_command(
        RunCommandRequest(command="bash", arguments=["-c", 'echo "$STAGE $EXTRA"; cat']),
        ExecOptions(environment_variables={"EXTRA": "extra"}, standard_input="from stdin"),
    )
    assert result.result.standard_output == "sdk extra\nfrom stdin"
    assert result.result.exit_code == 0 and result.execution_milliseconds > 0
    failed = sandbox.run_command(RunCommandRequest(command="sh", arguments=["-c", "exit 3"]))
    assert failed.result.exit_code == 3

    with sandbox.stream_command(
        RunCommandRequest(
            command="sh",
            arguments=["-c", "printf 'a\\377b\\n'; echo err >&2; sleep 6; echo late; exit 4"],
        )
    ) as stream:
        events = list(stream)
    kinds = [event.type for event in events]
    assert ExecStreamEventType.HEARTBEAT in kinds, "a 5 s silence brings a heartbeat"
    out = "".join(e.data for e in events if e.type == ExecStreamEventType.STDOUT)
    assert out == "a\ufffdb\nlate\n", "bytes that are not UTF-8 become U+FFFD"
    assert [e.data for e in events if e.type == ExecStreamEventType.STDERR] == ["err\n"]
    assert events[-1].type == ExecStreamEventType.EXIT and events[-1].exit_code == 4

    sandbox.files.upload("/work/deep/dir/data.bin", bytes(range(256)) * 64)
    with sandbox.files.download("/work/deep/dir/data.bin") as download:
        assert download.read() == bytes(range(256)) * 64

    assert sandbox.set_auto_pause(None).data.auto_pause_after_seconds is None
    assert sandbox.set_auto_pause(120).data.auto_pause_after_seconds == 120
    with pytest.raises(ValueError):
        sandbox.set_auto_pause(30)  # the client checks 60-86400 itself; so does hutch

    assert sandbox.pause().status == SandboxStatus.PAUSED
    assert sandbox.pause().status == SandboxStatus.PAUSED
    sandbox.wait_until_paused()
    listed = client.list_sandboxes(ListSandboxesOptions(status=SandboxStatus.PAUSED))
    assert [s.id for s in listed] == [sandbox.id]
    sandbox.resume().wait_until_running()
    assert sandbox.shell("cat /work/deep/dir/data.bin | wc -c").result.standard_output == "16384\n"
    assert client.get_sandbox_by_ip(sandbox.ip_address).id == sandbox.id
    assert client.who_am_i().stats.running == 1

    sandbox.destroy()
    assert sandbox.status == SandboxStatus.DESTROYED
    sandbox.wait_until_destroyed()
    sandbox.destroy()  # again: harmless


def test_what_hutch_refuses_the_client_reports(client: Client) -> None:
    cases = [
        (CreateSandboxRequest(shape="s-64vcpu-1tb"), "shape"),
        (CreateSandboxRequest(shape="s-1vcpu-256mb", region="us-east-1"), "region"),
        (CreateSandboxRequest(shape="s-1vcpu-256mb", host_id="10.9.9.9"), "host_id"),
        (CreateSandboxRequest(shape="s-1vcpu-256mb", node_selector={"gpu": "a100"}), "gpu=a100"),
        (CreateSandboxRequest(shape="s-1vcpu-256mb", ssh_public_keys=["ssh-rsa nope"]), "ssh"),
        (CreateSandboxRequest(shape="s-1vcpu-256mb", auto_pause_after_seconds=59), "auto_pause"),
        (CreateSandboxRequest(shape="s-1vcpu-256mb",
                              environment_variables={f"K{i}": "v" for i in range(65)}), "64"),
    ]  # fmt: skip
    for request, says in cases:
        with pytest.raises(APIError) as refused:
            client.create_sandbox(request)
        assert refused.value.status_code == 400, request
        assert says in str(refused.value), (says, str(refused.value))
    assert client.who_am_i().stats.total == 0, "nothing was created"


def test_networks_and_disks_through_the_client(client: Client, s3: SeaweedS3) -> None:
    network = client.networks.create(NetworkCreateRequest(name="sdk-net"))
    assert network.id.startswith("net") and network.name == "sdk-net"
    bucket = s3.make_bucket(f"sdk-{os.getpid()}-{next(_names)}")
    disk = client.disks.create(
        DiskCreateRequest(
            name="sdk-disk",
            config=DiskConfig(bucket=bucket, endpoint=s3.endpoint, use_path_style=True),
            credentials=DiskCredentials(access_key=s3.access_key, secret_key=s3.secret_key),
        )
    )
    sandbox = client.create_sandbox(CreateSandboxRequest(shape="s-1vcpu-256mb"))
    sandbox.attach_network("sdk-net")
    assert [m.sandbox_id for m in client.networks.get("sdk-net").members] == [sandbox.id]

    sandbox.attach_disk(AttachDiskOptions(disk_id="sdk-disk", mount_path="/mnt/data"))
    [mounted] = sandbox.list_disks()
    assert mounted.mount_status == DiskMountStatus.MOUNTED and mounted.disk_id == disk.id
    sandbox.shell("echo through-the-mount > /mnt/data/hello.txt")
    assert s3.client().get_object(Bucket=bucket, Key="hello.txt")["Body"].read() == (
        b"through-the-mount\n"
    )
    rotated = client.disks.rotate_credentials(
        "sdk-disk", DiskCredentials(access_key=ROTATED_ACCESS_KEY, secret_key=ROTATED_SECRET_KEY)
    )
    assert rotated.id == disk.id
    [still] = sandbox.list_disks()
    assert still.mount_status == DiskMountStatus.MOUNTED
    assert sandbox.shell("cat /mnt/data/hello.txt").result.standard_output == (
        "through-the-mount\n"
    )
    with pytest.raises(APIError) as refused:
        client.disks.rotate_credentials(
            "sdk-disk", DiskCredentials(access_key=ROTATED_ACCESS_KEY, secret_key="wrong")
        )
    assert refused.value.status_code == 400

    assert sandbox.detach_disk(DetachDiskOptions(disk_id=disk.id, mount_path="/mnt/data"))
    assert sandbox.list_disks() == []
    sandbox.detach_network(network.id)
    sandbox.destroy()
    assert client.disks.delete("sdk-disk") is True
    client.networks.delete("sdk-net")
