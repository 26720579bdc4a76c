"""The guest agent's protocol, with the agent as a plain process (the fake driver's mode)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import hutch.guest.agent as agent_module
from hutch.host.guest import ExecExit, ExecOutput, ExecRequest, GuestClient, GuestError
from tests.support.guest import start_agent

pytestmark = pytest.mark.anyio


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture(params=["popen", "posix_spawn"])
def guest(tmp_path: Path, root: Path, request: pytest.FixtureRequest) -> Iterator[GuestClient]:
    """The agent started elsewhere (every exec by Popen, as in a working directory other
    than the agent's own) or in its root (an exec without stdin in ``/`` by posix_spawn)."""
    sock = tmp_path / "agent.sock"
    proc = start_agent(sock, root, **({"cwd": root} if request.param == "posix_spawn" else {}))
    yield GuestClient(sock)
    proc.kill()
    proc.wait()


async def run(guest: GuestClient, request: ExecRequest) -> tuple[bytes, bytes, ExecExit]:
    out, err = bytearray(), bytearray()
    exit_ = None
    async for event in guest.exec(request):
        if isinstance(event, ExecOutput):
            (out if event.stream == "stdout" else err).extend(event.data)
        else:
            exit_ = event
    assert exit_ is not None
    return bytes(out), bytes(err), exit_


async def test_ping(guest: GuestClient) -> None:
    reply = await guest.ping()
    assert reply["ok"] and reply["version"] == agent_module.VERSION


async def test_exec_output_exit_code_env_and_cwd(guest: GuestClient, root: Path) -> None:
    (root / "work").mkdir()
    out, err, done = await run(
        guest,
        ExecRequest(
            argv=["/bin/sh", "-c", 'echo "$GREETING"; pwd; echo oops >&2; exit 3'],
            env={"GREETING": "hello", "PATH": "/usr/bin:/bin"},
            cwd="/work",
        ),
    )
    assert out == f"hello\n{root / 'work'}\n".encode()
    assert err == b"oops\n"
    assert (done.exit_code, done.error) == (3, None)


async def test_stdin_reaches_the_command(guest: GuestClient) -> None:
    out, _, done = await run(guest, ExecRequest(argv=["/bin/cat"], stdin=b"\x00\xffbinary in"))
    assert out == b"\x00\xffbinary in" and done.exit_code == 0


async def test_a_timeout_kills_the_whole_process_group(guest: GuestClient, root: Path) -> None:
    marker = root / "survivor"
    started = time.monotonic()
    _, _, done = await run(
        guest,
        ExecRequest(
            argv=["/bin/sh", "-c", f"(sleep 2; touch {marker}) & sleep 30"],
            timeout_s=0.5,
        ),
    )
    assert done.error == "timeout: killed after 0.5 s"
    assert time.monotonic() - started < 20
    await asyncio.sleep(2.5)
    assert not marker.exists(), "the background child outlived the timeout"


async def test_an_exec_ends_with_its_command_not_with_a_background_child(
    guest: GuestClient, root: Path
) -> None:
    """A child left in the background keeps the output pipes open; the exec still ends
    when its command does (the child is alive when the answer comes)."""
    pidfile = root / "child.pid"
    out, _, done = await run(
        guest,
        ExecRequest(argv=["/bin/sh", "-c", f"sleep 300 & echo $! > {pidfile}; echo done"]),
    )
    assert (out, done.exit_code) == (b"done\n", 0)
    child = int(pidfile.read_text())
    try:
        os.kill(child, 0)  # still running: the exec did not wait for it
    finally:
        os.kill(child, signal.SIGKILL)


async def test_a_command_that_closed_its_output_is_still_timed_out(
    guest: GuestClient, root: Path
) -> None:
    """Output closed early (a command that sends its output to a file, then works on):
    the timeout still ends it, as it does a command that keeps its pipes."""
    marker = root / "survivor"
    script = f"exec >/dev/null 2>&1; sleep 2; touch {marker}; sleep 300"
    request = ExecRequest(argv=["/bin/sh", "-c", script], timeout_s=0.5)
    _, _, done = await asyncio.wait_for(run(guest, request), 120)
    assert done.error == "timeout: killed after 0.5 s"
    await asyncio.sleep(2.5)
    assert not marker.exists(), "the command outlived its timeout"


async def test_hanging_up_kills_a_command_that_closed_its_output(
    guest: GuestClient, root: Path
) -> None:
    marker = root / "after-hangup"
    script = f"echo started; exec >/dev/null 2>&1; sleep 2; touch {marker}"
    events = guest.exec(ExecRequest(argv=["/bin/sh", "-c", script]))
    first = await anext(events)
    assert isinstance(first, ExecOutput) and first.data == b"started\n"
    await events.aclose()
    await asyncio.sleep(2.5)
    assert not marker.exists()


async def test_missing_command_and_cwd_are_errors_not_crashes(guest: GuestClient) -> None:
    _, _, done = await run(guest, ExecRequest(argv=["/no/such/program"]))
    assert done.exit_code is None and done.error == "command not found: /no/such/program"
    _, _, done = await run(guest, ExecRequest(argv=["/bin/true"], cwd="/nowhere"))
    assert done.error == "working directory not found: /nowhere"
    assert (await guest.ping())["ok"]


async def test_hanging_up_kills_the_command(guest: GuestClient, root: Path) -> None:
    marker = root / "after-hangup"
    events = guest.exec(
        ExecRequest(argv=["/bin/sh", "-c", f"echo started; sleep 2; touch {marker}"])
    )
    first = await anext(events)
    assert isinstance(first, ExecOutput) and first.data == b"started\n"
    await events.aclose()
    await asyncio.sleep(2.5)
    assert not marker.exists()


async def chunks_of(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_files_round_trip_exact_bytes(guest: GuestClient, root: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    assert await guest.write_file("/deep/dir/blob.bin", chunks_of(data)) == len(data)
    assert (root / "deep/dir/blob.bin").read_bytes() == data
    download = await guest.read_file("/deep/dir/blob.bin")
    assert download.size == len(data)
    assert b"".join([c async for c in download.chunks]) == data
    assert await guest.write_file("/empty", chunks_of(b"")) == 0
    assert (await guest.read_file("/empty")).size == 0


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("relative/path", "invalid"),
        ("/a/../etc/passwd", "invalid"),
        ("/missing", "not_found"),
        ("/", "is_directory"),
    ],
)
async def test_bad_reads(guest: GuestClient, path: str, code: str) -> None:
    with pytest.raises(GuestError) as caught:
        await guest.read_file(path)
    assert caught.value.code == code


async def test_writing_onto_a_directory_is_refused(guest: GuestClient, root: Path) -> None:
    (root / "dir").mkdir()
    with pytest.raises(GuestError) as caught:
        await guest.write_file("/dir", chunks_of(b"x"))
    assert caught.value.code == "is_directory"


async def test_a_cut_off_upload_keeps_the_old_file(guest: GuestClient, root: Path) -> None:
    (root / "keep.txt").write_bytes(b"original")

    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        await guest.write_file("/keep.txt", broken())
    await asyncio.sleep(0.2)
    assert (root / "keep.txt").read_bytes() == b"original"
    assert [p.name for p in root.iterdir()] == ["keep.txt"]


async def test_configure_gives_a_fresh_agent_its_environment_once(guest: GuestClient) -> None:
    env = {"PATH": "/usr/bin:/bin", "OWNER": "alice", "HUTCH_GUEST_USER": "never-seen"}
    assert await guest.call({"op": "configure", "env": env}) == {"ok": True}
    out, _, _ = await run(guest, ExecRequest(argv=["/usr/bin/env"]))
    assert sorted(out.decode().splitlines()) == ["OWNER=alice", "PATH=/usr/bin:/bin"]
    with pytest.raises(GuestError) as again:  # a warm sandbox is configured once
        await guest.call({"op": "configure", "env": {"OWNER": "mallory"}})
    assert again.value.code == "used"


async def test_configure_is_refused_once_anything_ran(guest: GuestClient) -> None:
    await guest.ping()  # the host's readiness probe does not count
    await run(guest, ExecRequest(argv=["/bin/true"]))
    with pytest.raises(GuestError) as refused:
        await guest.call({"op": "configure", "env": {"OWNER": "bob"}})
    assert refused.value.code == "used"
    out, _, _ = await run(guest, ExecRequest(argv=["/bin/sh", "-c", "echo ${OWNER:-unset}"]))
    assert out == b"unset\n"


async def test_commands_at_once_each_get_their_output_and_few_threads_stay(
    guest: GuestClient,
) -> None:
    """Connections are served by threads that wait for the next one (made when none
    waits): six commands at once each get their own output, twenty requests one after
    another are all answered, and afterwards the agent keeps at most its reaper and
    ``SPARE_ACCEPTORS`` waiting threads beside its main one (threads count against a
    sandbox's pids limit)."""
    pid = (await guest.ping())["pid"]
    results = await asyncio.gather(
        *(run(guest, ExecRequest(argv=["/bin/sh", "-c", f"sleep 0.3; echo {i}"])) for i in range(6))
    )
    assert [(out, done.exit_code) for out, _, done in results] == [
        (f"{i}\n".encode(), 0) for i in range(6)
    ]
    for i in range(20):
        out, _, done = await run(guest, ExecRequest(argv=["/bin/echo", str(i)]))
        assert (out, done.exit_code) == (f"{i}\n".encode(), 0)
    threads = len(os.listdir(f"/proc/{pid}/task"))
    deadline = time.monotonic() + 5
    while threads > 2 + agent_module.SPARE_ACCEPTORS and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # (a thread that is done may still be ending)
        threads = len(os.listdir(f"/proc/{pid}/task"))
    assert threads <= 2 + agent_module.SPARE_ACCEPTORS


@pytest.mark.parametrize("where", ["popen", "posix_spawn"])
async def test_commands_do_not_inherit_signals_the_launcher_ignored(
    tmp_path: Path, root: Path, where: str
) -> None:
    """As under ``nohup hutch serve &``: the agent starts with SIGHUP, SIGINT and SIGQUIT
    ignored. Its commands get them at their default (else ^C interrupts nothing)."""

    def ignoring() -> None:
        for number in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):
            signal.signal(number, signal.SIG_IGN)

    sock = tmp_path / "ignoring.sock"
    cwd = {"cwd": root} if where == "posix_spawn" else {}
    proc = start_agent(sock, root, preexec_fn=ignoring, **cwd)
    try:
        out, _, done = await run(
            GuestClient(sock), ExecRequest(argv=["/bin/cat", "/proc/self/status"])
        )
    finally:
        proc.kill()
        proc.wait()
    assert done.exit_code == 0
    ignored = int(next(line for line in out.decode().splitlines()
                       if line.startswith("SigIgn:")).split()[1], 16)  # fmt: skip
    for number in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):
        assert not ignored & (1 << (number - 1)), f"{signal.Signals(number).name} ignored"


async def test_commands_the_agent_refuses_leave_no_descriptor_open_in_it(
    guest: GuestClient,
) -> None:
    """An argument with a NUL byte cannot be passed to a program (refused, "invalid"):
    the pipes made for its output are closed all the same (with posix_spawn they stayed
    open in the agent, two at each such request, until it had none left)."""
    pid = (await guest.ping())["pid"]
    await run(guest, ExecRequest(argv=["/bin/true"]))  # (what an exec loads, loaded)

    def held() -> int:
        return len(os.listdir(f"/proc/{pid}/fd"))

    before = held()
    for _ in range(20):
        with pytest.raises(GuestError, match="null byte"):
            await run(guest, ExecRequest(argv=["/bin/echo", "a\0b"]))
    deadline = time.monotonic() + 5
    while held() > before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # (a connection just answered may still be closing)
    assert held() <= before, f"{held() - before} descriptors more in the agent"
