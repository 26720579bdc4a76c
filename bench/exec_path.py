"""Where an exec round trip's time goes: the same ``true`` timed at each layer, in one run.

    .venv/bin/python bench/exec_path.py [--execs 300] [--profile OUT.prof]
                                        [--out bench/results/exec_path.json]

It starts ``hutch serve`` (runc, the default workers) in a temp home, makes one running
sandbox and times, one after another on the same machine at the same moment:

- ``http``: ``POST /v1/sandboxes/{id}/exec`` of ``true`` on one keep-alive connection
  (what a user meets; bench/api.py's figure);
- ``http_read``: ``GET /v1/sandboxes/{id}`` on the same connection (the worker answers it
  from what it kept: the floor of one HTTP request through a worker);
- ``worker_app``: the worker's own ASGI app (:class:`hutch.roles.control.ControlApp`)
  built in this process and called directly, with no HTTP and no other process: the
  worker's Python (auth, routing, validation, the service, the guest client, the answer);
- ``guest_client``: :class:`hutch.host.guest.GuestClient` ``exec`` straight to the
  sandbox's guest agent, from this process's event loop;
- ``guest_socket``: the same frames over a plain blocking socket (no asyncio);
- ``bare_fork_exec``: ``subprocess.run(["true"])`` on the host (the peer of the goal).

The layers take turns (one exec of each per round), so all meet the same machine. Each
layer's p50 minus the next one's is what that layer adds. With ``--profile`` the
``worker_app`` loop runs again under cProfile and the stats are written there. Prints one
JSON document; no thresholds.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.sandboxes import IMAGES, bare_fork_exec, percentiles  # noqa: E402
from tests.support.server import HutchProcess, remove_instance  # noqa: E402

from hutch.guest.wire import FRAME, JSON  # noqa: E402
from hutch.host.drivers.runc import RuncDriver  # noqa: E402
from hutch.host.guest import ExecExit, ExecRequest, GuestClient  # noqa: E402

ENV = {
    "HUTCH_DRIVER": "runc",
    "HUTCH_IMAGES_DIR": str(IMAGES),
    "HUTCH_LINK_POOL": "10.91.0.0/22",
    "HUTCH_NETWORK_POOL": "10.92.0.0/22",
}


async def timed_async(count: int, once: Any) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await once()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def guest_socket_once(path: str) -> None:
    """One exec of ``true`` over a blocking socket: request, then frames to the exit."""
    request = json.dumps(
        {"op": "exec", "argv": ["true"], "env": {}, "cwd": None, "timeout": 60, "stdin": False}
    ).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(FRAME.pack(JSON, len(request)) + request)
        buffer = b""
        while True:
            while len(buffer) < FRAME.size:
                chunk = sock.recv(65536)
                assert chunk, "the guest agent hung up"
                buffer += chunk
            kind, length = FRAME.unpack(buffer[: FRAME.size])
            while len(buffer) < FRAME.size + length:
                chunk = sock.recv(65536)
                assert chunk, "the guest agent hung up"
                buffer += chunk
            buffer = buffer[FRAME.size + length :]
            if kind == JSON:
                return


class _Asgi:
    """The worker's app called as uvicorn would call it, without HTTP."""

    def __init__(self, app: Any, sandbox: str, key: str) -> None:
        self.app = app
        self.body = json.dumps({"cmd": "true", "args": []}).encode()
        self.scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": f"/v1/sandboxes/{sandbox}/exec",
            "raw_path": f"/v1/sandboxes/{sandbox}/exec".encode(), "query_string": b"",
            "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
            "headers": [(b"host", b"bench"), (b"x-api-key", key.encode()),
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(self.body)).encode())],
        }  # fmt: skip

    async def once(self) -> None:
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": self.body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(dict(self.scope), receive, send)
        assert status == 200, (status, b"".join(chunks))


async def interleaved(
    home: Path, sandbox: str, key: str, count: int, sync_layers: dict[str, Any],
    profile: Path | None,
) -> dict[str, list[float]]:  # fmt: skip
    """Every layer once per round, in turn, so that each meets the same machine (others'
    work comes and goes on a shared one)."""
    os.environ.update({**ENV, "HUTCH_HOME": str(home)})
    from hutch.roles.control import ControlApp
    from hutch.settings import Settings

    control = ControlApp(Settings())
    guest = GuestClient(RuncDriver(home, images=IMAGES).agent_socket(sandbox))

    async def guest_once() -> None:
        last = None
        async for event in guest.exec(ExecRequest(argv=["true"], timeout_s=60)):
            last = event
        assert isinstance(last, ExecExit) and last.exit_code == 0

    results: dict[str, list[float]] = {name: [] for name in [*sync_layers, "worker_app",
                                                               "guest_client"]}  # fmt: skip
    async with control.local.router.lifespan_context(control.local):
        call = _Asgi(control, sandbox, key)
        layers: dict[str, Any] = {"worker_app": call.once, "guest_client": guest_once}
        for round_ in range(count + 20):
            for name, once in sync_layers.items():
                started = time.perf_counter()
                once()
                if round_ >= 20:
                    results[name].append((time.perf_counter() - started) * 1000)
            for name, async_once in layers.items():
                started = time.perf_counter()
                await async_once()
                if round_ >= 20:
                    results[name].append((time.perf_counter() - started) * 1000)
        if profile is not None:
            profiler = cProfile.Profile()
            profiler.enable()
            await timed_async(count, call.once)
            profiler.disable()
            profiler.dump_stats(str(profile))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--execs", type=int, default=300)
    parser.add_argument("--workers", type=int, default=0, help="0: hutch serve's default")
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "exec_path.json")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-exec-")) / "home"
    extra = ["--workers", str(args.workers)] if args.workers else []
    load_at_start = os.getloadavg()
    server = HutchProcess(home, *extra, env=ENV).wait_ready(180)
    assert server.admin_key
    samples: dict[str, list[float]] = {}
    try:
        with httpx.Client(
            base_url=server.url, headers={"X-Api-Key": server.admin_key}, timeout=60
        ) as api:
            created = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
            created.raise_for_status()
            sandbox = created.json()["data"]["id"]

            def http_once() -> None:
                answer = api.post(f"/v1/sandboxes/{sandbox}/exec", json={"cmd": "true"})
                assert answer.json()["data"]["result"]["exit_code"] == 0, answer.text

            def read_once() -> None:
                api.get(f"/v1/sandboxes/{sandbox}").raise_for_status()

            path = str(RuncDriver(home, images=IMAGES).agent_socket(sandbox))
            sync_layers = {
                "http": http_once,
                "http_read": read_once,
                "guest_socket": lambda: guest_socket_once(path),
                "bare_fork_exec": lambda: bare_fork_exec(1),
            }
            samples = asyncio.run(
                interleaved(home, sandbox, server.admin_key, args.execs, sync_layers, args.profile)
            )
            api.delete(f"/v1/sandboxes/{sandbox}")
    finally:
        server.stop()
        remove_instance(home)
    fork = statistics.median(samples["bare_fork_exec"])
    result = {
        "benchmark": "exec_path",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": os.cpu_count(),
        "load_at_start": [round(x, 2) for x in load_at_start],
        "load_at_end": [round(x, 2) for x in os.getloadavg()],
        "ms": {name: percentiles(values) for name, values in samples.items()},
        "p50_ratio_to_bare_fork_exec": {
            name: round(statistics.median(values) / fork, 2) for name, values in samples.items()
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
