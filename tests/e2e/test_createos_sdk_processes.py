"""Managed processes through CreateOS's own published Python client (``createos-sandbox``
0.1.3, unchanged) against a real ``hutch serve`` with runc sandboxes: the client decodes
ManagedProcess into its own enums (kind, state, stream) and reads the connect stream as
the wire frames, so these calls passing show the wire matches (§7). Its ``self_pause``
is the self-signal client; it runs inside the sandbox only, so it is exercised with
curl in tests/e2e/test_self_signal_runc.py."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from createos import Client, CreateSandboxRequest
from createos.models import (
    ManagedProcessConnectEventType,
    ManagedProcessConnectOptions,
    ManagedProcessCreateRequest,
    ManagedProcessDeleteOptions,
    ManagedProcessKind,
    ManagedProcessSignal,
    ManagedProcessState,
    ManagedProcessStream,
    ManagedProcessWaitOptions,
    ManagedProcessWaitScope,
    PTYSize,
)

from tests.e2e.test_sandboxes_runc import runc_server
from tests.support.server import HutchProcess, remove_instance

_names = itertools.count()


@pytest.fixture(scope="module")
def hutch(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    server = runc_server(tmp_path_factory.mktemp("createos-processes") / "home", images)
    yield server
    server.stop()
    remove_instance(server.home)


@pytest.fixture
def client(hutch: HutchProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    key = hutch.new_key(f"proc-{next(_names)}")
    monkeypatch.setenv("CREATEOS_SANDBOX_BASE_URL", hutch.url)
    monkeypatch.setenv("CREATEOS_API_KEY", key)
    with Client(timeout=300) as client:
        yield client


def read_until(stream: object, needle: bytes) -> tuple[bytes, int]:
    seen, seq = b"", 0
    for event in stream:  # type: ignore[attr-defined]
        if event.type == ManagedProcessConnectEventType.DATA:
            assert event.stream == ManagedProcessStream.PTY
            seen += event.data
            seq = event.sequence
            if needle in seen:
                break
    return seen, seq


def test_a_pty_and_a_pipe_process_through_the_published_client(client: Client) -> None:
    sandbox = client.create_sandbox(CreateSandboxRequest(shape="s-1vcpu-256mb"))
    processes = sandbox.processes
    shell = processes.create(
        ManagedProcessCreateRequest(
            command="bash", arguments=["--norc", "-i"], pty=PTYSize(rows=30, cols=100)
        )
    )
    assert shell.kind == ManagedProcessKind.PTY and shell.state == ManagedProcessState.RUNNING
    assert processes.input(shell.process_id, "stty size\n") == 1
    seen, seq = read_until(processes.connect(shell.process_id), b"30 100")
    processes.resize(shell.process_id, PTYSize(rows=44, cols=120))
    processes.input(shell.process_id, "stty size\n")
    options = ManagedProcessConnectOptions(after_sequence=seq)
    seen, _ = read_until(processes.connect(shell.process_id, options), b"44 120")
    assert b"30 100" not in seen  # replay from after, not from the start
    processes.input(shell.process_id, "exit 6\n")
    done = processes.wait(
        shell.process_id, ManagedProcessWaitOptions(scope=ManagedProcessWaitScope.LEADER)
    )
    assert done.exit_code == 6 and done.state == ManagedProcessState.EXITED

    worker = processes.create(
        ManagedProcessCreateRequest(
            command="sh",
            arguments=["-c", "trap 'exit 9' TERM; while true; do sleep 0.1; done"],
            working_directory="/tmp",
            environment_variables={"GREETING": "hi"},
        )
    )
    assert worker.kind == ManagedProcessKind.PROCESS and worker.working_directory == "/tmp"
    listed = {p.process_id for p in processes.list()}
    assert {shell.process_id, worker.process_id} <= listed
    quick = processes.wait(
        worker.process_id,
        ManagedProcessWaitOptions(scope=ManagedProcessWaitScope.TREE, wait_timeout=0.2),
    )
    assert not quick.tree_exited
    processes.signal(worker.process_id, ManagedProcessSignal.TERMINATE)
    ended = processes.wait(worker.process_id)
    assert ended.exit_code == 9
    stream = processes.connect(worker.process_id)
    assert [event.type for event in stream][-1] == ManagedProcessConnectEventType.EXIT

    stubborn = processes.create(
        ManagedProcessCreateRequest(command="sh", arguments=["-c", "trap '' TERM; sleep 300"])
    )
    final = processes.delete(stubborn.process_id, ManagedProcessDeleteOptions(grace_period=0.3))
    assert final.tree_exited and final.signal == "SIGKILL"
    sandbox.destroy()
