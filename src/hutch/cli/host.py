"""``hutch host``: what a hutch home owns on this machine."""

from __future__ import annotations

import asyncio

import typer

from hutch.cli.common import HomeOpt, fail, load_settings
from hutch.host.cleanup import cleanup_home
from hutch.host.drivers.base import DriverError
from hutch.host.ownership import HomeInUse
from hutch.host.proc import CommandFailed

__all__ = ["app"]

app = typer.Typer(help="What a hutch home owns on this machine.", no_args_is_help=True)


@app.command("cleanup")
def cleanup(home: HomeOpt = None) -> None:
    """Destroy everything a hutch home left on this host: its sandboxes (and their files),
    mounts, network namespaces, links, bridges, nftables tables and preview proxy.

    For an install that was moved or removed, or whose pools clash with another's. The
    home's state (its database, images, templates) is left as it is. Refused while a hutch
    of that home is running.

    Example:  hutch host cleanup --home /srv/old-hutch
    """
    settings = load_settings(home=home)
    if not settings.home.is_dir():
        fail(f"{settings.home} is no hutch home (no such directory)", hint="check --home")
    try:
        found = asyncio.run(cleanup_home(settings.home))
    except HomeInUse as exc:
        fail(str(exc), hint="stop that hutch first (it keeps its sandboxes; this destroys them)")
    except (CommandFailed, DriverError, OSError) as exc:
        fail(f"cleaning up failed: {exc}", hint="run it as root")
    if not found:
        print(f"nothing of {settings.home} was left on this host")
        return
    for kind, items in sorted(found.items()):
        more = " …" if len(items) > 8 else ""
        print(f"removed {len(items)} {kind}: {', '.join(items[:8])}{more}")
