"""The Python SDK against a real ``hutch serve`` with real sandboxes (runc), as a user's
program meets it:
the blocking and the async API, errors that say what to do, and retries against a real
local HTTP server that fails on purpose."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from hutch import AsyncDisk, AsyncNetwork, AsyncSandbox, Disk, Network, Sandbox
from hutch.sdk import (
    AsyncClient,
    AuthenticationError,
    Client,
    CommandError,
    ConfigurationError,
    ConflictError,
    DiskMount,
    ExitEvent,
    HutchError,
    InvalidRequestError,
    NotFoundError,
    OutputEvent,
    RetryPolicy,
    ServerUnavailableError,
)
from tests.e2e.test_sandboxes_runc import runc_server
from tests.support.seaweed import ROTATED_ACCESS_KEY, ROTATED_SECRET_KEY, SeaweedS3
from tests.support.server import HutchProcess, remove_instance

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_names)}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    env = {
        "HUTCH_PROXY_ENABLED": "true",  # for preview URLs
        "HUTCH_PROXY_PORT": "0",
        "HUTCH_MONITOR_INTERVAL_S": "0.2",  # sandbox timeouts are checked this often
    }
    process = runc_server(tmp_path_factory.mktemp("sdk") / "home", images, env=env)
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture(scope="module")
def key(server: HutchProcess) -> str:
    return server.new_key("sdk-user")


@pytest.fixture(scope="module")
def client(server: HutchProcess, key: str) -> Iterator[Client]:
    with Client(server.url, key) as client:
        yield client


@pytest.fixture
def from_env(server: HutchProcess, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK configured the usual way: by environment variables only."""
    monkeypatch.setenv("HUTCH_API_URL", server.url)
    monkeypatch.setenv("HUTCH_API_KEY", key)


@pytest.fixture
def sandbox(client: Client) -> Iterator[Sandbox]:
    with Sandbox.create(client=client, envs={"GREETING": "hello"}) as sandbox:
        yield sandbox


# --- lifecycle ---------------------------------------------------------------------------


@pytest.mark.usefixtures("from_env")
def test_create_connect_list_and_the_context_manager_kills() -> None:
    name = unique("sdk-box")
    with Sandbox.create(name=name, shape="s-1vcpu-256mb", envs={"A": "1"}) as sandbox:
        assert sandbox.id.startswith("sb_") and sandbox.name == name
        assert sandbox.status == "running" and sandbox.ip
        assert sandbox.info.shape == "s-1vcpu-256mb" and sandbox.info.envs == ("A",)
        for ident in (sandbox.id, name):
            assert Sandbox.connect(ident).id == sandbox.id
        assert sandbox.id in [s.id for s in Sandbox.list()]
    assert sandbox.status == "destroyed"
    assert Sandbox.connect(sandbox.id).status == "destroyed"
    assert sandbox.id not in [s.id for s in Sandbox.list()]
    assert sandbox.id in [s.id for s in Sandbox.list(status=["destroyed", "failed"])]
    sandbox.kill()  # again: harmless


def test_create_with_ssh_keys_placement_and_auto_pause(client: Client) -> None:
    key = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    with Sandbox.create(client=client, ssh_pubkeys=[key, f" {key} "], region="local",
                        node_selector={}, auto_pause_after_seconds=300) as sandbox:  # fmt: skip
        assert sandbox.info.ssh_pubkeys == (key,)
        assert sandbox.info.region == "local" and sandbox.info.auto_pause_after_seconds == 300
    with pytest.raises(InvalidRequestError, match="region"):
        Sandbox.create(client=client, region="elsewhere")


def test_a_default_create_needs_no_arguments_and_kill_destroys(client: Client) -> None:
    sandbox = Sandbox.create(client=client)
    assert sandbox.info.shape, "the server's first shape was chosen"
    sandbox.kill()
    assert sandbox.refresh().status == "destroyed"


def test_pause_and_resume(sandbox: Sandbox) -> None:
    sandbox.pause()
    assert sandbox.status == "paused" and sandbox.refresh().status == "paused"
    sandbox.pause()  # idempotent
    with pytest.raises(ConflictError, match="status"):
        sandbox.commands.run("true")
    sandbox.resume()
    assert sandbox.status == "running"
    assert sandbox.commands.run("echo back").stdout == "back\n"


def test_a_timeout_has_the_server_destroy_the_sandbox(client: Client) -> None:
    with pytest.raises(InvalidRequestError, match="timeout"):
        Sandbox.create(client=client, timeout=0.5)
    assert Sandbox.list(client=client) == [], "the sandbox it made was killed"
    sandbox = Sandbox.create(client=client, timeout=1)
    deadline = time.monotonic() + 15
    while sandbox.refresh().status != "destroyed" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sandbox.status == "destroyed"


def test_preview_url(sandbox: Sandbox) -> None:
    url = sandbox.preview_url(8080)
    assert url.startswith("http://8080-") and ".localhost:" in url


# --- commands ----------------------------------------------------------------------------


def test_run_returns_output_exit_code_and_honours_env_and_cwd(sandbox: Sandbox) -> None:
    result = sandbox.commands.run("echo out; echo err >&2; exit 3")
    assert (result.stdout, result.stderr, result.exit_code) == ("out\n", "err\n", 3)
    assert not result.ok and result.exec_ms is not None

    greeting = sandbox.commands.run('echo "$GREETING $EXTRA"', env={"EXTRA": "world"})
    assert greeting.stdout == "hello world\n" and greeting.ok

    sandbox.files.write("/work/notes.txt", "x")
    assert sandbox.commands.run("pwd", cwd="/work").stdout.strip().endswith("/work")
    assert sandbox.commands.run(["ls", "-1"], cwd="/work").stdout == "notes.txt\n"
    assert sandbox.commands.run("cat", stdin="fed in").stdout == "fed in"


def test_check_raises_with_the_result(sandbox: Sandbox) -> None:
    with pytest.raises(CommandError, match="exited with 7") as caught:
        sandbox.commands.run("echo partial; echo broken >&2; exit 7", check=True)
    assert caught.value.result.exit_code == 7
    assert caught.value.result.stdout == "partial\n"
    assert "broken" in str(caught.value)
    assert sandbox.commands.run("true", check=True).exit_code == 0

    timed_out = sandbox.commands.run("sleep 5", timeout=0.3)
    assert not timed_out.ok and timed_out.error
    with pytest.raises(CommandError):
        sandbox.commands.run("sleep 5", timeout=0.3, check=True)


def test_callbacks_receive_output_in_order_as_it_happens(sandbox: Sandbox) -> None:
    seen: list[tuple[str, str, float]] = []
    script = "for i in 1 2 3; do echo out$i; sleep 0.2; echo err$i >&2; sleep 0.2; done"
    started = time.monotonic()
    result = sandbox.commands.run(
        script,
        on_stdout=lambda text: seen.append(("out", text, time.monotonic() - started)),
        on_stderr=lambda text: seen.append(("err", text, time.monotonic() - started)),
    )
    assert [text for _, text, _ in seen] == [
        "out1\n", "err1\n", "out2\n", "err2\n", "out3\n", "err3\n"
    ]  # fmt: skip
    assert [stream for stream, _, _ in seen] == ["out", "err"] * 3
    assert seen[0][2] < seen[-1][2] - 0.6, "the first line came long before the last"
    assert result.stdout == "out1\nout2\nout3\n" and result.stderr == "err1\nerr2\nerr3\n"
    assert result.exit_code == 0


def test_stream_yields_events_ending_with_the_exit(sandbox: Sandbox) -> None:
    events = list(sandbox.commands.stream("echo a; echo b >&2; exit 4"))
    assert events[-1] == ExitEvent(exit_code=4)
    output = [e for e in events if isinstance(e, OutputEvent)]
    assert "".join(e.data for e in output if e.stream == "stdout") == "a\n"
    assert "".join(e.data for e in output if e.stream == "stderr") == "b\n"

    for event in sandbox.commands.stream("echo first; sleep 30"):
        assert event == OutputEvent(stream="stdout", data="first\n")
        break  # leaving early disconnects instead of waiting 30 s
    assert sandbox.commands.run("echo still usable").ok


def test_calling_the_blocking_sdk_from_a_callback_raises_instead_of_hanging(
    sandbox: Sandbox,
) -> None:
    with pytest.raises(HutchError, match="callback"):
        sandbox.commands.run("echo hi", on_stdout=lambda _: sandbox.files.read_text("/x"))


# --- files -------------------------------------------------------------------------------


def test_files_round_trip_bytes_and_text(sandbox: Sandbox) -> None:
    every_byte = bytes(range(256)) * 4
    assert sandbox.files.write("/data/bytes.bin", every_byte) == len(every_byte)
    assert sandbox.files.read_bytes("/data/bytes.bin") == every_byte

    text = "grüße, 世界\nline two\n"
    sandbox.files.write("/data/text.txt", text)
    assert sandbox.files.read_text("/data/text.txt") == text
    assert sandbox.files.read_bytes("/data/text.txt") == text.encode()

    sandbox.files.write("/data/empty", b"")
    assert sandbox.files.read_bytes("/data/empty") == b""
    with pytest.raises(NotFoundError):
        sandbox.files.read_bytes("/data/missing")


def test_a_5_mb_file_streams_both_ways(sandbox: Sandbox, tmp_path: Path) -> None:
    payload = os.urandom(5 * 1024 * 1024 + 123)
    pulled: list[int] = []

    def chunks() -> Iterator[bytes]:
        for offset in range(0, len(payload), 256 * 1024):
            pulled.append(offset)
            yield payload[offset : offset + 256 * 1024]

    assert sandbox.files.write("/big/from-iterator.bin", chunks()) == len(payload)
    assert len(pulled) == 21

    source = tmp_path / "source.bin"
    source.write_bytes(payload)
    with source.open("rb") as handle:
        assert sandbox.files.write("/big/from-file.bin", handle) == len(payload)

    target = tmp_path / "down" / "copy.bin"
    target.parent.mkdir()
    assert sandbox.files.download("/big/from-file.bin", target) == len(payload)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(payload).digest()

    pieces = list(sandbox.files.iter_bytes("/big/from-iterator.bin", chunk_size=512 * 1024))
    assert len(pieces) > 1 and b"".join(pieces) == payload

    sink = io.BytesIO()
    sandbox.files.download("/big/from-iterator.bin", sink)
    assert sink.getvalue() == payload


# --- networks and disks ------------------------------------------------------------------


def test_networks(client: Client) -> None:
    network = Network.create(unique("net"), client=client)
    assert network.id.startswith("net-") and network.info.member_count == 0
    assert network.id in [n.id for n in Network.list(client=client)]
    first = Sandbox.create(client=client, networks=[network])
    second = Sandbox.create(client=client)
    try:
        network.attach(second)
        network.attach(second.id)  # again: a no-op
        members = network.refresh().members
        assert members is not None
        assert {m.sandbox_id for m in members} == {first.id, second.id}
        assert all(m.ip for m in members)
        assert Network.get(network.name, client=client).id == network.id

        with pytest.raises(ConflictError, match="detach"):
            network.delete()
        network.detach(second)
        with pytest.raises(NotFoundError):
            network.detach(second)
    finally:
        first.kill()
        second.kill()
    network.delete()
    with pytest.raises(NotFoundError, match=r"Network\.list\(\)"):
        Network.get(network.id, client=client)


def test_disks(client: Client, s3: SeaweedS3) -> None:
    bucket = s3.make_bucket(unique("sdk-bucket"))
    disk = Disk.create(unique("data"), bucket=bucket, endpoint=s3.endpoint,
                       access_key=s3.access_key, secret_key=s3.secret_key,
                       use_path_style=True, client=client)  # fmt: skip
    assert disk.id.startswith("disk_") and disk.info.bucket == bucket
    assert s3.secret_key not in repr(disk.info.raw)
    assert Disk.get(disk.name, client=client).id == disk.id
    assert disk.id in [d.id for d in Disk.list(client=client)]

    with Sandbox.create(client=client, disks=[DiskMount(disk=disk, mount_path="/data")]) as box:
        [attached] = box.list_disks()
        assert (attached.disk_id, attached.mount_path) == (disk.id, "/data")
        assert attached.mount_status == "mounted"
        with pytest.raises(InvalidRequestError, match="credentials"):
            disk.rotate_credentials(access_key=ROTATED_ACCESS_KEY, secret_key="wrong")
        rotated = disk.rotate_credentials(access_key=ROTATED_ACCESS_KEY,
                                          secret_key=ROTATED_SECRET_KEY)  # fmt: skip
        assert rotated.id == disk.id and box.list_disks()[0].mount_status == "mounted"
        with pytest.raises(ConflictError):
            disk.delete()
        disk.detach(box, "/data")
        assert box.list_disks() == []
        disk.attach(box, "/elsewhere", sub_path="prefix")
        assert [a.mount_path for a in box.list_disks()] == ["/elsewhere"]
        disk.detach(box, "/elsewhere")
    disk.delete()
    with pytest.raises(NotFoundError, match=r"Disk\.list\(\)"):
        disk.refresh()

    with pytest.raises(InvalidRequestError, match="bucket"):
        Disk.create(unique("data"), bucket="no-such-bucket", endpoint=s3.endpoint,
                    access_key=s3.access_key, secret_key=s3.secret_key,
                    use_path_style=True, client=client)  # fmt: skip


# --- errors and configuration ------------------------------------------------------------


def test_errors_say_what_happened_and_what_to_do(server: HutchProcess, client: Client) -> None:
    with pytest.raises(NotFoundError) as missing:
        Sandbox.connect("sb_nope", client=client)
    assert missing.value.status == 404
    assert str(missing.value) == (
        "sandbox sb_nope does not exist (or belongs to another user); "
        "list yours with Sandbox.list()"
    )

    with pytest.raises(AuthenticationError, match="HUTCH_API_KEY") as refused:
        Sandbox.list(api_url=server.url, api_key="hk_not-a-real-key")
    assert refused.value.status == 401

    with pytest.raises(InvalidRequestError, match="shape") as invalid:
        Sandbox.create(client=client, shape="s-64vcpu-1tb")
    assert invalid.value.status == 400 and "s-64vcpu-1tb" in invalid.value.fields["shape"]
    assert "s-1vcpu-256mb" in str(invalid.value), "the message lists the valid shapes"


def test_configuration_comes_from_arguments_then_the_environment(
    server: HutchProcess, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HUTCH_API_KEY", raising=False)
    monkeypatch.setenv("HUTCH_API_URL", server.url)
    with pytest.raises(ConfigurationError, match="set HUTCH_API_KEY"):
        Sandbox.list()
    monkeypatch.setenv("HUTCH_API_KEY", "hk_wrong")
    assert isinstance(Sandbox.list(api_key=key), list), "an argument beats the environment"
    with pytest.raises(AuthenticationError):
        Sandbox.list()
    monkeypatch.setenv("HUTCH_API_KEY", key)
    assert isinstance(Sandbox.list(), list)
    monkeypatch.delenv("HUTCH_API_URL")
    assert Client(api_key=key).config.api_url == "http://127.0.0.1:8700"


# --- retries, against a real HTTP server that fails on purpose -----------------------------


class FlakyServer:
    """Answers each path with the scripted statuses in turn, then 200 with a sandbox."""

    def __init__(self, script: dict[str, list[tuple[int, dict[str, str]]]]) -> None:
        self.script = script
        self.hits: list[tuple[str, str, float]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                path = self.path.split("?")[0]
                outer.hits.append((self.command, path, time.monotonic()))
                pending = outer.script.get(path, [])
                status, headers = pending.pop(0) if pending else (200, {})
                body: dict[str, Any]
                if status == 200:
                    sandbox = {"id": "sb_flaky", "status": "running"}
                    body = {"status": "success", "data": sandbox}
                else:
                    body = {"status": "error", "message": "warming up", "code": status}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def flaky() -> Iterator[FlakyServer]:
    server = FlakyServer({
        "/v1/sandboxes/sb_flaky": [(503, {}), (503, {})],
        "/v1/sandboxes/sb_patient": [(503, {"Retry-After": "1"})],
        "/v1/sandboxes": [(503, {})],
    })  # fmt: skip
    yield server
    server.close()


def test_idempotent_calls_retry_503_with_backoff(flaky: FlakyServer) -> None:
    policy = RetryPolicy(backoff_s=0.1)
    with Client(flaky.url, "hk_any", retry=policy) as client:
        assert Sandbox.connect("sb_flaky", client=client).status == "running"
        times = [at for _, path, at in flaky.hits if path == "/v1/sandboxes/sb_flaky"]
        assert len(times) == 3
        first_wait, second_wait = times[1] - times[0], times[2] - times[1]
        assert first_wait >= 0.07 and second_wait >= 0.15, "the delay doubles"

        started = time.monotonic()
        Sandbox.connect("sb_patient", client=client)
        assert time.monotonic() - started >= 0.95, "Retry-After: 1 was honoured"

        with pytest.raises(ServerUnavailableError, match="try again shortly"):
            Sandbox.create(client=client, shape="s-1vcpu-256mb")
        assert [m for m, p, _ in flaky.hits if p == "/v1/sandboxes"] == ["POST"], (
            "a create is not repeated"
        )


def test_retries_give_up_with_advice_when_nothing_listens() -> None:
    policy = RetryPolicy(max_retries=2, backoff_s=0.01)
    with (
        Client("http://127.0.0.1:9", "hk_any", retry=policy) as client,
        pytest.raises(ServerUnavailableError, match="tried 3 times") as caught,
    ):
        Sandbox.list(client=client)
    assert "HUTCH_API_URL" in str(caught.value) and caught.value.status is None
    with (
        Client("http://127.0.0.1:9", "hk_any", retry=policy) as client,
        pytest.raises(ServerUnavailableError, match="tried 3 times"),
    ):
        Sandbox.create(client=client, shape="s-1vcpu-256mb")  # refused: nothing was sent


# --- async -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_api(server: HutchProcess, key: str, s3: SeaweedS3) -> None:
    async with AsyncClient(server.url, key) as client:
        network = await AsyncNetwork.create(unique("anet"), client=client)
        async with await AsyncSandbox.create(client=client, networks=[network.id]) as sandbox:
            assert sandbox.status == "running"
            assert (await AsyncSandbox.connect(sandbox.id, client=client)).name == sandbox.name

            heard: list[str] = []

            async def hear(text: str) -> None:
                heard.append(text)

            result = await sandbox.commands.run("echo one; echo two", on_stdout=hear)
            assert "".join(heard) == "one\ntwo\n" == result.stdout

            events = [e async for e in sandbox.commands.stream("echo x; exit 2")]
            assert events[-1] == ExitEvent(exit_code=2)

            async def upload() -> AsyncIterator[bytes]:
                for _ in range(4):
                    yield b"z" * 100_000

            assert await sandbox.files.write("/a/b.bin", upload()) == 400_000
            assert await sandbox.files.read_bytes("/a/b.bin") == b"z" * 400_000
            with pytest.raises(CommandError):
                await sandbox.commands.run("false", check=True)

            await sandbox.pause()
            await sandbox.resume()
            assert (await sandbox.refresh()).status == "running"
            await network.detach(sandbox)
        assert sandbox.status == "destroyed"
        await network.delete()

        bucket = s3.make_bucket(unique("sdk-async"))
        disk = await AsyncDisk.create(unique("adisk"), bucket=bucket, endpoint=s3.endpoint,
                                      access_key=s3.access_key, secret_key=s3.secret_key,
                                      use_path_style=True, client=client)  # fmt: skip
        assert [d.id for d in await AsyncDisk.list(client=client)].count(disk.id) == 1
        await disk.delete()

        with pytest.raises(NotFoundError, match=r"Sandbox\.list"):
            await AsyncSandbox.connect("sb_gone", client=client)

    # Without a client: the sandbox has its own connection, closed on the way out.
    owned = await AsyncSandbox.create(api_url=server.url, api_key=key)
    async with owned:
        assert (await owned.commands.run("echo mine")).stdout == "mine\n"
    assert owned.status == "destroyed"
