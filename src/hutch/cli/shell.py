"""``hutch shell``: an interactive shell in a sandbox, on this terminal.

The shell is a managed process on a terminal of its own in the sandbox (``POST
…/processes`` with ``pty: {rows, cols}``; without ``--cmd``, the sandbox's login shell);
this program joins it over the process's WebSocket. The local terminal is
put in raw mode, so every key (Ctrl-C and Ctrl-D included) goes to the remote terminal as
bytes, and its output comes back untouched (colours, cursor movement). Window size changes
(SIGWINCH) are sent as resize messages. The local terminal is restored however the
session ends, and the program exits with the shell's exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from hutch.cli.common import fail
from hutch.cli.output import ApiKeyOpt, ApiUrlOpt, run
from hutch.sdk import AsyncClient, AsyncSandbox, StreamError

__all__ = ["shell"]

READ_BYTES = 65536
_STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def shell(
    sandbox: Annotated[str, typer.Argument(help="A sandbox id or name.")],
    cmd: Annotated[
        str | None,
        typer.Option(
            "--cmd",
            help="The program (and arguments) to run on the terminal; "
            "by default the sandbox's login shell.",
        ),
    ] = None,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Open an interactive shell inside a running sandbox; exit with the shell's exit code.

    Ctrl-C and every other key go to the sandbox; `exit` ends the session.
    It needs a terminal: in scripts, use hutch exec.

    Example:  hutch shell dev --cmd "bash -l"
    """
    if not sys.stdin.isatty():
        fail(
            "hutch shell needs a terminal, and its standard input is not one",
            hint="run it from a terminal; in scripts use `hutch exec SANDBOX -- CMD ARGS…`",
        )
    argv = shlex.split(cmd) if cmd is not None else []
    if cmd is not None and not argv:
        fail("--cmd is empty", hint="e.g. --cmd bash, or leave it out for the login shell", code=2)
    terminal = sys.stdin.fileno()

    async def action(client: AsyncClient) -> int:
        found = await AsyncSandbox.connect(sandbox, client=client)
        rows, cols = _size(terminal)
        started = await found.processes.start(
            argv[0] if argv else None, argv[1:] if argv else None, pty=(rows, cols)
        )
        url = _websocket_url(client.config.api_url, found.id, started.process_id)
        return await _attach(url, client.config.api_key, terminal)

    raise typer.Exit(run(api_url, api_key, action))


def _websocket_url(api_url: str, sandbox_id: str, process_id: str) -> str:
    scheme, sep, rest = api_url.partition("://")
    ws_scheme = {"http": "ws", "https": "wss"}.get(scheme.lower(), scheme)
    return f"{ws_scheme}{sep}{rest}/v1/sandboxes/{sandbox_id}/processes/{process_id}/ws"


def _size(fd: int) -> tuple[int, int]:
    """(rows, cols) of the terminal on ``fd``, within what the server takes."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 24, 80
    return min(max(size.lines, 1), 1000), min(max(size.columns, 1), 1000)


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    """The terminal on ``fd`` in raw mode, restored on the way out whatever happens."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _attach(url: str, api_key: str, terminal: int) -> int:
    try:
        websocket = await connect(
            url, additional_headers={"X-Api-Key": api_key}, max_size=None, open_timeout=30
        )
    except InvalidStatus as exc:
        raise StreamError(
            f"the server refused the terminal's WebSocket (HTTP {exc.response.status_code}); "
            "is the shell still running?"
        ) from exc
    except (InvalidHandshake, InvalidURI, OSError, TimeoutError) as exc:
        raise StreamError(f"cannot open the terminal's WebSocket at {url}: {exc}") from exc
    async with websocket:
        with _raw(terminal):
            return await _session(websocket, terminal)


async def _session(websocket: ClientConnection, terminal: int) -> int:
    """Keys to the shell, its output to stdout, until it exits (its exit code) or a signal
    ends this program (128 + the signal)."""
    loop = asyncio.get_running_loop()
    keys: asyncio.Queue[bytes | str] = asyncio.Queue()
    stopped: asyncio.Future[int] = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(terminal, READ_BYTES)
        except OSError:
            data = b""
        if not data:  # the terminal hung up
            loop.remove_reader(terminal)
        keys.put_nowait(data)

    def stop(signum: int) -> None:
        if not stopped.done():
            stopped.set_result(128 + signum)

    def resized() -> None:
        rows, cols = _size(terminal)
        keys.put_nowait(json.dumps({"type": "resize", "rows": rows, "cols": cols}))

    loop.add_reader(terminal, readable)
    loop.add_signal_handler(signal.SIGWINCH, resized)
    for signum in _STOPPING_SIGNALS:
        loop.add_signal_handler(signum, stop, signum)
    sender = asyncio.create_task(_send(websocket, keys))
    receiver = asyncio.create_task(_receive(websocket))
    try:
        done, _ = await asyncio.wait({receiver, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if receiver in done:
            return receiver.result()
        # Leaving while the shell runs: hang it up rather than leave it behind.
        with contextlib.suppress(ConnectionClosed):
            await websocket.send(json.dumps({"type": "signal", "signal": "HUP"}))
        return stopped.result()
    finally:
        loop.remove_reader(terminal)
        loop.remove_signal_handler(signal.SIGWINCH)
        for signum in _STOPPING_SIGNALS:
            loop.remove_signal_handler(signum)
        for task in (sender, receiver):
            task.cancel()
        await asyncio.gather(sender, receiver, return_exceptions=True)


async def _send(websocket: ClientConnection, keys: asyncio.Queue[bytes | str]) -> None:
    """Keystrokes (bytes) as binary frames, control messages (JSON text) as text frames;
    empty bytes mean the local terminal hung up, which hangs up the shell."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            data = await keys.get()
            if data == b"":
                await websocket.send(json.dumps({"type": "signal", "signal": "HUP"}))
                return
            await websocket.send(data)


async def _receive(websocket: ClientConnection) -> int:
    """Write the shell's output to stdout as it comes; its exit code at the end."""
    out = sys.stdout.fileno()
    try:
        async for message in websocket:
            if isinstance(message, bytes):
                _write_all(out, message)
                continue
            event: Any = json.loads(message)
            if isinstance(event, dict) and event.get("type") == "exit":
                code = event.get("exit_code")
                return code if isinstance(code, int) else 1
    except ConnectionClosed as exc:
        raise StreamError(f"the connection to the shell broke off ({exc})") from exc
    raise StreamError("the connection to the shell closed before the shell exited")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
