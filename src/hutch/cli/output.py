"""What every client command shares: where the server is, how answers are printed, and how
the SDK's errors become one red line, a hint and an exit code.

Exit codes: 0 ok; 1 the server refused or failed; 2 a malformed command line; 3 no such
object; 4 no key, or the key (or wallet) was refused; 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from hutch.cli.common import fail
from hutch.sdk import errors
from hutch.sdk._config import DEFAULT_API_URL, ClientConfig
from hutch.sdk.client import AsyncClient

__all__ = [
    "EXIT_AUTH",
    "EXIT_ERROR",
    "EXIT_NOT_FOUND",
    "EXIT_USAGE",
    "ApiKeyOpt",
    "ApiUrlOpt",
    "JsonOpt",
    "Problem",
    "describe",
    "details",
    "print_json",
    "print_table",
    "report",
    "run",
    "say",
    "stdout_console",
    "when",
]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_AUTH = 4
EXIT_INTERRUPTED = 130

ApiUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--api-url",
        help=f"The hutch server; else env HUTCH_API_URL, else {DEFAULT_API_URL}.",
        show_default=False,
    ),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", help="Your API key; else env HUTCH_API_KEY.", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")]

T = TypeVar("T")

_LIST_COMMANDS = {
    "sandbox": "list yours with `hutch sandbox ls`",
    "network": "list yours with `hutch network ls`",
    "disk": "list yours with `hutch disk ls`",
    "template": "list yours with `hutch template ls`",
    "path": "check the path: it must be absolute and name an existing file",
}
_KEY_HINT = (
    "set HUTCH_API_KEY (or --api-key) to a valid key; an operator makes one with "
    "`hutch keys create --user NAME`"
)


@dataclass(frozen=True, kw_only=True)
class Problem:
    """What went wrong, told to a person: one line, a hint, and the exit code."""

    message: str
    hint: str | None
    code: int


def config(api_url: str | None, api_key: str | None) -> ClientConfig:
    """The options, else the environment; no key at all exits 4."""
    try:
        return ClientConfig.resolve(api_url=api_url, api_key=api_key)
    except errors.ConfigurationError:
        fail("no API key", hint=_KEY_HINT, code=EXIT_AUTH)


def run(
    api_url: str | None, api_key: str | None, action: Callable[[AsyncClient], Awaitable[T]]
) -> T:
    """Run ``action`` with a client on a fresh event loop; any SDK error ends the program."""
    resolved = config(api_url, api_key)

    async def main() -> T:
        async with AsyncClient(config=resolved) as client:
            return await action(client)

    try:
        return asyncio.run(main())
    except errors.HutchError as exc:
        report(exc, api_url=resolved.api_url)
    except KeyboardInterrupt:
        fail(
            "interrupted",
            hint="a change already sent may still happen on the server",
            code=EXIT_INTERRUPTED,
        )


def remove_each(
    api_url: str | None,
    api_key: str | None,
    idents: Sequence[str],
    remove: Callable[[AsyncClient, str], Awaitable[str]],
) -> None:
    """Remove each object with ``remove`` (which returns its id), printing each id and going
    on past failures; exit with the first failure's code."""

    async def action(client: AsyncClient) -> int:
        code = 0
        for ident in idents:
            try:
                removed = await remove(client, ident)
            except errors.HutchError as exc:
                problem = describe(exc, api_url=client.config.api_url)
                say(problem)
                code = code or problem.code
                continue
            sys.stdout.write(f"{removed}\n")
        return code

    if code := run(api_url, api_key, action):
        raise typer.Exit(code)


def report(exc: errors.HutchError, *, api_url: str) -> NoReturn:
    problem = describe(exc, api_url=api_url)
    fail(problem.message, hint=problem.hint, code=problem.code)


def say(problem: Problem) -> None:
    """Print ``problem`` the way :func:`fail` does, without exiting."""
    with contextlib.suppress(typer.Exit):
        fail(problem.message, hint=problem.hint, code=problem.code)


def describe(exc: errors.HutchError, *, api_url: str) -> Problem:
    """The SDK's error in the command line's words (its own hints name Python calls)."""
    reason = exc.reason or exc.message
    said = {k: v for k, v in exc.fields.items() if k != "message"}
    match exc:
        case errors.AuthenticationError():
            return Problem(
                message=f"the server refused the API key: {reason}", hint=_KEY_HINT, code=EXIT_AUTH
            )
        case errors.NotFoundError():
            subject = next((k for k in said if k in _LIST_COMMANDS), None)
            if subject == "path":
                return Problem(message=said[subject], hint=_LIST_COMMANDS[subject],
                               code=EXIT_NOT_FOUND)  # fmt: skip
            return Problem(
                message=f"{said[subject] if subject else reason} (or it is another user's)",
                hint=_LIST_COMMANDS[subject] if subject else "check the ids and names given",
                code=EXIT_NOT_FOUND,
            )
        case errors.InvalidRequestError():
            return Problem(
                message=f"the server refused the request: {reason}",
                hint=f"correct {', '.join(said)} and retry" if said else "see --help",
                code=EXIT_ERROR,
            )
        case errors.ConflictError():
            hint: str | None
            if "status" in said:
                hint = "see its status with `hutch sandbox get ID`, and retry when it allows this"
            elif "name" in said:
                hint = "choose another name"
            else:
                hint = (
                    "check its state with the matching `get` command, and retry when it allows this"
                )
            return Problem(message="; ".join(said.values()) or reason, hint=hint, code=EXIT_ERROR)
        case errors.RateLimitError():
            return Problem(
                message=reason,
                hint="wait and retry, or remove sandboxes you no longer need (`hutch sandbox rm`)",
                code=EXIT_ERROR,
            )
        case errors.ServerUnavailableError() if exc.status is None:
            return Problem(
                message=f"cannot reach hutch at {api_url}",
                hint="is `hutch serve` running there? Set HUTCH_API_URL (or --api-url) to it",
                code=EXIT_ERROR,
            )
        case errors.ServerUnavailableError():
            return Problem(message=reason, hint="try again shortly", code=EXIT_ERROR)
        case errors.RequestTimeoutError():
            return Problem(
                message=f"{api_url} did not answer in time",
                hint="check the object's state before repeating a call that changes something",
                code=EXIT_ERROR,
            )
        case errors.ConfigurationError():
            return Problem(
                message=f"cannot use the API URL {api_url!r}",
                hint=f"set HUTCH_API_URL (or --api-url) to something like {DEFAULT_API_URL}",
                code=EXIT_ERROR,
            )
    hint = "if it persists, ask the operator to look in the server's log"
    if exc.request_id:
        hint += f" for request {exc.request_id}"
    return Problem(message=exc.message, hint=hint, code=EXIT_ERROR)


# --- printing ----------------------------------------------------------------------------


def stdout_console() -> Console:
    """Rich output for stdout that never wraps a row when piped (width is then unbounded)."""
    tty = sys.stdout.isatty()
    return Console(highlight=False, soft_wrap=not tty, width=None if tty else 10_000)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A borderless table with a bold header, like ``docker ps``; piped, it is plain text
    with no trailing spaces, one row a line."""
    table = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
    for header in headers:
        table.add_column(header.upper(), no_wrap=True, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    console = stdout_console()
    if console.is_terminal:
        console.print(table)
        return
    with console.capture() as captured:
        console.print(table)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def details(pairs: Mapping[str, object]) -> None:
    """One ``key  value`` line each, for a single object; empty values are left out."""
    shown = {k: _cell(v) for k, v in pairs.items() if v not in (None, "", (), [])}
    width = max((len(k) for k in shown), default=0)
    for key, value in shown.items():
        sys.stdout.write(f"{key:<{width}}  {value}\n")


def when(moment: datetime | None) -> str:
    """A timestamp in local time, to the second."""
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _cell(value: object) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def stderr_is_tty() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
