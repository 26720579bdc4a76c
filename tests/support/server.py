"""``hutch serve`` as a subprocess, talked to over HTTP the way a user would."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

__all__ = ["HutchProcess", "remove_instance", "run_cli"]

# One TLS context for every client of the tests' servers: httpx would load the CA bundle
# again for each new client (~30-90 ms of CPU), and tests make hundreds of clients.
_TLS = ssl.create_default_context()
_URL_LINE = re.compile(r"hutch is serving on (http://\S+)")
_KEY_LINE = re.compile(r"admin API key \(shown once, keep it\): (hk_\S+)")


def _env(home: Path, extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUTCH_")}
    env["HUTCH_HOME"] = str(home)
    # Servers that only test the control plane need no real sandboxes; tests of sandboxes
    # ask for runc explicitly.
    env["HUTCH_DRIVER"] = "fake"
    env["HUTCH_PROXY_ENABLED"] = "false"  # tests of previews turn it on
    # No lookup leaves this machine: by default hutch would forward sandboxes' queries to
    # the host's resolvers. Egress tests point it at their own (tests.support.internet).
    env["HUTCH_DNS_UPSTREAM"] = "none"
    env.update(extra or {})
    return env


def run_cli(
    home: Path, *args: str, env: Mapping[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``hutch ARGS…`` against the state in ``home``."""
    return subprocess.run(
        [sys.executable, "-m", "hutch", *args],
        env=_env(home, env),
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
        stdin=subprocess.DEVNULL,
    )


class HutchProcess:
    """A running ``hutch serve``; ``url`` and ``admin_key`` come from what it prints."""

    def __init__(
        self, home: Path, *args: str, env: Mapping[str, str] | None = None, port: int | None = 0
    ) -> None:
        self.home = home
        # Where its Prometheus /metrics is served, if it was given one (tests.support.warm).
        self.metrics_addr = (env or {}).get("HUTCH_METRICS_ADDR")
        command = [sys.executable, "-m", "hutch", "serve", "--log-level", "warning", *args]
        if port is not None and "--port" not in args and "HUTCH_PORT" not in (env or {}):
            command += ["--port", str(port)]
        self.proc = subprocess.Popen(
            command,
            env=_env(home, env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._ready = threading.Event()
        self.url = ""
        self.admin_key: str | None = None
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if match := _URL_LINE.search(line):
                self.url = match.group(1)
            if match := _KEY_LINE.search(line):
                self.admin_key = match.group(1)
            if line.startswith("admin"):
                self._ready.set()
        self._ready.set()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 120) -> HutchProcess:
        if not self._ready.wait(timeout) or not self.url:
            self.stop()
            raise RuntimeError(
                "hutch serve did not start:\n" + "\n".join(self.lines + self.stderr_lines)
            )
        return self

    def new_key(self, user: str) -> str:
        """A new API key of ``user`` (made if new), as ``hutch keys create --user USER``
        makes one, but through ``POST /v1/api-keys`` with the admin key: no ``hutch``
        process to start (a second or more of CPU each, and tests make hundreds). A server
        restarted on a home has no admin key to use (it is shown once): then the command
        runs. The command itself is tested in test_identity and test_cli_client."""
        if self.admin_key is None:
            return run_cli(self.home, "keys", "create", "--user", user).stdout.strip()
        with self.client(self.admin_key) as admin:
            made = admin.post("/v1/api-keys", json={"user": user})
        assert made.status_code == 201, made.text
        return str(made.json()["data"]["key"])

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"X-Api-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, verify=_TLS)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def wait_exit(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.stop()


def remove_instance(home: Path) -> None:
    """Destroy everything the stopped instance in ``home`` left (``hutch host cleanup``).

    A stopped server leaves its sandboxes running, since a restart adopts them; tests clean up.
    Its sandboxes go first, four at a time (the command destroys one after the other, a
    gvisor one in about two seconds, and a module's server can leave dozens), then the
    command removes the rest.
    """
    from hutch.host.cleanup import cleanup_home

    async def remove() -> None:
        await _destroy_sandboxes(home)
        await cleanup_home(home)

    asyncio.run(remove())


async def _destroy_sandboxes(home: Path, at_once: int = 4) -> None:
    from hutch.host.cleanup import _gvisor_left_anything
    from hutch.host.drivers.base import DriverError
    from hutch.host.drivers.gvisor import GvisorDriver
    from hutch.host.drivers.runc import RuncDriver
    from hutch.host.ownership import HomeLock
    from hutch.host.proc import CommandFailed

    gate = asyncio.Semaphore(at_once)

    async def destroy(driver: RuncDriver, sandbox_id: str) -> None:
        async with gate:
            await driver.destroy(sandbox_id)

    with HomeLock(home).held():  # as the command: never while an agent of the home runs
        gvisor = GvisorDriver(home, images=home)
        if _gvisor_left_anything(gvisor):
            try:
                await gvisor.prepare()
                running = [info.id for info in await gvisor.list_sandboxes()]
                await asyncio.gather(*(destroy(gvisor, sandbox_id) for sandbox_id in running))
            except (DriverError, CommandFailed, OSError):
                pass  # the command tries again, and says nothing either
        runc = RuncDriver(home, images=home)
        running = [info.id for info in await runc.list_sandboxes()]
        await asyncio.gather(*(destroy(runc, sandbox_id) for sandbox_id in running))
