"""``hutch template …``: your own images, built by the server from a Dockerfile."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hutch.cli.common import fail
from hutch.cli.output import (
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
from hutch.sdk import AsyncClient
from hutch.sdk.templates import AsyncTemplate, TemplateInfo, TemplateLogEvent

__all__ = ["app"]

app = typer.Typer(
    help="Templates: your own images from a Dockerfile; start sandboxes from them with "
    "`hutch sandbox create --rootfs NAME`.\n\n"
    "Example:  hutch template create -f Dockerfile --context . --name web --follow",
    no_args_is_help=True,
)
TemplateArg = Annotated[str, typer.Argument(help="A template id, or a name (its newest version).")]
EXIT_BUILD_FAILED = 1


def _print_line(event: TemplateLogEvent) -> None:
    sys.stdout.write(event.line + "\n")
    sys.stdout.flush()


def _rows(infos: list[TemplateInfo]) -> list[tuple[object, ...]]:
    return [
        (
            i.id,
            i.name,
            i.version,
            i.status,
            i.base,
            f"{i.steps_cached}/{i.steps_total}",
            when(i.created_at),
        )
        for i in infos
    ]


_HEADERS = ("id", "name", "version", "status", "from", "cached", "created")


@app.command("create")
def template_create(
    name: Annotated[str, typer.Option("--name", help="Yours; used again, a new version.")],
    file: Annotated[
        Path, typer.Option("-f", "--file", help="The Dockerfile.", exists=True, dir_okay=False)
    ] = Path("Dockerfile"),
    context: Annotated[
        Path | None,
        typer.Option(
            "--context",
            help="A directory COPY and ADD read from (sent as a tar.gz).",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Print the build's log until it ends.")
    ] = False,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Build a template from a Dockerfile. With --follow, exits 1 if the build fails.

    Example:  hutch template create -f Dockerfile --context . --name web --follow
    """
    try:
        dockerfile = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {file}: {exc}")

    async def action(client: AsyncClient) -> TemplateInfo:
        template = await AsyncTemplate.build(
            name, dockerfile, context_dir=context, wait=False, client=client
        )
        if follow:
            async for event in template.follow():
                if not as_json:
                    _print_line(event)
        return template.info

    info = run(api_url, api_key, action)
    if as_json:
        print_json(info.raw)
    elif not follow:
        print_table(_HEADERS, _rows([info]))
    else:
        sys.stdout.write(f"{info.id} {info.name} version {info.version}: {info.status}\n")
    if follow and info.status != "ready":
        fail(
            f"the build {info.status}: {info.reason or 'see the log above'}", code=EXIT_BUILD_FAILED
        )


@app.command("ls")
def template_list(
    as_json: JsonOpt = False, api_url: ApiUrlOpt = None, api_key: ApiKeyOpt = None
) -> None:
    """List your templates (every version).

    Example:  hutch template ls
    """

    async def action(client: AsyncClient) -> list[TemplateInfo]:
        return [t.info for t in await AsyncTemplate.list(client=client)]

    infos = run(api_url, api_key, action)
    if as_json:
        print_json([i.raw for i in infos])
    else:
        print_table(_HEADERS, _rows(infos))


@app.command("get")
def template_get(
    template: TemplateArg,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Show a template: its status, reason, start command, environment, user, workdir.

    Example:  hutch template get web
    """

    async def action(client: AsyncClient) -> TemplateInfo:
        return (await AsyncTemplate.get(template, client=client)).info

    info = run(api_url, api_key, action)
    if as_json:
        print_json(info.raw)
        return
    details(
        {
            "id": info.id,
            "name": info.name,
            "version": info.version,
            "status": info.status,
            "reason": info.reason or "",
            "from": info.base,
            "size": info.size_bytes,
            "steps": f"{info.steps_total} ({info.steps_cached} cached)",
            "start": " ".join(info.start_cmd or ()),
            "user": info.user or "root",
            "workdir": info.workdir,
            "env": ", ".join(info.env),
            "built": when(info.built_at),
        }
    )


@app.command("logs")
def template_logs(
    template: TemplateArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Until the build ends.")] = False,
    attempt: Annotated[int | None, typer.Option("--attempt", help="Only this attempt.")] = None,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Print a template's build log.

    Example:  hutch template logs web --follow
    """

    async def action(client: AsyncClient) -> None:
        found = await AsyncTemplate.get(template, client=client)
        if not follow:
            sys.stdout.write(await found.logs(attempt=attempt))
            return
        async for event in found.follow(attempt=attempt):
            _print_line(event)

    run(api_url, api_key, action)


@app.command("cancel")
def template_cancel(
    template: TemplateArg, api_url: ApiUrlOpt = None, api_key: ApiKeyOpt = None
) -> None:
    """Stop a template's build.

    Example:  hutch template cancel web
    """

    async def action(client: AsyncClient) -> TemplateInfo:
        return await (await AsyncTemplate.get(template, client=client)).cancel()

    info = run(api_url, api_key, action)
    sys.stdout.write(f"{info.id} {info.status}\n")


@app.command("rm")
def template_remove(
    template: Annotated[list[str], typer.Argument(help="Template ids, or names (all versions).")],
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Delete templates; sandboxes made from them keep working.

    Example:  hutch template rm web
    """

    async def delete(client: AsyncClient, ident: str) -> str:
        await client.transport.data(
            "DELETE", f"/v1/templates/{ident}", idempotent=True, subjects={"template": ident}
        )
        return ident

    remove_each(api_url, api_key, template, delete)
