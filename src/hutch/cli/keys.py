"""``hutch keys``: make, list and revoke API keys, straight in the store.

These work whether or not a server is running (SQLite in WAL mode lets both write).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from hutch.cli.common import DatabaseOpt, HomeOpt, load_settings, with_store

if TYPE_CHECKING:  # the store is imported when a command runs, not for `hutch --help`
    from hutch.core.identity import IdentityService, KeyInfo
    from hutch.settings import Settings

__all__ = ["app"]

app = typer.Typer(help="Manage API keys.", no_args_is_help=True)

T = TypeVar("T")


def _run(settings: Settings, action: Callable[[IdentityService], Awaitable[T]]) -> T:
    from hutch.core.identity import IdentityService

    return with_store(settings, lambda db: action(IdentityService(db)))


@app.command("create")
def create(
    user: Annotated[str, typer.Option("--user", help="User name; created if it does not exist.")],
    admin: Annotated[bool, typer.Option("--admin", help="Make a new user an admin.")] = False,
    home: HomeOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Make a new API key for USER and print only the key, so scripts can capture it.

    Example:  KEY=$(hutch keys create --user alice)
    """
    settings = load_settings(home=home, database_url=database_url)
    issued = _run(settings, lambda identity: identity.issue_key(user, admin=admin))
    print(issued.key)


@app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for scripts.")] = False,
    home: HomeOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """List every API key: id, the key's first characters, user, and when it was used."""
    settings = load_settings(home=home, database_url=database_url)
    keys = _run(settings, lambda identity: identity.list_keys())
    if as_json:
        print(json.dumps([_key_json(key) for key in keys], indent=2))
        return
    rows = [("ID", "PREFIX", "USER", "CREATED", "LAST USED", "STATUS")]
    for key in keys:
        rows.append(
            (
                key.id,
                key.prefix + "…",
                key.user_name,
                key.created_at.strftime("%Y-%m-%d %H:%M"),
                key.last_used_at.strftime("%Y-%m-%d %H:%M") if key.last_used_at else "never",
                "revoked" if key.revoked_at else "active",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


@app.command("revoke")
def revoke(
    key: Annotated[
        str, typer.Argument(help="The key's id (key_…), the key itself, or its prefix as listed.")
    ],
    home: HomeOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Revoke a key at once; requests with it get 401 from then on. Idempotent."""
    settings = load_settings(home=home, database_url=database_url)
    info = _run(settings, lambda identity: identity.revoke(key))
    print(f"revoked {info.id} ({info.prefix}…) of user {info.user_name}")


def _key_json(key: KeyInfo) -> dict[str, str | None]:
    return {
        "id": key.id,
        "prefix": key.prefix,
        "user_id": key.user_id,
        "user": key.user_name,
        "created_at": key.created_at.isoformat(),
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }
