"""``hutch hosts``: the cluster's hosts and join tokens, straight in the store.

Like ``hutch keys``, these work on the store the control plane uses (``--database-url``,
PostgreSQL for a cluster), whether or not a control plane is running.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from hutch.cli.common import DatabaseOpt, HomeOpt, load_settings, with_store

if TYPE_CHECKING:
    from hutch.cluster.membership import Membership
    from hutch.settings import Settings
    from hutch.store.db import Database

__all__ = ["app"]

app = typer.Typer(help="The hosts of a cluster, and tokens to join it.", no_args_is_help=True)
token_app = typer.Typer(help="Join tokens: what 'hutch agent --token' takes.", no_args_is_help=True)
app.add_typer(token_app, name="token")

T = TypeVar("T")


def _run(settings: Settings, action: Callable[[Membership], Awaitable[T]]) -> T:
    from hutch.cluster.control import make_membership

    return with_store(settings, lambda db: action(make_membership(settings, db)))


@token_app.command("create")
def token_create(
    ttl_hours: Annotated[
        float | None, typer.Option("--ttl-hours", min=0.01, help="Expire after this long.")
    ] = None,
    home: HomeOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Make a join token and print only the token (shown once; only its hash is kept).

    Example:  TOKEN=$(hutch hosts token create --database-url postgresql://…)
    """
    settings = load_settings(home=home, database_url=database_url)
    ttl = timedelta(hours=ttl_hours) if ttl_hours is not None else None
    token, _ = _run(settings, lambda m: m.create_join_token(ttl=ttl))
    print(token)


@token_app.command("ls")
def token_list(home: HomeOpt = None, database_url: DatabaseOpt = None) -> None:
    """List join tokens: id, the token's first characters, when made, expires, revoked."""
    settings = load_settings(home=home, database_url=database_url)
    for info in _run(settings, lambda m: m.list_join_tokens()):
        state = "revoked" if info.revoked_at else "active"
        expires = info.expires_at.isoformat(timespec="seconds") if info.expires_at else "never"
        print(f"{info.id}  {info.prefix}…  {state}  expires {expires}")


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id or prefix.")],
    home: HomeOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Revoke a join token: no agent joins with it any more (joined ones stay)."""
    settings = load_settings(home=home, database_url=database_url)
    info = _run(settings, lambda m: m.revoke_join_token(token_id))
    print(f"revoked {info.id}")


@app.command("ls")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for scripts.")] = False,
    home: HomeOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """List hosts: id, status (active, draining, dead), free memory, sandboxes, address."""
    from hutch.core.hosts import HostService

    settings = load_settings(home=home, database_url=database_url)

    async def views(db: Database) -> list[dict[str, object]]:
        found, _ = await HostService(db, dead_after_s=settings.host_dead_after_s).list(
            limit=None, offset=0
        )
        return [view.__dict__ for view in found]

    hosts = with_store(settings, views, migrate=False)
    if as_json:
        print(json.dumps(hosts))
        return
    for host in hosts:
        labels = ",".join(f"{k}={v}" for k, v in sorted(dict(host["labels"]).items()))  # type: ignore[call-overload]
        print(f"{host['id']}  {host['status']}  {host['free_mib']} MiB free  "
              f"{host['vm_count']} sandboxes  {host['address'] or '-'}  {labels}")  # fmt: skip


@app.command("drain")
def drain(
    host_id: Annotated[str, typer.Argument(help="The host's id (hutch hosts ls).")],
    home: HomeOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Place nothing new on HOST; its sandboxes keep running ('hutch hosts undrain' ends it)."""
    settings = load_settings(home=home, database_url=database_url)
    _run(settings, lambda m: m.set_status(host_id, "draining"))
    print(f"{host_id} is draining: no new sandboxes are placed there")


@app.command("undrain")
def undrain(
    host_id: Annotated[str, typer.Argument(help="The host's id.")],
    home: HomeOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Let placement use HOST again."""
    settings = load_settings(home=home, database_url=database_url)
    _run(settings, lambda m: m.set_status(host_id, "active"))
    print(f"{host_id} is active")


@app.command("rm")
def remove(
    host_id: Annotated[str, typer.Argument(help="The host's id.")],
    force: Annotated[
        bool, typer.Option("--force", help="Even with live sandboxes (they become error).")
    ] = False,
    home: HomeOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Forget HOST: its agent can no longer heartbeat (it must join again to come back)."""
    settings = load_settings(home=home, database_url=database_url)
    left = _run(settings, lambda m: m.remove(host_id, force=force))
    print(f"removed {host_id}" + (f" ({left} sandboxes marked error)" if left else ""))
