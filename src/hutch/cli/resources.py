"""``hutch network …``, ``hutch disk …`` and ``hutch preview``: what sandboxes are given
besides themselves, through the SDK."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

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
    when,
)
from hutch.sdk import (
    AsyncClient,
    AsyncDisk,
    AsyncNetwork,
    AsyncSandbox,
    DiskInfo,
    NetworkInfo,
)

__all__ = ["disks", "networks", "preview"]

networks = typer.Typer(
    help="Private networks: sandboxes in one reach each other by name.\n\n"
    "Example:  hutch network create backend && hutch network attach dev backend",
    no_args_is_help=True,
)
disks = typer.Typer(
    help="Disks: S3 buckets registered once, then mounted into sandboxes.\n\n"
    "Example:  hutch disk register data --bucket my-bucket --endpoint https://s3.example.com",
    no_args_is_help=True,
)

SandboxArg = Annotated[str, typer.Argument(help="A sandbox id or name.")]
NetworkArg = Annotated[str, typer.Argument(help="A network id or name.")]
DiskArg = Annotated[str, typer.Argument(help="A disk id or name.")]


def _remove_each(
    idents: list[str],
    remove: type[AsyncNetwork] | type[AsyncDisk],
    api_url: str | None,
    api_key: str | None,
) -> None:
    """Delete each object, going on past failures; exit with the first failure's code."""

    async def delete(client: AsyncClient, ident: str) -> str:
        found = await remove.get(ident, client=client)
        await found.delete()
        return found.id

    remove_each(api_url, api_key, idents, delete)


# --- networks -----------------------------------------------------------------------------


def _network_rows(infos: list[NetworkInfo]) -> list[tuple[object, ...]]:
    return [(i.id, i.name, i.member_count, when(i.created_at)) for i in infos]


@networks.command("create")
def network_create(
    name: Annotated[str, typer.Argument(help="1-63 of a-z, 0-9 and -; unique among yours.")],
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Create a private network.

    Example:  hutch network create backend
    """

    async def action(client: AsyncClient) -> NetworkInfo:
        return (await AsyncNetwork.create(name, client=client)).info

    info = run(api_url, api_key, action)
    if as_json:
        print_json(info.raw)
    else:
        print_table(("id", "name", "members", "created"), _network_rows([info]))


@networks.command("ls")
def network_list(
    as_json: JsonOpt = False, api_url: ApiUrlOpt = None, api_key: ApiKeyOpt = None
) -> None:
    """List your networks.

    Example:  hutch network ls --json
    """

    async def action(client: AsyncClient) -> list[NetworkInfo]:
        return [n.info for n in await AsyncNetwork.list(client=client)]

    infos = run(api_url, api_key, action)
    if as_json:
        print_json([i.raw for i in infos])
    else:
        print_table(("id", "name", "members", "created"), _network_rows(infos))


@networks.command("get")
def network_get(
    network: NetworkArg,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Show a network and its members, with their addresses on it.

    Example:  hutch network get backend
    """

    async def action(client: AsyncClient) -> NetworkInfo:
        return (await AsyncNetwork.get(network, client=client)).info

    info = run(api_url, api_key, action)
    if as_json:
        print_json(info.raw)
        return
    details({"id": info.id, "name": info.name, "created": when(info.created_at)})
    sys.stdout.write("\n")
    print_table(
        ("sandbox", "name", "status", "ip"),
        ((m.sandbox_id, m.name, m.status, m.ip) for m in info.members or ()),
    )


@networks.command("rm")
def network_remove(
    network: Annotated[list[str], typer.Argument(help="Network ids or names.")],
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Delete networks (detach their members first).

    Example:  hutch network rm backend
    """
    _remove_each(network, AsyncNetwork, api_url, api_key)


@networks.command("attach")
def network_attach(
    sandbox: SandboxArg, network: NetworkArg, api_url: ApiUrlOpt = None, api_key: ApiKeyOpt = None
) -> None:
    """Put a sandbox in a network; attaching a member again does nothing.

    Example:  hutch network attach dev backend
    """

    async def action(client: AsyncClient) -> None:
        await (await AsyncNetwork.get(network, client=client)).attach(sandbox)

    run(api_url, api_key, action)


@networks.command("detach")
def network_detach(
    sandbox: SandboxArg, network: NetworkArg, api_url: ApiUrlOpt = None, api_key: ApiKeyOpt = None
) -> None:
    """Take a sandbox out of a network.

    Example:  hutch network detach dev backend
    """

    async def action(client: AsyncClient) -> None:
        await (await AsyncNetwork.get(network, client=client)).detach(sandbox)

    run(api_url, api_key, action)


# --- disks --------------------------------------------------------------------------------


def _disk_rows(infos: list[DiskInfo]) -> list[tuple[object, ...]]:
    return [(i.id, i.name, i.bucket, i.endpoint, when(i.created_at)) for i in infos]


DISK_COLUMNS = ("id", "name", "bucket", "endpoint", "created")


@disks.command("register")
def disk_register(
    name: Annotated[str, typer.Argument(help="A name for the disk, unique among yours.")],
    bucket: Annotated[str, typer.Option("--bucket", help="The S3 bucket.")],
    endpoint: Annotated[str, typer.Option("--endpoint", help="The S3 endpoint URL.")],
    access_key: Annotated[
        str | None,
        typer.Option("--access-key", help="Else env AWS_ACCESS_KEY_ID.", show_default=False),
    ] = None,
    secret_key: Annotated[
        str | None,
        typer.Option("--secret-key", help="Else env AWS_SECRET_ACCESS_KEY.", show_default=False),
    ] = None,
    region: Annotated[str | None, typer.Option("--region", help="The bucket's region.")] = None,
    path_style: Annotated[
        bool, typer.Option("--path-style", help="Address the bucket as ENDPOINT/BUCKET.")
    ] = False,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Register an S3 bucket as a disk; the server checks that it can reach it first.

    The keys are sent once and never shown again.

    Example:  export AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=…
              hutch disk register data --bucket my-bucket
                  --endpoint https://s3.example.com --path-style
    """
    access = access_key or os.environ.get("AWS_ACCESS_KEY_ID")
    secret = secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not access or not secret:
        fail(
            "the bucket's keys are missing",
            hint="pass --access-key and --secret-key, or set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY",
            code=EXIT_USAGE,
        )

    async def action(client: AsyncClient) -> DiskInfo:
        made = await AsyncDisk.create(
            name,
            bucket=bucket,
            endpoint=endpoint,
            access_key=access,
            secret_key=secret,
            region=region,
            use_path_style=path_style,
            client=client,
        )
        return made.info

    info = run(api_url, api_key, action)
    if as_json:
        print_json(info.raw)
    else:
        print_table(DISK_COLUMNS, _disk_rows([info]))


@disks.command("ls")
def disk_list(
    as_json: JsonOpt = False, api_url: ApiUrlOpt = None, api_key: ApiKeyOpt = None
) -> None:
    """List your disks.

    Example:  hutch disk ls
    """

    async def action(client: AsyncClient) -> list[DiskInfo]:
        return [d.info for d in await AsyncDisk.list(client=client)]

    infos = run(api_url, api_key, action)
    if as_json:
        print_json([i.raw for i in infos])
    else:
        print_table(DISK_COLUMNS, _disk_rows(infos))


@disks.command("get")
def disk_get(
    disk: DiskArg, as_json: JsonOpt = False, api_url: ApiUrlOpt = None, api_key: ApiKeyOpt = None
) -> None:
    """Show a disk (never its keys).

    Example:  hutch disk get data
    """

    async def action(client: AsyncClient) -> DiskInfo:
        return (await AsyncDisk.get(disk, client=client)).info

    info = run(api_url, api_key, action)
    if as_json:
        print_json(info.raw)
        return
    details(
        {
            "id": info.id,
            "name": info.name,
            "kind": info.kind,
            "bucket": info.bucket,
            "endpoint": info.endpoint,
            "region": info.region,
            "path style": "yes" if info.use_path_style else "no",
            "created": when(info.created_at),
        }
    )


@disks.command("rm")
def disk_remove(
    disk: Annotated[list[str], typer.Argument(help="Disk ids or names.")],
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Forget disks (the buckets' contents stay); detach them everywhere first.

    Example:  hutch disk rm data
    """
    _remove_each(disk, AsyncDisk, api_url, api_key)


@disks.command("attach")
def disk_attach(
    sandbox: SandboxArg,
    disk: DiskArg,
    mount_path: Annotated[str, typer.Argument(help="Absolute path inside the sandbox.")],
    sub_path: Annotated[
        str | None, typer.Option("--sub-path", help="A prefix inside the bucket.")
    ] = None,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Mount a disk in a running sandbox; the same path again does nothing.

    Example:  hutch disk attach dev data /data --sub-path projects/a
    """

    async def action(client: AsyncClient) -> None:
        found = await AsyncDisk.get(disk, client=client)
        await found.attach(sandbox, mount_path, sub_path=sub_path)

    run(api_url, api_key, action)


@disks.command("detach")
def disk_detach(
    sandbox: SandboxArg,
    disk: DiskArg,
    mount_path: Annotated[str, typer.Argument(help="Where it is mounted.")],
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Unmount a disk from a sandbox; the bucket's contents stay.

    Example:  hutch disk detach dev data /data
    """

    async def action(client: AsyncClient) -> None:
        await (await AsyncDisk.get(disk, client=client)).detach(sandbox, mount_path)

    run(api_url, api_key, action)


# --- previews -----------------------------------------------------------------------------


def preview(
    sandbox: SandboxArg,
    port: Annotated[int, typer.Argument(min=1, max=65535, help="A port inside the sandbox.")],
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Print a URL that reaches PORT inside a running sandbox, with no key needed.

    The token is in the host name. The URL expires, and stops working
    when the sandbox is paused or destroyed.

    Example:  hutch preview dev 8000
    """

    async def action(client: AsyncClient) -> str:
        return await (await AsyncSandbox.connect(sandbox, client=client)).preview_url(port)

    url = run(api_url, api_key, action)
    if as_json:
        print_json({"url": url})
    else:
        sys.stdout.write(url + "\n")
