"""The ``hutch`` command line."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated

import typer
import yaml

from hutch.cli import (
    computer,
    deploy,
    egress,
    host,
    hosts,
    images,
    keys,
    observe,
    resources,
    sandboxes,
    shell,
    templates,
    tunnel,
)
from hutch.cli.common import DatabaseOpt, HomeOpt, fail, load_settings
from hutch.settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(
    help="hutch: a self-hosted sandbox cloud.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
app.add_typer(keys.app, name="keys")
app.add_typer(images.app, name="images")
app.add_typer(host.app, name="host")
app.add_typer(hosts.app, name="hosts")
app.add_typer(sandboxes.app, name="sandbox")
app.command("exec")(sandboxes.exec_command)
app.command("cp")(sandboxes.copy)
app.command("shell")(shell.shell)
app.command("ssh")(tunnel.ssh)
app.command("tunnel")(tunnel.tunnel)
app.add_typer(resources.networks, name="network")
app.add_typer(resources.disks, name="disk")
app.add_typer(templates.app, name="template")
app.command("preview")(resources.preview)
app.command("egress")(egress.egress)
app.command("bandwidth")(egress.bandwidth)
app.command("events")(observe.events)
app.command("metrics")(observe.metrics)
app.add_typer(observe.webhooks, name="webhook")
app.command("deploy")(deploy.deploy)
app.add_typer(computer.app, name="computer")
app.command("desktop")(computer.desktop)


LogLevelOpt = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]
HostOpt = Annotated[
    str | None, typer.Option("--host", help="Address to listen on (env: HUTCH_HOST; 127.0.0.1).")
]
PortOpt = Annotated[
    int | None, typer.Option("--port", help="Port to listen on (env: HUTCH_PORT; 8700).")
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers", min=1, max=256, help="API worker processes (env: HUTCH_WORKERS; one per core)."
    ),
]


def _prepared(log_level: str, **options: object) -> Settings:
    if log_level not in ("debug", "info", "warning", "error"):
        fail(f"unknown log level {log_level!r}", hint="use debug, info, warning or error")
    settings = load_settings(**options)
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(
            f"cannot create the home directory {settings.home}: {exc.strerror}",
            hint="pick another with --home or HUTCH_HOME",
        )
    return settings


def _refuse_unused_tls(settings: Settings) -> None:
    """HUTCH_TLS_* set for a server that would ignore it: exit 2 before binding anything."""
    from hutch.cluster.tls import unused_outside_cluster

    if (why := unused_outside_cluster(settings)) is not None:
        fail(why, hint="unset them, or put a TLS proxy (nginx, caddy) in front of hutch", code=2)


@app.command()
def serve(
    host: HostOpt = None,
    port: PortOpt = None,
    home: HomeOpt = None,
    database_url: DatabaseOpt = None,
    workers: WorkersOpt = None,
    one_process: Annotated[
        bool,
        typer.Option(
            "--one-process", help="Run the API and the host agent in this one process instead."
        ),
    ] = False,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run this machine's host agent and the API workers, supervised, until Ctrl-C.

    Example:  hutch serve --port 8700 --home /var/lib/hutch
    """
    from hutch.cli import serve as roles

    settings = _prepared(log_level, host=host, port=port, home=home, database_url=database_url)
    _refuse_unused_tls(settings)
    if one_process:
        code = asyncio.run(roles.serve_one_process(settings, log_level=log_level))
    else:
        code = asyncio.run(roles.serve(settings, log_level=log_level, workers=workers))
    if code == 0:
        roles.end_process(0)
    if code == 3:
        fail("hutch serve could not start its host agent; the lines above say why")
    if code:
        fail(
            f"could not serve on {settings.host}:{settings.port}; the line above says why",
            hint="a taken port? pick another with --port or HUTCH_PORT",
        )


@app.command()
def agent(
    home: HomeOpt = None,
    database_url: DatabaseOpt = None,
    control_url: Annotated[
        str | None,
        typer.Option(
            "--control", help="Join this control plane's cluster (env: HUTCH_CONTROL_URL)."
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", help="Join token from 'hutch hosts token create' (env: HUTCH_JOIN_TOKEN)."
        ),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            help="host:port the control plane reaches this agent on (env: HUTCH_AGENT_LISTEN).",
        ),
    ] = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run this machine's host agent (sandboxes, networks, DNS, disks, proxy, monitor) on
    $HUTCH_HOME/run/agent.sock, for 'hutch control' to talk to; until Ctrl-C.

    With --control URL --token T it joins that cluster: it registers, heartbeats, and
    serves the control plane over TCP on --listen (docs/cluster.md).
    """
    from hutch.cli import serve as roles

    settings = _prepared(
        log_level,
        home=home,
        database_url=database_url,
        control_url=control_url,
        join_token=token,
        agent_listen=listen,
    )
    if asyncio.run(roles.run_agent_role(settings, log_level=log_level)):
        fail("the host agent stopped; the lines above say why")


@app.command()
def control(
    host: HostOpt = None,
    port: PortOpt = None,
    home: HomeOpt = None,
    database_url: DatabaseOpt = None,
    workers: WorkersOpt = None,
    worker_fd: Annotated[int | None, typer.Option("--worker-fd", hidden=True)] = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run the API: --workers processes in front of this home's host agent ('hutch agent').

    Example:  hutch control --workers 4 --port 8700
    """
    from hutch.cli import serve as roles

    settings = _prepared(log_level, host=host, port=port, home=home, database_url=database_url)
    _refuse_unused_tls(settings)
    if worker_fd is not None:
        code = asyncio.run(roles.control_worker(settings, fd=worker_fd, log_level=log_level))
        raise typer.Exit(code)
    if asyncio.run(roles.control(settings, log_level=log_level, workers=workers)) == 0:
        roles.end_process(0)
    fail(
        f"could not serve on {settings.host}:{settings.port}; the line above says why",
        hint="a taken port? pick another with --port or HUTCH_PORT",
    )


@app.command()
def openapi() -> None:
    """Print the OpenAPI document of the whole API as YAML (the one in specs/openapi.yaml)."""
    from hutch.api.app import create_app

    document = create_app(load_settings()).openapi()
    sys.stdout.write(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


def main() -> None:
    """Entry point: no traceback reaches a user unless ``HUTCH_DEBUG`` is set."""
    try:
        app(standalone_mode=True)
    except Exception as exc:
        if os.environ.get("HUTCH_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        print(
            "hint: run again with HUTCH_DEBUG=1 for the traceback, and report it", file=sys.stderr
        )
        sys.exit(70)
