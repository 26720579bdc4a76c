"""``hutch computer …`` and ``hutch desktop``: a desktop sandbox's screen from the shell."""

from __future__ import annotations

import os
import sys
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from hutch.cli.output import ApiKeyOpt, ApiUrlOpt, JsonOpt, print_json, run
from hutch.sdk import AsyncClient, AsyncSandbox

__all__ = ["app", "desktop"]

app = typer.Typer(help="Computer use on a desktop sandbox (rootfs desktop:1).",
                  no_args_is_help=True)  # fmt: skip
SandboxArg = Annotated[str, typer.Argument(help="A sandbox id or name.")]
ScreenOpt = Annotated[str, typer.Option("--screen", help="screen-0 … screen-7.")]


@app.command("screenshot")
def screenshot(
    sandbox: SandboxArg,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the PNG ('-': stdout).")
    ] = Path("screenshot.png"),
    screen: ScreenOpt = "screen-0",
    window: Annotated[str | None, typer.Option("--window", help="Only this window.")] = None,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Save a screenshot of the sandbox's screen as a PNG.

    Example:  hutch computer screenshot dev -o shot.png
    """

    async def action(client: AsyncClient) -> bytes:
        box = await AsyncSandbox.connect(sandbox, client=client)
        return await box.computer.screenshot(screen_id=screen, window_id=window)

    data = run(api_url, api_key, action)
    if str(output) == "-":
        sys.stdout.buffer.write(data)
        return
    partial = output.with_name(f".{output.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, output)
    sys.stderr.write(f"{output}: {len(data)} bytes\n")


def desktop(
    sandbox: SandboxArg,
    screen: ScreenOpt = "screen-0",
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the link in this machine's browser too.")
    ] = False,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Print a noVNC link to watch and use the sandbox's desktop in a browser.

    The sandbox needs ingress on (hutch sandbox create --ingress, or PATCH). The link
    works for a few minutes (HUTCH_COMPUTER_CONNECT_TTL_S); anyone holding it can use
    the desktop until then.

    Example:  hutch desktop dev --open
    """

    async def action(client: AsyncClient) -> dict[str, str]:
        box = await AsyncSandbox.connect(sandbox, client=client)
        link = await box.computer.connect(screen)
        expires = link.expires_at.isoformat() if link.expires_at else ""
        return {"screen_id": link.screen_id, "url": link.url, "expires_at": expires}

    link = run(api_url, api_key, action)
    if as_json:
        print_json(link)
    else:
        sys.stdout.write(link["url"] + "\n")
    if open_browser:
        webbrowser.open(link["url"])
