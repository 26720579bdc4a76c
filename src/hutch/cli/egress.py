"""``hutch egress`` and ``hutch bandwidth``: where a sandbox may connect to on the internet,
and how much it may send there, through the SDK."""

from __future__ import annotations

import re
import sys
from typing import Annotated

import typer

from hutch.cli.common import fail
from hutch.cli.output import EXIT_USAGE, ApiKeyOpt, ApiUrlOpt, JsonOpt, details, print_json, run
from hutch.sdk import AsyncClient, AsyncSandbox, Bandwidth

__all__ = ["bandwidth", "egress", "parse_bytes"]

SandboxArg = Annotated[str, typer.Argument(help="A sandbox id or name.")]

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)
_NO_RULES = "no rules: the server's default applies (open unless its operator closed it)"


def parse_bytes(text: str) -> int:
    """``1048576``, ``512K``, ``10M``, ``1G``, ``2GiB`` (binary units) as bytes; anything
    else is a usage error (exit 2)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or (match.group(3) and match.group(3).lower() == "ib" and not match[2]):
        fail(
            f"{text!r} is not a number of bytes",
            hint="write bytes, or with a unit: 512K, 10M, 1G (K = 1024 bytes)",
            code=EXIT_USAGE,
        )
    return int(match[1]) * _UNITS[match[2].lower()]


def egress(
    sandbox: SandboxArg,
    rules: Annotated[
        list[str] | None,
        typer.Argument(
            help="New rules, replacing all: host, host:port, *.host, ip, ip:port, cidr, "
            "cidr:port or *. None: show the rules.",
            show_default=False,
        ),
    ] = None,
    open_: Annotated[
        bool, typer.Option("--open", help="Remove every rule (open, minus the deny set).")
    ] = False,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Show a sandbox's egress rules, or replace them (live: open connections to places
    no longer allowed are cut).

    One rule allows only what the rules name; no rules (or *) is open, minus the
    platform deny set (private and link-local addresses, the host, port 25).

    Example:  hutch egress dev pypi.org '*.pythonhosted.org:443' 1.1.1.1:53
    """
    if open_ and rules:
        fail("give rules or --open, not both", hint="--open removes every rule", code=EXIT_USAGE)
    change = open_ or bool(rules)
    new_rules = list(rules or ())

    async def action(client: AsyncClient) -> tuple[str, list[str]]:
        found = await AsyncSandbox.connect(sandbox, client=client)
        if change:
            return found.id, await found.egress.set(new_rules)
        return found.id, await found.egress.get()

    sandbox_id, now = run(api_url, api_key, action)
    if as_json:
        print_json({"id": sandbox_id, "egress": now})
    elif now:
        sys.stdout.write("".join(f"{rule}\n" for rule in now))
    else:
        sys.stdout.write(_NO_RULES + "\n")


def bandwidth(
    sandbox: SandboxArg,
    recharge: Annotated[
        str | None,
        typer.Option(
            "--recharge",
            metavar="BYTES",
            help="Add this much to the quota first: bytes, or 512K, 10M, 1G.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Show a sandbox's outbound internet quota and use (exec, files and previews are not
    counted); --recharge adds to the quota, and a capped sandbox's traffic flows again.

    Example:  hutch bandwidth dev --recharge 1G
    """
    add = None if recharge is None else parse_bytes(recharge)
    if add is not None and add <= 0:
        fail("--recharge must add at least one byte", hint="say --recharge 1G", code=EXIT_USAGE)

    async def action(client: AsyncClient) -> Bandwidth:
        found = await AsyncSandbox.connect(sandbox, client=client)
        if add is not None:
            return await found.recharge(add)
        return await found.bandwidth()

    seen = run(api_url, api_key, action)
    if as_json:
        print_json(seen.raw)
        return
    details(
        {
            "sandbox": seen.id,
            "quota": "unmetered" if seen.unmetered else _size(seen.quota_bytes),
            "used": _size(seen.used_bytes),
            "remaining": "unmetered" if seen.unmetered else _size(seen.remaining_bytes),
            "received": _size(seen.ingress_bytes),
            "capped": "yes: outbound internet traffic is dropped" if seen.capped else "no",
        }
    )


def _size(count: int) -> str:
    """``1.5 MiB (1572864 bytes)``; small counts are just bytes."""
    magnitude = abs(count)
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if magnitude >= size:
            return f"{count / size:.1f} {unit} ({count} bytes)"
    return f"{count} bytes"
