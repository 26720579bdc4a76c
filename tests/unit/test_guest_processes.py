"""The guest agent's managed processes and self-signal, with the agent as a plain process
(the fake driver's mode). The same through the API, on runc: tests/e2e."""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hutch.host.guest import GuestClient, GuestError
from tests.support.guest import start_agent

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[GuestClient, str, Path]]:
    root, sock = tmp_path / "root", tmp_path / "agent.sock"
    root.mkdir()
    address = f"127.0.0.1:{free_port()}"
    fifo = tmp_path / "self"
    proc = start_agent(sock, root, self_http=address, self_fifo=fifo)
    yield GuestClient(sock), address, fifo
    proc.kill()
    proc.wait()


async def call(guest: GuestClient, **request: Any) -> dict[str, Any]:
    return await guest.call(request, timeout_s=30)


async def start(guest: GuestClient, argv: list[str], **more: Any) -> dict[str, Any]:
    answer = await call(guest, op="proc_start", argv=argv, cmd=argv[0], args=argv[1:], **more)
    process: dict[str, Any] = answer["process"]
    return process


async def output(guest: GuestClient, ident: str, after: int = 0) -> bytes:
    got = await call(guest, op="proc_read", id=ident, after=after, wait=0)
    return b"".join(base64.b64decode(data) for _, _, data in got["chunks"])


async def test_a_process_view_has_every_field(agent: tuple[GuestClient, str, Path]) -> None:
    guest = agent[0]
    view = await start(guest, ["/bin/sh", "-c", "echo out; echo err >&2"])
    assert view["kind"] == "process" and view["pid"] > 0
    assert view["cmd"] == "/bin/sh" and view["args"] == ["-c", "echo out; echo err >&2"]
    done = (await call(guest, op="proc_wait", id=view["process_id"], scope="tree", timeout=10))[
        "process"
    ]
    assert done["state"] == "exited" and done["exit_code"] == 0 and done["signal"] is None
    assert done["leader_exited"] and done["tree_exited"]
    assert done["finished_at"] >= done["created_at"]
    assert done["output"] == {"oldest_seq": 1, "newest_seq": 2, "bytes": 8}
    got = await call(guest, op="proc_read", id=view["process_id"], after=0, wait=0)
    assert sorted((stream, base64.b64decode(data)) for _, stream, data in got["chunks"]) == [
        ("stderr", b"err\n"),
        ("stdout", b"out\n"),
    ]


async def test_input_is_numbered_and_closing_it_ends_cat(
    agent: tuple[GuestClient, str, Path],
) -> None:
    guest = agent[0]
    cat = await start(guest, ["cat"])
    ident = cat["process_id"]
    assert cat["state"] == "running" and not cat["leader_exited"]
    first = await call(guest, op="proc_write", id=ident, data=base64.b64encode(b"a\n").decode())
    second = await call(guest, op="proc_write", id=ident, data=base64.b64encode(b"b\n").decode())
    assert (first["input_seq"], second["input_seq"]) == (1, 2)
    await call(guest, op="proc_close", id=ident)
    done = (await call(guest, op="proc_wait", id=ident, scope="leader", timeout=10))["process"]
    assert done["exit_code"] == 0
    assert await output(guest, ident) == b"a\nb\n"
    with pytest.raises(GuestError) as refused:
        await call(guest, op="proc_write", id=ident, data="eA==")
    assert refused.value.code == "conflict"


async def test_the_tree_outlives_its_leader_until_it_ends(
    agent: tuple[GuestClient, str, Path],
) -> None:
    guest = agent[0]
    view = await start(guest, ["/bin/sh", "-c", "sleep 1 & echo started"])
    ident = view["process_id"]
    leader = (await call(guest, op="proc_wait", id=ident, scope="leader", timeout=10))["process"]
    assert leader["leader_exited"] and not leader["tree_exited"]
    quick = (await call(guest, op="proc_wait", id=ident, scope="tree", timeout=0))["process"]
    assert not quick["tree_exited"]
    tree = (await call(guest, op="proc_wait", id=ident, scope="tree", timeout=20))["process"]
    assert tree["tree_exited"]


async def test_kill_ends_the_tree_and_forgets_the_process(
    agent: tuple[GuestClient, str, Path],
) -> None:
    guest = agent[0]
    stubborn = await start(guest, ["/bin/sh", "-c", "trap '' TERM; sleep 300 & wait; sleep 300"])
    ident = stubborn["process_id"]
    final = (await call(guest, op="proc_kill", id=ident, grace=0.3))["process"]
    assert final["tree_exited"] and final["signal"] == "SIGKILL" and final["exit_code"] == 137
    with pytest.raises(GuestError) as gone:
        await call(guest, op="proc_get", id=ident)
    assert gone.value.code == "not_found"


async def test_a_terminal_has_a_size_and_a_foreground_job(
    agent: tuple[GuestClient, str, Path],
) -> None:
    guest = agent[0]
    shell = await start(guest, ["/bin/sh"], pty={"rows": 33, "cols": 101})
    ident = shell["process_id"]
    assert shell["kind"] == "pty"
    await call(guest, op="proc_write", id=ident, data=base64.b64encode(b"stty size\n").decode())
    for _ in range(100):
        if b"33 101" in await output(guest, ident):
            break
        await asyncio.sleep(0.05)
    assert b"33 101" in await output(guest, ident)
    await call(guest, op="proc_write", id=ident, data=base64.b64encode(b"sleep 30\n").decode())
    for _ in range(100):
        view = (await call(guest, op="proc_get", id=ident))["process"]
        if view["foreground"] and view["foreground"]["cmd"] == "sleep":
            break
        await asyncio.sleep(0.05)
    assert view["foreground"]["args"] == ["30"]
    before = len(await output(guest, ident))
    await call(guest, op="proc_signal", id=ident, signal=2)  # to the foreground job only
    # As a user types after ^C: once the shell's next prompt is there. (This test failed
    # now and then when its runner started with SIGINT ignored: the agent passed that on
    # and the sleep outlived the ^C. The agent now restores the default; see
    # test_guest_agent's test_commands_do_not_inherit_signals_the_launcher_ignored.)
    for _ in range(200):
        if (await output(guest, ident))[before:].rstrip(b" ").endswith((b"#", b"$")):
            break
        await asyncio.sleep(0.05)
    await call(guest, op="proc_write", id=ident, data=base64.b64encode(b"exit 4\n").decode())
    done = (await call(guest, op="proc_wait", id=ident, scope="leader", timeout=10))["process"]
    assert done["exit_code"] == 4


async def test_a_self_signal_waits_for_the_host(agent: tuple[GuestClient, str, Path]) -> None:
    guest, address, fifo = agent
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        answer = await http.post("/self/pause", params={"reason": "done " + "x" * 200})
        assert answer.status_code == 202
        assert (await http.get("/self/pause")).status_code == 405
        assert (await http.post("/self/other")).status_code == 404
    signal = await guest.watch_self()
    assert signal.action == "pause" and signal.reason == ("done " + "x" * 200)[:128]
    # Nothing pending: the watch waits until the sandbox asks (here, through the FIFO).
    waiting = asyncio.create_task(guest.watch_self())
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await asyncio.to_thread(fifo.write_bytes, b"nonsense\nretire\n")
    signal = await asyncio.wait_for(waiting, 10)
    assert signal.action == "delete" and signal.reason is None


async def test_a_watch_the_host_gave_up_on_loses_no_signal(
    agent: tuple[GuestClient, str, Path],
) -> None:
    guest, address, _ = agent
    abandoned = asyncio.create_task(guest.watch_self())
    await asyncio.sleep(0.2)
    abandoned.cancel()
    await asyncio.sleep(0.2)
    subprocess.run(["curl", "-sf", "-X", "POST", f"http://{address}/self/delete"], check=True)
    signal = await asyncio.wait_for(guest.watch_self(), 10)
    assert signal.action == "delete"
