"""A hutch cluster on one machine: hosts as network namespaces on a test bridge.

Each "host" is a network namespace joined to a bridge the test makes (its own addresses,
routes, nftables and links), running ``hutch agent --control URL --token T`` with its own
home, runc root and link pool; ``hutch control`` runs in the host's own namespace on the
bridge's address, on a throwaway PostgreSQL (reached by the agents over its unix socket,
which no network namespace hides). Everything made here is removed by :meth:`Cluster.stop`,
also after a failed start: the namespaces, the bridge, the sandboxes, the database.

The agents run under ``nsenter --net`` only (not ``ip netns exec``, which would mount a
new ``/sys`` over the host's cgroup mounts, and runc needs those).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import httpx

from tests.support.postgres import PostgresServer
from tests.support.server import _env, run_cli

__all__ = ["AgentHost", "Cluster", "Relay"]

_CONTROL_LINE = re.compile(r"hutch control is serving on (https?://\S+)")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _free_subnet() -> int:
    """A third octet N such that 10.250.N.0/24 is on no address or route of the host."""
    shown = _ip("-o", "-4", "addr", "show").stdout + _ip("-4", "route", "show").stdout
    used = {int(n) for n in re.findall(r"\b10\.250\.(\d+)\.", shown)}
    for _ in range(200):
        n = secrets.randbelow(250) + 1
        if n not in used:
            return n
    raise RuntimeError("no free 10.250.N.0/24 for the test cluster")


class Relay:
    """TCP from ``listen`` (the test bridge's address, which the hosts' namespaces reach)
    to a server on this machine's loopback, which none of them reaches. With ``record``,
    the HTTP request lines the hosts sent (``PUT /bucket/key…``) are kept in order in
    :attr:`requests`."""

    def __init__(self, listen: str, target_port: int, *, record: bool = False) -> None:
        self._server = socket.create_server((listen, 0))
        self.port = int(self._server.getsockname()[1])
        self._target = target_port
        self._record = record
        self.requests: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            seen = self.requests if self._record else None
            for a, b, into in ((client, upstream, seen), (upstream, client, None)):
                threading.Thread(target=self._pipe, args=(a, b, into), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, seen: list[str] | None) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(1 << 16):
                if seen is not None:
                    seen += [m.decode() for m in _REQUEST_LINE.findall(data)]
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._server.close()


_REQUEST_LINE = re.compile(rb"(?:GET|PUT|POST|DELETE|HEAD) /[^ \r\n]* HTTP/1\.1")


@dataclass
class AgentHost:
    """One host: its namespace, its agent process and its home."""

    name: str
    netns: str
    address: IPv4Address
    home: Path
    env: dict[str, str]
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.address}:8702"

    def start(self, control: str, token: str) -> None:
        self.output = []
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns}", sys.executable, "-m", "hutch",
             "agent", "--control", control, "--token", token, "--listen", f"{self.address}:8702",
             "--log-level", "warning"],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        proc = self.proc
        threading.Thread(target=lambda: self.output.extend(proc.stdout or ()), daemon=True).start()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cleanup(self) -> None:
        """What the agent left on this machine (sandboxes, their namespaces, links)."""
        subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.netns}", sys.executable, "-m", "hutch", "host",
             "cleanup", "--home", str(self.home)],
            env=_env(self.home, None), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip


class Cluster:
    """``hutch control`` (cluster mode, PostgreSQL) and ``len(hosts)`` agents."""

    def __init__(
        self,
        root: Path,
        images: Path,
        hosts: dict[str, dict[str, str]],
        *,
        control_env: dict[str, str] | None = None,
        control_port: int = 0,
        relayed: dict[str, int] | None = None,
    ) -> None:
        """``relayed``: agents' settings naming a server on this machine's loopback (the
        variable, the server's port): each agent gets ``http://<bridge>:<relay>`` instead."""
        self.root = root
        self.relayed = dict(relayed or {})
        self.relays: list[Relay] = []
        self.control_extra = dict(control_env or {})
        self.control_port = control_port  # the first control plane's (0: any free one)
        self.suffix = secrets.token_hex(2)
        self.bridge = f"hcb{self.suffix}"
        self.net = _free_subnet()
        self.gateway = IPv4Address(f"10.250.{self.net}.1")
        self.images = images
        self.hosts: dict[str, AgentHost] = {}
        self.postgres = PostgresServer(Path(tempfile.mkdtemp(prefix="hutch-cluster-pg-")))
        self.control: subprocess.Popen[str] | None = None
        self.control_output: list[str] = []
        self.url = ""
        self.key = ""
        self.token = ""
        try:
            self._network(hosts)
            self.postgres.init()
            self.postgres.start()
            self.postgres.create_database("cluster")
            # Over the unix socket: the agents' namespaces cannot reach the host's loopback.
            self.database_url = (
                f"postgresql://{PostgresServer.user}@localhost:{self.postgres.port}/cluster"
                f"?host={self.postgres.root}"
            )
            self.control_home = root / "control"
            self.token = self.cli("hosts", "token", "create").stdout.strip()
            self.key = self.cli("keys", "create", "--user", "alice").stdout.strip()
            self._start_control()
            for host in self.hosts.values():
                host.start(self.url, self.token)
            self.wait_hosts(set(self.hosts), status="active")
        except BaseException:
            self.stop()
            raise

    def _network(self, hosts: dict[str, dict[str, str]]) -> None:
        from tests.e2e.test_sandboxes_runc import new_pool

        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        via: dict[str, str] = {}
        for variable, port in self.relayed.items():
            self.relays.append(Relay(str(self.gateway), port))
            via[variable] = f"http://{self.gateway}:{self.relays[-1].port}"
        for n, (name, extra) in enumerate(hosts.items(), start=1):
            netns = f"hcl{self.suffix}{name}"
            outside = f"hcv{self.suffix}{n}"
            address = IPv4Address(f"10.250.{self.net}.{10 + n}")
            host = AgentHost(name=name, netns=netns, address=address,
                             home=self.root / name, env={})  # fmt: skip
            self.hosts[name] = host
            _ip("netns", "add", netns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", netns)
            _ip("link", "set", outside, "master", self.bridge, "up")
            _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            host.env = _env(host.home, {
                "HUTCH_DRIVER": "runc", "HUTCH_IMAGES_DIR": str(self.images),
                "HUTCH_LINK_POOL": new_pool(), "HUTCH_HOST_ID": name,
                "HUTCH_HEARTBEAT_INTERVAL_S": "0.5", **extra, **via,
            })  # fmt: skip

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(self.control_home, *args, env={"HUTCH_DATABASE_URL": self.database_url},
                       check=check)  # fmt: skip

    def _control_env(self) -> dict[str, str]:
        return _env(self.control_home, {
            "HUTCH_DATABASE_URL": self.database_url, "HUTCH_CLUSTER": "true",
            "HUTCH_HOST_DEAD_AFTER_S": "8", "HUTCH_HEARTBEAT_INTERVAL_S": "0.5",
            **self.control_extra,
        })  # fmt: skip

    def _start_control(self) -> None:
        for host in self.hosts.values():
            host.env["HUTCH_DATABASE_URL"] = self.database_url
        self.control, self.url = self.start_control(self.control_output, port=self.control_port)

    def start_control(
        self, output: list[str], *, port: int = 0
    ) -> tuple[subprocess.Popen[str], str]:
        """Another ``hutch control --workers 2`` on the cluster's database (a control
        plane keeps nothing of its own, so any number can run): its process and URL."""
        control = subprocess.Popen(
            [sys.executable, "-m", "hutch", "control", "--workers", "2", "--host",
             str(self.gateway), "--port", str(port), "--log-level", "warning"],
            env=self._control_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert control.stdout is not None
        url = ""
        for line in control.stdout:
            output.append(line)
            if match := _CONTROL_LINE.search(line):
                url = match.group(1)
                break
        if not url:
            control.kill()
            raise RuntimeError("hutch control did not start:\n" + "".join(output))
        threading.Thread(target=lambda: output.extend(control.stdout or ()), daemon=True).start()
        return control, url

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-Api-Key": self.key}, timeout=60)

    def hosts_view(self) -> dict[str, dict[str, Any]]:
        with self.client() as api:
            answer = api.get("/v1/hosts")
        assert answer.status_code == 200, answer.text
        return {h["id"]: h for h in answer.json()["data"]["data"]}

    def wait_hosts(self, names: set[str], *, status: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        seen: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            seen = self.hosts_view()
            if all(seen.get(n, {}).get("status") == status for n in names):
                return
            for host in self.hosts.values():
                exited = host.proc is not None and host.proc.poll() is not None
                if status == "active" and host.name in names and exited:
                    raise RuntimeError(f"agent {host.name} exited:\n" + "".join(host.output))
            time.sleep(0.2)
        raise AssertionError(f"hosts {sorted(names)} not {status}: {seen}")

    def stop(self) -> None:
        if self.control is not None and self.control.poll() is None:
            self.control.send_signal(signal.SIGTERM)
            try:
                self.control.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.control.kill()
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                host.stop()
            with contextlib.suppress(Exception):
                host.cleanup()
            _ip("netns", "del", host.netns, check=False)
        for relay in self.relays:
            relay.close()
        _ip("link", "del", self.bridge, check=False)
        self.postgres.destroy()
