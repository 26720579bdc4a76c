"""What every ``hutch`` subcommand shares: settings from options, and one way to fail."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from hutch.settings import Settings

if TYPE_CHECKING:
    from hutch.store.db import Database

T = TypeVar("T")

__all__ = ["DatabaseOpt", "HomeOpt", "fail", "load_settings", "with_store"]

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="State directory (env: HUTCH_HOME; default /var/lib/hutch)."),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="postgresql://user:pass@host/db or sqlite:///path "
        "(env: HUTCH_DATABASE_URL; default SQLite in the home).",
    ),
]


def fail(message: str, *, hint: str | None = None, code: int = 1) -> NoReturn:
    """Print one red line (and a hint) to stderr and exit with ``code``."""
    color = sys.stderr.isatty()
    red, dim, reset = ("\033[31m", "\033[2m", "\033[0m") if color else ("", "", "")
    print(f"{red}error:{reset} {message}", file=sys.stderr)
    if hint:
        print(f"{dim}hint:{reset} {hint}", file=sys.stderr)
    raise typer.Exit(code)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the options the user actually gave on top."""
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        fail(f"bad configuration: {problems}", hint="check the HUTCH_* environment variables")


def with_store(
    settings: Settings, action: Callable[[Database], Awaitable[T]], *, migrate: bool = True
) -> T:
    """Open the store ``settings`` name (brought to the newest schema unless ``migrate`` is
    off), run ``action`` on it, close it; hutch's errors and an unreadable store end the
    command with one line."""
    from hutch.core.errors import HutchError
    from hutch.store.db import Database
    from hutch.store.migrate import upgrade

    async def main() -> T:
        db = Database.of(settings)
        try:
            if migrate:
                await upgrade(db)
            return await action(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(main())
    except HutchError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(f"cannot open the store: {exc}", hint="check --home / --database-url")
