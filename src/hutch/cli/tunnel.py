"""``hutch tunnel`` and ``hutch ssh``: TCP ports of a sandbox, reached through the API.

``hutch tunnel SANDBOX PORT`` joins this program's stdin and stdout to the port (for
ssh's ``ProxyCommand``); ``hutch tunnel SANDBOX --local L --remote R`` listens on a local
port and opens a tunnel for each connection to it. ``hutch ssh SANDBOX`` puts your public
key on the sandbox (``ssh-pubkeys``, once) and runs the system's ``ssh`` through a tunnel
to port 22, so no port of the sandbox is exposed anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import socket
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from hutch.cli.common import fail
from hutch.cli.output import EXIT_USAGE, ApiKeyOpt, ApiUrlOpt, config, describe, report, run, say
from hutch.core.splice import splice
from hutch.sdk import AsyncClient, AsyncSandbox, errors
from hutch.sdk._config import ClientConfig
from hutch.sdk.tunnels import open_upgraded, tunnel_path

__all__ = ["ssh", "tunnel"]

READ_BYTES = 256 * 1024
_DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


def tunnel(
    sandbox: Annotated[str, typer.Argument(help="A sandbox id or name.")],
    port: Annotated[
        int | None, typer.Argument(help="The port inside, joined to stdin/stdout.")
    ] = None,
    local: Annotated[
        int | None,
        typer.Option("--local", help="Listen on this local port (with --remote; 0: any free one)."),
    ] = None,
    remote: Annotated[
        int | None, typer.Option("--remote", help="The port inside the sandbox (with --local).")
    ] = None,
    bind: Annotated[str, typer.Option("--bind", help="The local address to listen on.")] = (
        "127.0.0.1"
    ),
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Reach a TCP port inside a sandbox, through the API (no port is exposed).

    With PORT, stdin and stdout are the connection (for ssh's ProxyCommand); with --local
    and --remote, connections to the local port are forwarded until Ctrl-C.

    Examples:  ssh -o ProxyCommand='hutch tunnel %h 22' root@dev
               hutch tunnel dev --local 5432 --remote 5432
    """
    resolved = config(api_url, api_key)
    if local is not None or remote is not None:
        if port is not None or local is None or remote is None:
            fail("give either PORT, or both --local and --remote", hint="see --help",
                 code=EXIT_USAGE)  # fmt: skip
        raise typer.Exit(_listen(resolved, sandbox, bind, local, remote))
    if port is None:
        fail("give the port inside the sandbox", hint="e.g. hutch tunnel dev 22", code=EXIT_USAGE)
    try:
        sock, early = open_upgraded(resolved, tunnel_path(sandbox, port),
                                    subjects={"sandbox": sandbox})  # fmt: skip
    except errors.HutchError as exc:
        report(exc, api_url=resolved.api_url)
    _stdio(sock, early)


def _stdio(sock: socket.socket, early: bytes) -> None:
    """Copy stdin → socket and socket → stdout until both are done, passing half-closes."""

    def upstream() -> None:
        with contextlib.suppress(OSError):
            while data := os.read(0, READ_BYTES):
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=upstream, daemon=True)
    sender.start()
    with contextlib.suppress(OSError):
        _write_all(1, early)
        while data := sock.recv(READ_BYTES):
            _write_all(1, data)
    os.close(1)
    sender.join()
    sock.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _listen(resolved: ClientConfig, sandbox: str, bind: str, local: int, remote: int) -> int:
    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock, early = await asyncio.to_thread(
                open_upgraded, resolved, tunnel_path(sandbox, remote), subjects={"sandbox": sandbox}
            )
        except errors.HutchError as exc:
            say(describe(exc, api_url=resolved.api_url))
            writer.close()
            return
        inner_reader, inner_writer = await asyncio.open_connection(sock=sock)
        writer.write(early)
        try:
            await splice(reader, writer, inner_reader, inner_writer)
        finally:
            for side in (writer, inner_writer):
                side.close()

    async def main() -> int:
        try:
            server = await asyncio.start_server(forward, bind, local)
        except OSError as exc:
            fail(f"cannot listen on {bind}:{local}: {exc.strerror or exc}",
                 hint="pick another --local port, or --bind address")  # fmt: skip
        async with server:
            port = server.sockets[0].getsockname()[1]  # --local 0: the port the system chose
            print(f"forwarding {bind}:{port} to port {remote} of {sandbox} (Ctrl-C to stop)",
                  file=sys.stderr, flush=True)  # fmt: skip
            await server.serve_forever()
        return 0

    async def checked(client: AsyncClient) -> None:
        await AsyncSandbox.connect(sandbox, client=client)  # a wrong name fails now, not later

    run(resolved.api_url, resolved.api_key, checked)
    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 0


def ssh(
    sandbox: Annotated[str, typer.Argument(help="A sandbox id or name.")],
    command: Annotated[
        list[str] | None, typer.Argument(help="A command to run instead of a login shell.")
    ] = None,
    identity: Annotated[
        Path | None,
        typer.Option("-i", "--identity", help="Your private key (default: ~/.ssh/id_ed25519…)."),
    ] = None,
    option: Annotated[
        list[str] | None, typer.Option("-o", "--option", help="An ssh option, as ssh -o takes.")
    ] = None,
    login: Annotated[str, typer.Option("--user", help="The user to log in as.")] = "root",
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Log in to a sandbox with the system's ssh, through a tunnel to its port 22.

    Your public key (the .pub beside the private one) is added to the sandbox first if it
    does not have it yet; sshd starts in the sandbox on first use. The sandbox's host key
    is remembered under its id (accepted the first time).

    Examples:  hutch ssh dev
               hutch ssh dev -- uname -a
               hutch ssh dev -o LocalForward=8080:localhost:8080
    """
    program = shutil.which("ssh")
    if program is None:
        fail(
            "no ssh program found", hint="install OpenSSH's client (apt-get install openssh-client)"
        )
    private = identity or _default_key()
    public = Path(f"{private}.pub")
    try:
        public_key = public.read_text().strip()
    except OSError as exc:
        fail(f"cannot read your public key {public}: {exc.strerror}",
             hint="make a key pair with `ssh-keygen -t ed25519`, or give one with -i")  # fmt: skip
    resolved = config(api_url, api_key)

    async def action(client: AsyncClient) -> str:
        found = await AsyncSandbox.connect(sandbox, client=client)
        view: Any = await client.transport.data(
            "GET", f"/v1/sandboxes/{found.id}", idempotent=True, subjects={"sandbox": found.id}
        )
        status = view.get("status") if isinstance(view, dict) else None
        if status not in (None, "running"):
            fail(f"sandbox {sandbox} is {status}, not running",
                 hint=f"resume it first: hutch sandbox resume {sandbox}" if status == "paused"
                 else "see its state with `hutch sandbox get`")  # fmt: skip
        held = view.get("ssh_pubkeys") if isinstance(view, dict) else None
        blob = public_key.split()[1] if len(public_key.split()) > 1 else public_key
        if not isinstance(held, list) or not any(blob in str(key) for key in held):
            await client.transport.data(
                "POST", f"/v1/sandboxes/{found.id}/ssh-pubkeys", idempotent=True,
                json={"keys": [public_key]}, subjects={"sandbox": found.id},
            )  # fmt: skip
        return found.id

    sandbox_id = run(resolved.api_url, resolved.api_key, action)
    proxy = shlex.join([sys.executable, "-m", "hutch", "tunnel", sandbox_id, "22"])
    argv = [
        program, "-i", str(private), "-o", "IdentitiesOnly=yes",
        "-o", f"ProxyCommand={proxy}", "-o", f"HostKeyAlias={sandbox_id}",
        "-o", "StrictHostKeyChecking=accept-new",
        *[arg for value in option or [] for arg in ("-o", value)],
        f"{login}@{sandbox_id}", *(command or []),
    ]  # fmt: skip
    # The key reaches the tunnel through the environment, never on a command line.
    env = {**os.environ, "HUTCH_API_URL": resolved.api_url, "HUTCH_API_KEY": resolved.api_key}
    sys.stdout.flush()
    os.execve(program, argv, env)


def _default_key() -> Path:
    directory = Path.home() / ".ssh"
    for name in _DEFAULT_KEYS:
        if (directory / name).is_file() and (directory / f"{name}.pub").is_file():
            return directory / name
    fail(f"no SSH key pair in {directory} ({', '.join(_DEFAULT_KEYS)})",
         hint="make one with `ssh-keygen -t ed25519`, or give one with -i")  # fmt: skip
