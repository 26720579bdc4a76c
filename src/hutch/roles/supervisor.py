"""Starting the roles as processes and keeping them running (``hutch serve``, ``hutch control``).

The supervisor binds the public socket itself (so ``--port 0`` is known before any worker
starts, and a taken port fails at once), then starts the children with ``python -m hutch``:

- ``hutch agent`` (``serve`` only), and waits until it answers on its socket;
- ``--workers`` control workers, each handed the listening socket (they share it).

A child that dies is started again (a restarted agent adopts its sandboxes through the
usual recovery; a worker costs only its in-flight requests). Every child is tied to the
supervisor with ``PR_SET_PDEATHSIG``: if the supervisor is killed, even with SIGKILL, its
children go too, so nothing is orphaned and the next start finds the home free and adopts
the sandboxes, as after a crash of the one-process server. SIGTERM or SIGINT stops the
workers, then the agent, and waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import httpx

from hutch.roles.paths import agent_socket
from hutch.settings import Settings

__all__ = ["Child", "Supervisor", "bind_listener", "child_env", "worker_count"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def worker_count(settings: Settings, workers: int | None) -> int:
    """``--workers``, else ``HUTCH_WORKERS``, else one per core."""
    chosen = workers if workers is not None else settings.workers
    return chosen if chosen > 0 else max(1, os.cpu_count() or 1)


def bind_listener(host: str, port: int) -> socket.socket:
    """The public listening socket, shared by every worker (OSError if it cannot be had)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets whose proto says TCP (accepted
    # ones take the listener's); with 0, answers written in parts met Nagle's algorithm.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of the children: this one, with what the options said on top."""
    env = dict(os.environ)
    if settings.metrics_addr and not env.get("PROMETHEUS_MULTIPROC_DIR"):
        # The agent's /metrics adds up every process's counters (hutch.api.prometheus).
        shared = settings.home / "run" / "prometheus"
        shutil.rmtree(shared, ignore_errors=True)
        shared.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(shared)
    env["HUTCH_HOME"] = str(settings.home)
    env["HUTCH_HOST"] = settings.host
    if settings.database_url:
        env["HUTCH_DATABASE_URL"] = settings.database_url
    return env


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ChildProcess:
    """A child by its pid, waited for through a pidfd (so children made by ``fork`` and by
    ``exec`` are supervised alike); the part of :class:`asyncio.subprocess.Process` used."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited: asyncio.Future[int] | None = None

    async def wait(self) -> int:
        if self.returncode is not None:
            return self.returncode
        if self._exited is None:
            loop = asyncio.get_running_loop()
            self._exited = loop.create_future()
            pidfd = os.pidfd_open(self.pid)

            def reap() -> None:
                loop.remove_reader(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
                assert self._exited is not None
                self._exited.set_result(self.returncode)

            loop.add_reader(pidfd, reap)
        return await asyncio.shield(self._exited)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


ChildMain = Callable[[], Coroutine[Any, Any, int]]


@dataclass(kw_only=True)
class Child:
    name: str
    args: Sequence[str]
    """``hutch ARGS…``: how the child is started again after it died (a new program)."""
    main: ChildMain | None = None
    """How it is started the first time: forked from the supervisor, which imported the
    app once beforehand, so starting N workers costs no N imports."""
    pass_fds: tuple[int, ...] = ()
    close_fds: tuple[int, ...] = ()
    """Descriptors of the supervisor a forked child must not keep (the agent: the port)."""
    process: ChildProcess | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)


def _run_forked(main: ChildMain, close_fds: tuple[int, ...]) -> NoReturn:
    """The forked child: a fresh event loop and default signals, then ``main``."""
    code = 1
    try:
        _die_with_parent()
        for fd in close_fds:
            os.close(fd)
        asyncio.events._set_running_loop(None)  # the parent's loop is not ours
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        code = asyncio.run(main())
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


class Supervisor:
    def __init__(self, env: dict[str, str]) -> None:
        self._env = env
        self.stopping = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []

    async def spawn(self, child: Child) -> ChildProcess:
        """Start ``child``: forked the first time if it has a ``main``, else ``hutch ARGS``."""
        if child.main is not None and child.restarts == 0:
            pid = os.fork()
            if pid == 0:
                _run_forked(child.main, child.close_fds)
        else:
            pid = subprocess.Popen(  # noqa: ASYNC220 (fork+exec returns at once)
                [sys.executable, "-m", "hutch", *child.args],
                env=self._env, stdin=subprocess.DEVNULL, pass_fds=child.pass_fds,
                preexec_fn=_die_with_parent,
            ).pid  # fmt: skip
        child.process = ChildProcess(pid)
        child.started_at = time.monotonic()
        return child.process

    def keep_running(self, child: Child) -> None:
        """Start ``child`` again whenever it exits, until :meth:`stop`."""
        self._watchers.append(asyncio.create_task(self._watch(child), name=f"watch-{child.name}"))

    async def _watch(self, child: Child) -> None:
        while not self.stopping.is_set():
            process = child.process or await self.spawn(child)
            code = await process.wait()
            child.process = None
            # A Ctrl-C reaches the children too: give the supervisor's own handler its turn.
            await asyncio.sleep(0.1)
            if self.stopping.is_set():
                return
            child.restarts += 1
            quick = time.monotonic() - child.started_at < 5
            log.warning("%s (pid %s) exited with %s; starting it again",
                        child.name, process.pid, code)  # fmt: skip
            await asyncio.sleep(min(5.0, 0.5 * child.restarts) if quick else 0.0)

    async def stop(self, groups: Sequence[Sequence[Child]], *, timeout_s: float = 30) -> None:
        """SIGTERM each group in turn (workers before the agent) and wait for it."""
        self.stopping.set()
        for watcher in self._watchers:
            watcher.cancel()
        for group in groups:
            running = [c.process for c in group if c.process and c.process.returncode is None]
            for process in running:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
            for process in running:
                try:
                    await asyncio.wait_for(process.wait(), timeout_s)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()


async def wait_agent(settings: Settings, child: Child, *, timeout_s: float = 300) -> int | None:
    """Wait until the agent ``child`` answers on its socket: None when it does, else the
    exit code it died with (or 1 after ``timeout_s``)."""
    # Plain HTTP to the supervisor's own children (here and in wait_workers): verify=False
    # only spares loading the CA bundle (tens of ms each, on every start's critical path).
    transport = httpx.AsyncHTTPTransport(uds=str(agent_socket(settings)), verify=False)
    deadline = time.monotonic() + timeout_s
    process = child.process
    if process is None:
        return 1
    # Nothing else waits for the agent yet (keep_running comes after): without this, an
    # agent that exits at its start (a home in use, a pool clash) went unnoticed, and
    # serve polled its socket for timeout_s before saying it could not start.
    exited = asyncio.ensure_future(process.wait())
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://agent",
                                     timeout=5) as c:  # fmt: skip
            while time.monotonic() < deadline:
                if exited.done():
                    return exited.result()
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    answer = await c.get("/internal/v1/info")
                    if answer.status_code == 200 and answer.json()["pid"] == process.pid:
                        return None
                await asyncio.sleep(0.05)
        return 1
    finally:
        exited.cancel()  # the exit is still reaped (ChildProcess.wait's own future)


async def wait_workers(url: str, workers: Sequence[Child], *, timeout_s: float = 120) -> bool:
    """Wait until a worker answers on the public socket; False if they all died."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=5, verify=False) as client:
        while time.monotonic() < deadline:
            if all(c.process is None or c.process.returncode is not None for c in workers):
                return False
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url + "/v1/shapes")).status_code == 200:
                    return True
            await asyncio.sleep(0.05)
    return False
