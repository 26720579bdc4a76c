"""A small internet of the tests' own, since this machine has none (and must not reach one).

:class:`Internet` makes a network namespace ("upstream") joined to the host by a veth, routes
a slice of the benchmark range 198.18.0.0/15 into it, and runs inside it:

- HTTP servers on every address of the zone, on ports :data:`HTTP_PORTS` (see
  :mod:`tests.support.upstream` for what they answer: who they are, N bytes, a connection
  that stays open, an upload sink);
- an authoritative DNS server for :data:`ZONE` at :attr:`Internet.resolver` (the one to give
  hutch as ``HUTCH_DNS_UPSTREAM``), and a *liar* at :attr:`Internet.liar` that answers every
  A query with :attr:`Internet.lie`, to tell whose answer a sandbox got;
- a real ``pypiserver`` at ``pypi.test`` (:attr:`Internet.pypi_index`) and a real offline
  ``verdaccio`` at ``registry.npm.test`` (:attr:`Internet.npm_registry`), each serving a
  ``hutch-hello`` package that depends on ``hutch-dep`` (:mod:`tests.support.registries`).

Tests of other helpers' sessions run on this machine at the same time, so each session
claims a *slot* N (an flock held for the session, freed when the process dies) and uses
198.18.N.0/24 for its servers and 198.19.N.0/24 for its veth links; its namespaces are
``htnet-NN-*`` and its host interfaces ``htiNN*``. Whatever a crashed session left in its
slot is removed when the slot is next claimed. :meth:`Internet.stop` removes everything:
processes, namespaces, links and routes.

:meth:`Internet.host_address` hosts any other address (an RFC 1918 one, a link-local one;
never 169.254.169.254 itself) in a namespace of its own with a route to it for the length of
a ``with`` block, so a test that proves it unreachable keeps its traffic on this machine
even when the rule under test is broken.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import IO, Any

import httpx

from tests.support.registries import VERDACCIO, build_wheels, publish_npm, verdaccio_config

__all__ = ["HTTP_PORTS", "ZONE", "DnsQuery", "HostedAddress", "Internet"]

REPO = Path(__file__).resolve().parents[2]
SLOTS = 64
LOCKS = Path("/run/hutch-test-internet")
HTTP_PORTS = (80, 443, 8080, 25)
SHORT_TTL = 2

# name -> last octets of its addresses in the session's /24 (a CNAME is a str).
ZONE: dict[str, list[int] | str] = {
    "pypi.test": [10],
    "registry.npm.test": [11],
    "files.pythonhosted.test": [12],
    "example.test": [20],
    "www.example.test": [21],
    "api.example.test": [22],
    "short.example.test": [23],  # TTL SHORT_TTL
    "multi.example.test": [24, 25],  # two A records
    "evil.test": [30],
    "edge.evil.test": [31],
    "twin.evil.test": [20],  # shares example.test's address
    "cdn.example.test": "edge.evil.test",  # a CNAME out of example.test into evil.test
    "alias.evil.test": "www.example.test",  # a CNAME out of evil.test into example.test
    "*.wild.test": [40],  # any name one label under wild.test (benchmarks: fresh names)
}
REGISTRY_OCTETS = {10: "pypiserver", 11: "verdaccio"}
RESOLVER_OCTET, LIAR_OCTET, LIE_OCTET = 53, 54, 99
BIG_TXT = "big.test"  # answers over 512 bytes: truncated over UDP, whole over TCP
BLACKHOLE = "blackhole.test"  # never answered


@dataclass(frozen=True)
class DnsQuery:
    resolver: str
    name: str
    qtype: str
    client: str


@dataclass(frozen=True)
class HostedAddress:
    """An address served (HTTP on ``ports``) from a namespace of the test's own."""

    address: str
    ports: tuple[int, ...]

    def url(self, port: int | None = None, path: str = "/") -> str:
        return f"http://{self.address}:{port or self.ports[0]}{path}"


def _ip(*args: str, netns: str | None = None, check: bool = True, batch: str = "") -> str:
    command = ["ip", *(["-n", netns] if netns else []), *args]
    if batch:
        command = ["ip", *(["-n", netns] if netns else []), "-batch", "-"]
    done = subprocess.run(command, input=batch or None, capture_output=True, text=True, timeout=30)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout


_LIBC = ctypes.CDLL(None)


def _die_with_parent() -> None:
    # Between fork and exec only this call runs, on a handle made beforehand: the servers
    # get SIGTERM if the test session dies without stopping them (PR_SET_PDEATHSIG).
    _LIBC.prctl(1, signal.SIGTERM)


def _wait_tcp(address: str, port: int, *, what: str, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {address}:{port}")


class Internet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.slot = -1
        self._lock: IO[bytes] | None = None
        self._procs: list[subprocess.Popen[Any]] = []
        self._hosted = 0

    # -- addresses --------------------------------------------------------------------------

    @property
    def network(self) -> IPv4Network:
        return IPv4Network(f"198.18.{self.slot}.0/24")

    def _at(self, octet: int) -> str:
        return str(self.network[octet])

    @property
    def netns(self) -> str:
        return f"htnet-{self.slot:02d}-up"

    @property
    def resolver(self) -> str:
        """The authoritative server of :data:`ZONE` (port 53, UDP and TCP)."""
        return self._at(RESOLVER_OCTET)

    @property
    def liar(self) -> str:
        """A resolver that answers every A query with :attr:`lie`."""
        return self._at(LIAR_OCTET)

    @property
    def lie(self) -> str:
        return self._at(LIE_OCTET)

    def addresses(self, name: str) -> list[str]:
        """The A addresses ``name`` finally resolves to (CNAMEs and wildcards followed)."""

        def record(name: str) -> list[int] | str:
            return ZONE[name] if name in ZONE else ZONE["*." + name.partition(".")[2]]

        target = record(name)
        while isinstance(target, str):
            target = record(target)
        return [self._at(octet) for octet in target]

    def address(self, name: str) -> str:
        return self.addresses(name)[0]

    def url(self, host: str, port: int = 80, path: str = "/") -> str:
        return f"http://{host}:{port}{path}"

    pypi_index = "http://pypi.test/simple/"
    npm_registry = "http://registry.npm.test/"

    def spare_address(self, kind: str) -> str:
        """An address of ``kind`` (``rfc1918``, ``rfc1918-172``, ``rfc1918-192``,
        ``link-local``, ``cgnat``) for :meth:`host_address`, unique to this session's slot."""
        n = self.slot
        return {
            "rfc1918": f"10.201.{n}.1",
            "rfc1918-172": f"172.31.{n}.1",
            "rfc1918-192": f"192.168.{200 + n % 50}.1",
            "link-local": f"169.254.170.{n + 1}",
            "cgnat": f"100.127.{n}.1",
        }[kind]

    # -- life --------------------------------------------------------------------------------

    def start(self) -> Internet:
        """Claim a slot, build the namespace and start every server; on failure, call stop()."""
        self._claim_slot()
        self._remove_leftovers()
        self._build_namespace()
        self._start_servers()
        return self

    def stop(self) -> None:
        """Stop every server and remove the namespaces, links and routes. Idempotent."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        if self.slot >= 0:
            self._remove_leftovers()
        if self._lock is not None:
            self._lock.close()  # frees the flock
            self._lock = None

    def _claim_slot(self) -> None:
        LOCKS.mkdir(parents=True, exist_ok=True)
        for slot in range(SLOTS):
            lock = (LOCKS / f"{slot}.lock").open("wb")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            self.slot, self._lock = slot, lock
            return
        raise RuntimeError(f"all {SLOTS} slots of the test internet are taken")

    def _remove_leftovers(self) -> None:
        """Remove this slot's namespaces (ending the processes left in them), links, routes."""
        prefix = f"htnet-{self.slot:02d}-"
        for line in _ip("netns", "list", check=False).splitlines():
            name = line.split(" ")[0]
            if not name.startswith(prefix):
                continue
            for pid in _ip("netns", "pids", name, check=False).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", name, check=False)
        for line in _ip("-o", "link", "show", check=False).splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith(f"hti{self.slot:02d}"):
                _ip("link", "del", name, check=False)
        _ip("route", "del", str(self.network), check=False)

    def _build_namespace(self) -> None:
        host_if = f"hti{self.slot:02d}u"
        host, inside = f"198.19.{self.slot}.1", f"198.19.{self.slot}.2"
        _ip(
            batch=f"netns add {self.netns}\n"
            f"link add {host_if} type veth peer name eth0 netns {self.netns}\n"
            f"addr add {host}/30 dev {host_if}\n"
            f"link set {host_if} up\n"
            f"route add {self.network} via {inside} dev {host_if}\n"
        )
        octets = sorted(
            {o for t in ZONE.values() if isinstance(t, list) for o in t}
            | {RESOLVER_OCTET, LIAR_OCTET, LIE_OCTET}
        )
        addresses = "".join(f"addr add {self._at(o)}/32 dev eth0\n" for o in octets)
        _ip(
            netns=self.netns,
            batch=f"link set lo up\naddr add {inside}/30 dev eth0\n{addresses}"
            f"link set eth0 up\nroute add default via {host}\n",
        )

    def _spawn(self, netns: str, name: str, *argv: str) -> subprocess.Popen[Any]:
        log = (self.root / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, *argv],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        log.close()
        self._procs.append(proc)
        return proc

    def _log_tail(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.root / f"{name}.log").read_text()[-2000:]
        return ""

    def _zone_records(self) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        for name, target in ZONE.items():
            record: dict[str, Any] = (
                {"cname": target}
                if isinstance(target, str)
                else {"a": [self._at(o) for o in target]}
            )
            record["ttl"] = SHORT_TTL if name == "short.example.test" else 300
            records[name] = record
        records[BIG_TXT] = {"txt": [f"{i:03d}-" + "t" * 60 for i in range(40)], "ttl": 300}
        return records

    def _upstream_config(self) -> dict[str, Any]:
        http = []
        for octet in sorted({o for t in ZONE.values() if isinstance(t, list) for o in t}):
            for port in HTTP_PORTS:
                if not (octet in REGISTRY_OCTETS and port == 80):
                    http.append([self._at(octet), port])
        http.append([self.lie, 80])
        return {
            "http": http,
            "dns_log": str(self.root / "dns-queries.log"),
            "dns": [
                {
                    "address": self.resolver,
                    "zone": self._zone_records(),
                    "blackhole": [BLACKHOLE],
                },
                {"address": self.liar, "lie": self.lie},
            ],
        }

    def _start_servers(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "upstream.json"
        config.write_text(json.dumps(self._upstream_config()))
        upstream = self._spawn(
            self.netns, "upstream", sys.executable, "-m", "tests.support.upstream", str(config)
        )
        wheels = self.root / "wheels"
        build_wheels(wheels)
        pypi = self._spawn(
            self.netns, "pypiserver",
            str(Path(sys.executable).parent / "pypi-server"), "run",
            "--host", self._at(10), "--port", "80", "--disable-fallback",
            "--authenticate", ".", "--passwords", ".", str(wheels),
        )  # fmt: skip
        if not VERDACCIO.exists():
            raise RuntimeError("verdaccio is not installed: make test runs npm in tests/registry")
        registry = self.root / "verdaccio"
        verdaccio = self._spawn(
            self.netns, "verdaccio",
            str(VERDACCIO), "--config", str(verdaccio_config(registry, f"{self._at(11)}:80")),
        )  # fmt: skip
        try:
            for address, port in self._upstream_config()["http"]:
                _wait_tcp(address, port, what="the upstream servers", proc=upstream)
            _wait_tcp(self.resolver, 53, what="the upstream DNS server", proc=upstream)
            _wait_tcp(self._at(10), 80, what="pypiserver", proc=pypi)
            _wait_tcp(self._at(11), 80, what="verdaccio", proc=verdaccio)
        except RuntimeError as exc:
            logs = "\n".join(
                f"--- {name}:\n{self._log_tail(name)}"
                for name in ("upstream", "pypiserver", "verdaccio")
            )
            raise RuntimeError(f"{exc}\n{logs}") from None
        publish_npm(f"http://{self._at(11)}/", host="registry.npm.test")

    # -- what tests read ----------------------------------------------------------------------

    def dns_queries(self) -> list[DnsQuery]:
        """Every query the upstream resolvers got so far, oldest first."""
        path = self.root / "dns-queries.log"
        if not path.exists():
            return []
        return [DnsQuery(*line.split(" ")) for line in path.read_text().splitlines() if line]

    def get(self, host: str, port: int = 80, path: str = "/") -> httpx.Response:
        """An HTTP GET from the host itself (``host`` is an address)."""
        return httpx.get(f"http://{host}:{port}{path}", timeout=10)

    @contextlib.contextmanager
    def host_address(self, address: str, ports: Sequence[int] = (80,)) -> Iterator[HostedAddress]:
        """Serve HTTP on ``address`` (``ports``) from a namespace of its own, with a host
        route to it, for the length of the block; removed on the way out, error or not."""
        ip = IPv4Address(address)
        if ip == IPv4Address("169.254.169.254"):
            raise ValueError("never use the real metadata address; use 169.254.170.x")
        self._hosted += 1
        k = self._hosted
        if k >= SLOTS:
            raise RuntimeError("too many hosted addresses in one session")
        netns, host_if = f"htnet-{self.slot:02d}-h{k}", f"hti{self.slot:02d}h{k}"
        host, inside = f"198.19.{self.slot}.{4 * k + 1}", f"198.19.{self.slot}.{4 * k + 2}"
        proc: subprocess.Popen[Any] | None = None
        try:
            _ip(
                batch=f"netns add {netns}\n"
                f"link add {host_if} type veth peer name eth0 netns {netns}\n"
                f"addr add {host}/30 dev {host_if}\n"
                f"link set {host_if} up\n"
                f"route add {ip}/32 via {inside} dev {host_if}\n"
            )
            _ip(
                netns=netns,
                batch=f"link set lo up\naddr add {inside}/30 dev eth0\n"
                f"addr add {ip}/32 dev eth0\nlink set eth0 up\nroute add default via {host}\n",
            )
            config = self.root / f"hosted-{k}.json"
            config.write_text(json.dumps({"http": [[str(ip), port] for port in ports]}))
            proc = self._spawn(
                netns, f"hosted-{k}", sys.executable, "-m", "tests.support.upstream", str(config)
            )
            for port in ports:
                _wait_tcp(str(ip), port, what=f"the server on {ip}", proc=proc)
            yield HostedAddress(str(ip), tuple(ports))
        finally:
            if proc is not None:
                proc.kill()
                proc.wait()
                self._procs.remove(proc)
            _ip("route", "del", f"{ip}/32", "dev", host_if, check=False)
            _ip("netns", "del", netns, check=False)
            _ip("link", "del", host_if, check=False)
