"""``hutch sandbox …``, ``hutch exec`` and ``hutch cp``: sandboxes, the commands in them and
their files, through the SDK."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from hutch.cli.common import fail
from hutch.cli.output import (
    EXIT_USAGE,
    ApiKeyOpt,
    ApiUrlOpt,
    JsonOpt,
    details,
    print_json,
    print_table,
    remove_each,
    run,
    stderr_is_tty,
    when,
)
from hutch.sdk import (
    AsyncClient,
    AsyncSandbox,
    ExecOptions,
    SandboxInfo,
    SandboxOptions,
)

__all__ = ["app", "copy", "exec_command", "parse_env"]

app = typer.Typer(
    help="Create, list, pause, resume and remove sandboxes.\n\n"
    "Example:  hutch sandbox create --name dev && hutch sandbox ls",
    no_args_is_help=True,
)

COLUMNS = ("id", "name", "status", "shape", "ip", "created")
PROGRESS_OVER_BYTES = 1024 * 1024
CHUNK_BYTES = 1024 * 1024

QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the ids.")]


def parse_env(pairs: list[str] | None) -> dict[str, str]:
    """``K=V`` options as a mapping; a pair without ``=`` is a usage error (exit 2)."""
    env: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            fail(
                f"--env {pair!r} is not NAME=VALUE", hint="write --env NAME=VALUE", code=EXIT_USAGE
            )
        env[name] = value
    return env


def _row(info: SandboxInfo) -> tuple[object, ...]:
    return (info.id, info.name, info.status, info.shape, info.ip, when(info.created_at))


def _show(infos: list[SandboxInfo], *, as_json: bool, quiet: bool = False) -> None:
    if as_json:
        print_json([info.raw for info in infos])
    elif quiet:
        for info in infos:
            sys.stdout.write(info.id + "\n")
    else:
        print_table(COLUMNS, (_row(info) for info in infos))


@app.command("create")
def create(
    shape: Annotated[
        str | None, typer.Option("--shape", help="A shape id; default the server's smallest.")
    ] = None,
    rootfs: Annotated[
        str | None,
        typer.Option(
            "--rootfs",
            help="An image such as devbox:1 or node, or one of your templates (id or name).",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Also its hostname; default a generated one.")
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="NAME=VALUE, repeatable.")
    ] = None,
    network: Annotated[
        list[str] | None, typer.Option("--network", help="A network id or name, repeatable.")
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=1, help="Seconds until the server destroys it."),
    ] = None,
    egress: Annotated[
        list[str] | None,
        typer.Option(
            "--egress",
            help="Allow only this destination out (host, host:port, *.host, ip, cidr…), "
            "repeatable; none: open (see `hutch egress`).",
        ),
    ] = None,
    ingress: Annotated[
        bool,
        typer.Option("--ingress", help="Reach its ports through the proxy (ingress_url_template)."),
    ] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Start a sandbox and print it once it runs.

    Example:  hutch sandbox create --name dev --rootfs devbox:1 -e DEBUG=1 --timeout 3600
              hutch sandbox create --egress pypi.org --egress '*.pythonhosted.org:443'
    """
    options: SandboxOptions = {}
    if shape is not None:
        options["shape"] = shape
    if rootfs is not None:
        options["rootfs"] = rootfs
    if name is not None:
        options["name"] = name
    if env:
        options["envs"] = parse_env(env)
    if network:
        options["networks"] = list(network)
    if timeout is not None:
        options["timeout"] = timeout
    if egress:
        options["egress"] = list(egress)
    if ingress:
        options["ingress_enabled"] = True

    async def action(client: AsyncClient) -> SandboxInfo:
        return (await AsyncSandbox.create(client=client, **options)).info

    info = run(api_url, api_key, action)
    if as_json:
        print_json(info.raw)
    else:
        _show([info], as_json=False, quiet=quiet)


@app.command("ls")
def list_sandboxes(
    status: Annotated[
        str | None,
        typer.Option(
            "--status", help="Comma-separated, e.g. destroyed,failed; default the live ones."
        ),
    ] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """List your sandboxes, newest first.

    Example:  hutch sandbox ls --status paused
    """

    async def action(client: AsyncClient) -> list[SandboxInfo]:
        return [s.info for s in await AsyncSandbox.list(status=status, client=client)]

    _show(run(api_url, api_key, action), as_json=as_json, quiet=quiet)


@app.command("get")
def get(
    sandbox: Annotated[str, typer.Argument(help="A sandbox id or name.")],
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Show one sandbox.

    Example:  hutch sandbox get dev --json
    """

    async def action(client: AsyncClient) -> SandboxInfo:
        return (await AsyncSandbox.connect(sandbox, client=client)).info

    info = run(api_url, api_key, action)
    if as_json:
        print_json(info.raw)
        return
    details(
        {
            "id": info.id,
            "name": info.name,
            "status": info.status,
            "reason": info.reason,
            "shape": info.shape,
            "rootfs": info.rootfs,
            "vcpu": info.vcpu,
            "memory": f"{info.mem_mib} MiB" if info.mem_mib else None,
            "disk": f"{info.disk_mib} MiB" if info.disk_mib else None,
            "ip": info.ip,
            "created": when(info.created_at),
            "env": info.envs,
        }
    )


@app.command("rm")
def remove(
    sandboxes: Annotated[list[str], typer.Argument(help="Sandbox ids or names.")],
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Destroy sandboxes (removing one twice is fine); goes on past the ones that fail.

    Example:  hutch sandbox rm dev sb_01hx…
    """

    async def kill(client: AsyncClient, ident: str) -> str:
        sandbox = await AsyncSandbox.connect(ident, client=client)
        await sandbox.kill()
        return sandbox.id

    remove_each(api_url, api_key, sandboxes, kill)


def _transition(
    sandbox: str, verb: str, api_url: str | None, api_key: str | None, as_json: bool
) -> None:
    async def action(client: AsyncClient) -> SandboxInfo:
        found = await AsyncSandbox.connect(sandbox, client=client)
        await (found.pause() if verb == "pause" else found.resume())
        return found.info

    info = run(api_url, api_key, action)
    if as_json:
        print_json(info.raw)
    else:
        sys.stdout.write(f"{info.id} {info.status}\n")


@app.command("pause")
def pause(
    sandbox: Annotated[str, typer.Argument(help="A sandbox id or name.")],
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Freeze every process in a sandbox, keeping its memory; pausing twice is fine.

    Example:  hutch sandbox pause dev
    """
    _transition(sandbox, "pause", api_url, api_key, as_json)


@app.command("snapshot")
def snapshot(
    sandbox: Annotated[str, typer.Argument(help="A sandbox id or name.")],
    name: Annotated[str, typer.Option("--name", help="The template's name (yours).")],
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Make a template of a sandbox's files as they are now; it keeps running. Prints the
    template's id and version; start sandboxes from it with --rootfs NAME.

    Example:  hutch sandbox snapshot dev --name dev-ready
    """

    async def action(client: AsyncClient) -> dict[str, Any]:
        found = await AsyncSandbox.connect(sandbox, client=client)
        return (await found.snapshot(name)).info.raw

    raw = run(api_url, api_key, action)
    if as_json:
        print_json(raw)
    else:
        sys.stdout.write(f"{raw['id']} {raw['name']} version {raw['version']} {raw['status']}\n")


@app.command("resume")
def resume(
    sandbox: Annotated[str, typer.Argument(help="A sandbox id or name.")],
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Thaw a paused sandbox; returns once it runs.

    Example:  hutch sandbox resume dev
    """
    _transition(sandbox, "resume", api_url, api_key, as_json)


# --- hutch exec ---------------------------------------------------------------------------


def exec_command(
    sandbox: Annotated[str, typer.Argument(help="A sandbox id or name.")],
    command: Annotated[list[str], typer.Argument(help="The program and its arguments.")],
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="NAME=VALUE, repeatable.")
    ] = None,
    cwd: Annotated[str | None, typer.Option("--cwd", help="Working directory inside.")] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0.001, help="Seconds before the command is killed."),
    ] = None,
    stdin: Annotated[
        bool, typer.Option("--stdin", help="Feed this program's standard input to the command.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print {stdout, stderr, exit_code, error} when it ends."),
    ] = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Run a command in a sandbox, streaming its output; exit with its exit code.

    The command is a program and its arguments, not a shell line.
    Put hutch's options before the sandbox, and the command after --.

    Example:  hutch exec dev --cwd /app -- sh -c 'make test 2>&1 | tail'
    """
    options: ExecOptions = {}
    if env:
        options["env"] = parse_env(env)
    if cwd is not None:
        options["cwd"] = cwd
    if timeout is not None:
        options["timeout"] = timeout
    if stdin:
        options["stdin"] = sys.stdin.buffer.read().decode("utf-8", "replace")

    def write(stream: IO[bytes]) -> Callable[[str], None]:
        def callback(data: str) -> None:
            stream.write(data.encode())
            stream.flush()

        return callback

    async def action(client: AsyncClient) -> dict[str, Any]:
        found = await AsyncSandbox.connect(sandbox, client=client)
        if as_json:
            result = await found.commands.run(command, **options)
        else:
            result = await found.commands.run(
                command,
                on_stdout=write(sys.stdout.buffer),
                on_stderr=write(sys.stderr.buffer),
                **options,
            )
        return {
            "stdout": result.stdout,
            "stderr": result.stderr,
            "exit_code": result.exit_code,
            "error": result.error,
        }

    result = run(api_url, api_key, action)
    if as_json:
        print_json(result)
    if result["exit_code"] is None:
        if not as_json:
            fail(
                f"the command did not finish: {result['error'] or 'no exit code'}",
                hint="raise --timeout if it needs longer",
            )
        raise typer.Exit(1)
    raise typer.Exit(result["exit_code"])


# --- hutch cp -----------------------------------------------------------------------------

_REMOTE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*):(/.*)$")


@dataclass(frozen=True)
class _Remote:
    sandbox: str
    path: str


def _parse_side(side: str) -> _Remote | str:
    match = _REMOTE.match(side)
    return _Remote(match.group(1), match.group(2)) if match else side


def copy(
    source: Annotated[str, typer.Argument(help="SANDBOX:/abs/path, a local path, or -.")],
    dest: Annotated[str, typer.Argument(help="SANDBOX:/abs/path, a local path, or -.")],
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Copy a file into or out of a sandbox, streamed (no size limit).

    One side is SANDBOX:/absolute/path, the other a local path, or - for
    stdin/stdout. A local directory, or a sandbox path ending in /,
    receives the file under its own name.

    Example:  hutch cp ./data.csv dev:/tmp/ && hutch cp dev:/var/log/app.log .
    """
    src, dst = _parse_side(source), _parse_side(dest)
    if isinstance(src, _Remote) == isinstance(dst, _Remote):
        fail(
            "one side of `hutch cp` must be SANDBOX:/absolute/path and the other local",
            hint="e.g. hutch cp ./file dev:/tmp/file; use ./a:/b for a local name with a colon",
            code=EXIT_USAGE,
        )
    if isinstance(dst, _Remote):
        assert isinstance(src, str)
        _upload(src, dst, api_url, api_key)
    else:
        assert isinstance(src, _Remote)
        _download(src, dst, api_url, api_key)


def _upload(local: str, remote: _Remote, api_url: str | None, api_key: str | None) -> None:
    name = "stdin" if local == "-" else Path(local).name
    path = remote.path + name if remote.path.endswith("/") else remote.path
    if local == "-":
        source: IO[bytes] = sys.stdin.buffer
        size = None
    else:
        try:
            source = open(local, "rb")  # noqa: SIM115 - closed below, after the upload
            size = os.fstat(source.fileno()).st_size
        except OSError as exc:
            fail(f"cannot read {local}: {exc.strerror}", hint="check the path")

    async def action(client: AsyncClient) -> None:
        sandbox = await AsyncSandbox.connect(remote.sandbox, client=client)
        with _progress(f"{name} → {remote.sandbox}", size) as advance:
            await sandbox.files.write(path, _blocks(source, advance))

    try:
        run(api_url, api_key, action)
    finally:
        if source is not sys.stdin.buffer:
            source.close()


def _download(remote: _Remote, local: str, api_url: str | None, api_key: str | None) -> None:
    name = remote.path.rstrip("/").rsplit("/", 1)[-1]
    target = Path(local) / name if local != "-" and Path(local).is_dir() else Path(local)

    async def action(client: AsyncClient) -> None:
        sandbox = await AsyncSandbox.connect(remote.sandbox, client=client)
        chunks = _chunks(client, sandbox.id, remote.path)
        size = int(await anext(chunks) or 0)  # the first item is the size
        if local == "-":
            with _progress(name, size) as advance:
                async for chunk in chunks:
                    await asyncio.to_thread(_write_out, chunk)
                    advance(len(chunk))
            return
        partial = target.with_name(f".{target.name}.partial")
        try:
            with partial.open("wb") as sink, _progress(name, size) as advance:
                async for chunk in chunks:
                    await asyncio.to_thread(sink.write, chunk)
                    advance(len(chunk))
            partial.replace(target)
        except OSError as exc:
            fail(f"cannot write {target}: {exc.strerror}", hint="check the destination")
        finally:
            partial.unlink(missing_ok=True)

    run(api_url, api_key, action)


async def _chunks(client: AsyncClient, sandbox_id: str, path: str) -> AsyncIterator[Any]:
    """The file's size (from Content-Length, or None), then its bytes in chunks."""
    async with client.transport.stream(
        "GET",
        f"/v1/sandboxes/{sandbox_id}/files",
        idempotent=True,
        params={"path": path},
        subjects={"sandbox": sandbox_id, "path": path},
    ) as response:
        length = response.headers.get("content-length")
        yield int(length) if length and length.isdigit() else None
        async for chunk in response.aiter_bytes(CHUNK_BYTES):
            yield chunk


def _write_out(chunk: bytes) -> None:
    sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


def _blocks(source: IO[bytes], advance: Callable[[int], object]) -> Iterator[bytes]:
    """``source`` in 1 MiB blocks (read in the SDK's worker thread), counted as they go."""
    while block := source.read(CHUNK_BYTES):
        advance(len(block))
        yield block


@contextlib.contextmanager
def _progress(label: str, size: int | None) -> Iterator[Callable[[int], object]]:
    """A rich progress bar on stderr (a TTY, and a file over 1 MiB); yields ``advance(n)``."""
    if not stderr_is_tty() or (size is not None and size <= PROGRESS_OVER_BYTES):
        yield lambda n: None
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    with progress:
        task = progress.add_task(label, total=size)
        yield lambda n: progress.advance(task, n)
