"""What every ``hutch`` subcommand shares: settings from options, and one way to fail."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from hutch.settings import Settings

__all__ = ["DatabaseOpt", "HomeOpt", "fail", "load_settings"]

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
