"""nginx (Debian's) as the data path of preview URLs, with routes set at run time.

hutch runs one nginx per instance (master and workers; ``daemon off`` so it is a child of
``hutch serve``) listening on the proxy address. Every route is a line in a generated
``routes.conf``: a preview's host name maps to an ``upstream`` block of its own (so
connections to the sandbox are kept alive between requests), an ingress pattern maps
``{port}-{token}.{domain}`` to that port of the sandbox. A change rewrites the file, checks
it with ``nginx -t``, and sends the master SIGHUP: new workers take the new routes, old
ones finish what they carry (open WebSockets of other previews are not cut, as they are
by Caddy 2.6 on every change). The change counts as made once a new worker answers with
the new generation number. Unknown names get a 404.

A route can be marked *asleep* (its sandbox is paused and wakes on traffic): its requests
first go, as an ``auth_request`` subrequest without their body, to hutch's wake listener
(on loopback, served by this module, answered by the callback in :attr:`NginxProxy.wake`;
nginx's workers run as ``nobody`` and may not reach a unix socket under hutch's home, so
each subrequest carries a secret of this instance, which only the root-only nginx.conf
holds). The request is held until the answer: a 204 (the sandbox runs
again) lets it through to the sandbox as any other; a refusal is a 503 that says why.
Routes that are awake never take that path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

__all__ = ["NginxProxy", "ProxyError", "Waker", "free_port"]

GENERATION_HOST = "generation.hutch.invalid"
NOT_FOUND = "no such preview (it may have expired, or its sandbox is paused or gone)\\n"
# How long a request waits for its sandbox to be woken (a resume from a snapshot in S3
# included) before nginx gives up on it with a 503.
WAKE_TIMEOUT_S = 300

MAIN_CONF = """
worker_processes auto;
daemon off;
master_process on;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; "" ""; }}
    include {work}/routes.conf;
    server {{
        listen {listen};
        error_page 418 = @wake;
        recursive_error_pages on;  # @wake's own error_page, after the 418
        location / {{
            if ($preview_upstream = "") {{ return 404 "{not_found}"; }}
            if ($preview_wake != "") {{ return 418; }}
{to_sandbox}
        }}
        location @wake {{
            auth_request {wake_path};
            auth_request_set $wake_refused $upstream_http_x_hutch_refused;
            error_page 403 500 = @not_woken;  # the wake's answers, not the app's
{to_sandbox}
        }}
        location @not_woken {{
            default_type text/plain;
            return 503 "the sandbox could not be woken: $wake_refused\\n";
        }}
        location = {wake_path} {{
            internal;
            proxy_pass http://127.0.0.1:{wake_port}/;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Hutch-Wake $preview_wake;
            proxy_set_header X-Hutch-Wake-Key {wake_key};
            proxy_read_timeout {wake_timeout}s;
        }}
    }}
    server {{
        listen {listen};
        server_name {generation_host};
        location / {{ return 200 "$preview_generation"; }}
    }}
}}
"""


TO_SANDBOX = """\
            proxy_pass http://$preview_upstream;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;"""

# Wakes the sandbox named; None once it runs, else why it was not woken.
Waker = Callable[[str], Awaitable[str | None]]


class ProxyError(Exception):
    """The proxy could not be started or refused a change; the message says why."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class _Route:
    host: str  # an exact name, or "~regexp" with a named group "port"
    upstream: str  # ip:port, or "ip" for a pattern (the port comes from the name)
    wake: str = ""  # asleep: the sandbox to wake before a request goes through


class NginxProxy:
    def __init__(self, *, listen_host: str, listen_port: int, workdir: Path) -> None:
        self.listen_host = listen_host
        self.listen_port = listen_port or free_port(listen_host)
        self.workdir = workdir
        self._routes: dict[str, _Route] = {}
        self._generation = 0
        self._lock = asyncio.Lock()
        self._proc: asyncio.subprocess.Process | None = None
        self._client = httpx.AsyncClient(timeout=2.0, trust_env=False)
        self.wake: Waker | None = None
        self._wake_server: asyncio.Server | None = None
        # Not a path any sandbox's app could be sent: the location is internal, and a
        # request from outside for it would get nginx's 404 instead of the app.
        self._wake_path = f"/.hutch-wake-{secrets.token_hex(16)}"
        self._wake_key = secrets.token_hex(16)

    def route_count(self) -> int:
        return len(self._routes)

    @property
    def _conf(self) -> Path:
        return self.workdir / "nginx.conf"

    async def start(self) -> None:
        nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin")
        if nginx is None:
            raise ProxyError("nginx is not installed (make run installs it)")
        await self._stop_leftover()
        temp = self.workdir / "temp"
        temp.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        with contextlib.suppress(KeyError, PermissionError):
            nobody = pwd.getpwnam("nobody")
            os.chown(temp, nobody.pw_uid, nobody.pw_gid)  # the workers' own scratch space
        listen = f"[{self.listen_host}]:{self.listen_port}" if ":" in self.listen_host else (
            f"{self.listen_host}:{self.listen_port}")  # fmt: skip
        wake_port = await self._serve_wake()
        self._conf.touch(mode=0o600)
        self._conf.chmod(0o600)  # it holds the wake key
        self._conf.write_text(MAIN_CONF.format(
            work=self.workdir, temp=temp, listen=listen, not_found=NOT_FOUND,
            generation_host=GENERATION_HOST, to_sandbox=TO_SANDBOX, wake_path=self._wake_path,
            wake_port=wake_port, wake_key=self._wake_key, wake_timeout=WAKE_TIMEOUT_S))  # fmt: skip
        self._write_routes()
        await self._check(nginx)
        self._proc = await asyncio.create_subprocess_exec(
            nginx, "-c", str(self._conf), "-e", str(self.workdir / "error.log"),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )  # fmt: skip
        if not await self._serving(self._generation):
            await self.stop()
            raise ProxyError(f"nginx did not start: {self._error_tail()}")

    async def _serve_wake(self) -> int:
        """Listen for nginx's wake subrequests on a free loopback port; that port."""
        if self._wake_server is None:
            self._wake_server = await asyncio.start_server(self._answer_wake, "127.0.0.1", 0)
        return int(self._wake_server.sockets[0].getsockname()[1])

    async def _answer_wake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One subrequest of nginx's (HTTP/1.0, no body): wake the sandbox it names."""
        try:
            try:
                async with asyncio.timeout(10):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            fields = {}
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            key = fields.get("x-hutch-wake-key", "").encode()
            if not hmac.compare_digest(key, self._wake_key.encode()):
                return  # not nginx's: closed unanswered
            sandbox_id = fields.get("x-hutch-wake", "")
            refused: str | None = "previews do not wake sandboxes on this server"
            if sandbox_id and self.wake is not None:
                try:
                    refused = await self.wake(sandbox_id)
                except Exception as exc:  # answered, never left hanging: nginx holds a request
                    refused = f"{type(exc).__name__}: {exc}"
            if refused is None:
                writer.write(b"HTTP/1.0 204 No Content\r\nConnection: close\r\n\r\n")
            else:
                why = re.sub(r"[^\x20-\x7e]", " ", refused)[:300]
                writer.write(b"HTTP/1.0 403 Forbidden\r\nX-Hutch-Refused: " + why.encode()
                             + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")  # fmt: skip
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _stop_leftover(self) -> None:
        """An nginx of this instance that outlived its server (kill -9) holds the port: stop
        it, since a new one could not listen."""
        pid = _leftover_master(self.workdir / "nginx.pid", self._conf)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # fast shutdown: its connections are stale anyway
        for _ in range(100):
            if not _alive(pid):
                return
            await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.send_signal(signal.SIGQUIT)  # graceful: let workers finish
            try:
                async with asyncio.timeout(5):
                    await self._proc.wait()
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        self._proc = None
        if self._wake_server is not None:
            self._wake_server.close()
            self._wake_server = None
        await self._client.aclose()

    async def add_route(self, route_id: str, *, host: str, upstream: str) -> None:
        """Proxy requests for ``host`` to ``upstream`` (``ip:port``)."""
        await self._change({route_id: _Route(host=host, upstream=upstream)})

    async def add_port_route(
        self, route_id: str, *, host_pattern: str, address: str, wake: str = ""
    ) -> None:
        """Proxy requests whose host matches ``host_pattern`` (a regexp whose first group is
        the port) to that port of ``address``; asleep if ``wake`` names a sandbox. The
        same route again changes nothing (and reloads nothing)."""
        named = host_pattern.replace("(", "(?<port>", 1)
        route = _Route(host="~" + named, upstream=address, wake=wake)
        if self._routes.get(route_id) != route:
            await self._change({route_id: route})

    async def remove_route(self, route_id: str) -> None:
        """Drop a route; a missing one is fine."""
        if route_id in self._routes:
            await self._change({route_id: None})

    async def set_wake(self, route_ids: Iterable[str], wake: str) -> None:
        """Put the routes among ``route_ids`` to sleep (``wake``: the sandbox their requests
        wake first) or wake them (``""``), in one change; missing ones are skipped."""
        changes: dict[str, _Route | None] = {}
        for route_id in route_ids:
            route = self._routes.get(route_id)
            if route is not None and route.wake != wake:
                changes[route_id] = replace(route, wake=wake)
        if changes:
            await self._change(changes)

    async def _change(self, changes: dict[str, _Route | None]) -> None:
        async with self._lock:
            for route_id, route in changes.items():
                if route is None:
                    self._routes.pop(route_id, None)
                else:
                    self._routes[route_id] = route
            self._generation += 1
            self._write_routes()
            await self._check()
            if self._proc is None or self._proc.returncode is not None:
                raise ProxyError("nginx is not running")
            old_workers = _children(self._proc.pid)
            self._proc.send_signal(signal.SIGHUP)
            # Done once every old worker has stopped accepting (it retitles itself "is
            # shutting down" as it closes its listeners) and a new one answers.
            if not await self._retired(old_workers) or not await self._serving(self._generation):
                raise ProxyError(f"nginx did not take the change: {self._error_tail()}")

    def _write_routes(self) -> None:
        upstreams, names, asleep = [], [], []
        for route_id, route in sorted(self._routes.items()):
            if route.wake:
                asleep.append(f'    "{route.host}" "{route.wake}";')
            if route.host.startswith("~"):
                names.append(f'    "{route.host}" "{route.upstream}:$port";')
                continue
            block = "u_" + re.sub(r"[^A-Za-z0-9_]", "_", route_id)
            upstreams.append(f"upstream {block} {{ server {route.upstream}; keepalive 16; }}")
            names.append(f'    "{route.host}" "{block}";')
        text = "\n".join([
            *upstreams,
            "map $host $preview_upstream {",
            '    default "";',
            *names,
            "}",
            "map $host $preview_wake {",
            '    default "";',
            *asleep,
            "}",
            f'map $host $preview_generation {{ default "{self._generation}"; }}',
        ]) + "\n"  # fmt: skip
        partial = self.workdir / "routes.conf.tmp"
        partial.write_text(text)
        partial.replace(self.workdir / "routes.conf")

    async def _check(self, nginx: str | None = None) -> None:
        program = nginx or shutil.which("nginx", path="/usr/sbin:/usr/bin") or "nginx"
        proc = await asyncio.create_subprocess_exec(
            program, "-t", "-q", "-c", str(self._conf), "-e", str(self.workdir / "error.log"),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await proc.communicate()
        if proc.returncode != 0:
            raise ProxyError(f"nginx refused the routes: {stderr.decode(errors='replace')[-500:]}")

    @staticmethod
    async def _retired(workers: list[int]) -> bool:
        for _ in range(500):
            if all(_retiring(pid) for pid in workers):
                return True
            await asyncio.sleep(0.01)
        return False

    async def _serving(self, generation: int) -> bool:
        """Wait until a worker answers with ``generation`` (new connections only reach
        workers that have the newest routes once the reload is through)."""
        url = f"http://{self.listen_host}:{self.listen_port}/"
        if ":" in self.listen_host:
            url = f"http://[{self.listen_host}]:{self.listen_port}/"
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                answer = await self._client.get(url, headers={"Host": GENERATION_HOST,
                                                              "Connection": "close"})  # fmt: skip
                if answer.text == str(generation):
                    return True
            if self._proc is not None and self._proc.returncode is not None:
                return False
            await asyncio.sleep(0.01)
        return False

    def _error_tail(self) -> str:
        try:
            return (self.workdir / "error.log").read_text(errors="replace")[-600:]
        except OSError:
            return ""


def _leftover_master(pid_file: Path, conf: Path) -> int | None:
    """The pid in ``pid_file`` if it is an nginx running ``conf``, else None."""
    try:
        pid = int(pid_file.read_text())
        # nginx rewrites its title: "nginx: master process /usr/sbin/nginx -c CONF …".
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except (OSError, ValueError):
        return None
    if command.startswith(b"nginx: master") and str(conf).encode() in command:
        return pid
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when hutch dies (kill -9 included)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _retiring(pid: int) -> bool:
    """Whether a worker is gone or no longer accepts new connections."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return not title or b"shutting down" in title
