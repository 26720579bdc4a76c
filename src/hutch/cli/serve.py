"""``hutch serve``: the host agent and the API workers as processes, supervised; and the
one-process form (``--one-process``) that runs both in this process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from hutch.logs import configure_logging
from hutch.roles.supervisor import (
    Child,
    Supervisor,
    bind_listener,
    child_env,
    wait_agent,
    wait_workers,
    worker_count,
)
from hutch.settings import Settings

if TYPE_CHECKING:
    from hutch.core.identity import IdentityService

# The supervisor imports no more than it needs (the app is imported by its children, and
# by --one-process), so it starts fast and its children start at once.

__all__ = ["end_process", "serve", "serve_one_process"]


def end_process(code: int) -> NoReturn:
    """Exit with ``code`` at once, once the output is flushed. Called when a server has
    stopped everything it ran (children reaped, stores and sockets closed): the
    interpreter's own teardown of a process holding the whole app (its modules, models and
    schemas) only cost 0.5-2 s of every stop."""
    logging.shutdown()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


async def serve_one_process(settings: Settings, *, log_level: str) -> int:
    """Serve until SIGINT/SIGTERM. Prints the URL once listening, and the admin key once ever.

    The admin key is made only after the socket is bound, so a server that fails to start
    never makes a key nobody saw. Returns the process exit code.
    """
    import uvicorn

    from hutch.api.app import create_app
    from hutch.api.services import Services
    from hutch.api.upgrade import UpgradingH11Protocol

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
    # The lifespan has run by now: the schema is migrated and the services are up.
    services: Services = app.state.services
    await _announce(settings, f"http://{host}:{port}", services.identity)
    return await serving


async def _announce(settings: Settings, url: str, identity: IdentityService | None) -> None:
    """Print the URL, and the admin key once ever (made here on a store with no users)."""
    if identity is None:
        from hutch.core.identity import IdentityService
        from hutch.store.db import Database

        db = Database.of(settings)
        try:
            await _announce(settings, url, IdentityService(db))
        finally:
            await db.dispose()
        return
    print(f"hutch is serving on {url}", flush=True)
    print(f"state: {settings.home} ({_describe_db(settings)})", flush=True)
    issued = await identity.bootstrap_admin()
    if issued is not None:
        print(f"admin API key (shown once, keep it): {issued.key}", flush=True)
    else:
        print(
            "admin key: shown at first start; make another with 'hutch keys create --user admin'",
            flush=True,
        )


def _common_args(log_level: str) -> list[str]:
    return ["--log-level", log_level]


def _preloaded_supervisor(settings: Settings) -> Supervisor:
    """A supervisor whose process has imported the app, so the children it forks start
    without importing it again (restarts run ``python -m hutch`` instead)."""
    env = child_env(settings)
    os.environ.update(env)  # before the imports: prometheus-client reads it at import
    import hutch.roles.agent  # noqa: F401
    from hutch.api.app import create_app

    create_app(settings)  # the first app pays for building the routes' models; not the children
    return Supervisor(env)


def _workers(
    settings: Settings, listener: socket.socket, log_level: str, count: int
) -> list[Child]:
    fd = listener.fileno()
    return [
        Child(
            name=f"worker {n}",
            pass_fds=(fd,),
            args=["control", "--worker-fd", str(fd), *_common_args(log_level)],
            main=lambda: control_worker(settings, fd=fd, log_level=log_level),
        )
        for n in range(count)
    ]


async def serve(settings: Settings, *, log_level: str, workers: int | None = None) -> int:
    """``hutch agent`` and ``--workers`` control workers as supervised processes, until
    SIGINT/SIGTERM. Prints the URL once a worker answers, and the admin key once ever.
    Returns the exit code: 2 when the port cannot be had, 3 when the agent cannot start."""
    configure_logging(log_level, settings.log_format)
    try:
        listener = bind_listener(settings.host, settings.port)
    except OSError as exc:
        print(f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
              file=sys.stderr, flush=True)  # fmt: skip
        return 2
    supervisor = _preloaded_supervisor(settings)
    agent = Child(name="agent", args=["agent", *_common_args(log_level)],
                  main=lambda: run_agent_role(settings, log_level=log_level),
                  close_fds=(listener.fileno(),))  # fmt: skip
    group = _workers(settings, listener, log_level, worker_count(settings, workers))
    stop = _stop_on_signals(supervisor)
    try:
        # All at once: workers hold requests until the agent answers (hutch.roles.forward).
        await supervisor.spawn(agent)
        for child in group:
            await supervisor.spawn(child)
        failed = await _first(wait_agent(settings, agent), stop)
        if failed is not None or supervisor.stopping.is_set():
            return 0 if supervisor.stopping.is_set() else 3
        supervisor.keep_running(agent)
        for child in group:
            supervisor.keep_running(child)
        port = listener.getsockname()[1]
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        url = f"http://{host}:{port}"
        if not await _first(wait_workers(url, group), stop):
            return 0 if supervisor.stopping.is_set() else 1
        await _announce(settings, url, None)
        await supervisor.stopping.wait()
        return 0
    finally:
        await supervisor.stop([group, [agent]])
        listener.close()


async def control(settings: Settings, *, log_level: str, workers: int | None) -> int:
    """``hutch control``: ``--workers`` API workers in front of this home's agent."""
    configure_logging(log_level, settings.log_format)
    try:
        listener = bind_listener(settings.host, settings.port)
    except OSError as exc:
        print(f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
              file=sys.stderr, flush=True)  # fmt: skip
        return 2
    supervisor = _preloaded_supervisor(settings)
    group = _workers(settings, listener, log_level, worker_count(settings, workers))
    stop = _stop_on_signals(supervisor)
    try:
        for child in group:
            await supervisor.spawn(child)
            supervisor.keep_running(child)
        port = listener.getsockname()[1]
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        from hutch.cluster.tls import uvicorn_tls

        scheme = "https" if uvicorn_tls(settings) else "http"  # HUTCH_TLS_* in a cluster
        url = f"{scheme}://{host}:{port}"
        if not await _first(wait_workers(url, group), stop):
            return 0 if supervisor.stopping.is_set() else 1
        print(f"hutch control is serving on {url} ({len(group)} workers)", flush=True)
        await supervisor.stopping.wait()
        return 0
    finally:
        await supervisor.stop([group])
        listener.close()


async def control_worker(settings: Settings, *, fd: int, log_level: str) -> int:
    from hutch.roles.control import run_worker

    configure_logging(log_level, settings.log_format)
    return await run_worker(settings, listener=socket.socket(fileno=fd), log_level=log_level)


async def run_agent_role(settings: Settings, *, log_level: str) -> int:
    from hutch.roles.agent import run_agent

    configure_logging(log_level, settings.log_format)
    return await run_agent(settings, log_level=log_level)


def _stop_on_signals(supervisor: Supervisor) -> asyncio.Event:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, supervisor.stopping.set)
    return supervisor.stopping


T = TypeVar("T")


async def _first(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """``work``'s result, or None as soon as ``stop`` is set."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    return task.result()


def _describe_db(settings: Settings) -> str:
    from hutch.store.db import Database

    if not settings.database_url:
        return "SQLite"
    redacted: str = Database.redacted(settings.database_url)
    return "database " + redacted
