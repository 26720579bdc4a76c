"""``hutch serve``: run the API and the embedded host agent until interrupted."""

from __future__ import annotations

import asyncio

import uvicorn

from hutch.api.app import create_app
from hutch.api.services import Services
from hutch.api.upgrade import UpgradingH11Protocol
from hutch.logs import configure_logging
from hutch.settings import Settings
from hutch.store.db import Database

__all__ = ["serve"]


async def serve(settings: Settings, *, log_level: str) -> int:
    """Serve until SIGINT/SIGTERM. Prints the URL once listening, and the admin key once ever.

    The admin key is made only after the socket is bound, so a server that fails to start
    never makes a key nobody saw. Returns the process exit code.
    """
    configure_logging(log_level, settings.log_format)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        log_config=None,  # uvicorn's loggers go through hutch's (hutch.logs)
        lifespan="on",
        # h11 plus the raw upgrades of the tunnel and shell routes (hutch.api.upgrade).
        http=UpgradingH11Protocol,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)

    async def run() -> int:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn exits the process when it cannot bind
            return int(exc.code or 1)
        return 0

    serving = asyncio.create_task(run())
    while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn has no event)
        await asyncio.sleep(0.02)
    if serving.done():
        return await serving or 1

    port = server.servers[0].sockets[0].getsockname()[1]
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"hutch is serving on http://{host}:{port}", flush=True)
    print(f"state: {settings.home} ({_describe_db(settings)})", flush=True)
    # The lifespan has run by now: the schema is migrated and the services are up.
    services: Services = app.state.services
    issued = await services.identity.bootstrap_admin()
    if issued is not None:
        print(f"admin API key (shown once, keep it): {issued.key}", flush=True)
    else:
        print(
            "admin key: shown at first start; make another with 'hutch keys create --user admin'",
            flush=True,
        )
    return await serving


def _describe_db(settings: Settings) -> str:
    if not settings.database_url:
        return "SQLite"
    return "database " + Database.redacted(settings.database_url)
