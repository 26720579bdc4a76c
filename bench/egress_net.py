"""The egress benchmarks' tools (bench/egress.py, bench/egress_scale.py): commands in
network namespaces, iperf3, and the small servers and clients run inside them."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

IPERF_PORT, ECHO_PORT = 5201, 7007
PYTHON = sys.executable

ECHO_SERVER = """\
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(512)
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (b := c.recv(4096)):
        c.sendall(b)
    c.close()
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""

# Run in a network namespace: N connects, then N 1-byte round trips on one connection (us).
LATENCY_CLIENT = """\
import json, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
connects, trips = [], []
for _ in range(n):
    t = time.perf_counter(); c = socket.create_connection((host, port), timeout=5)
    connects.append((time.perf_counter() - t) * 1e6); c.close()
c = socket.create_connection((host, port), timeout=5)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for _ in range(n):
    t = time.perf_counter(); c.sendall(b"x"); c.recv(1)
    trips.append((time.perf_counter() - t) * 1e6)
print(json.dumps({"connect_us": connects, "round_trip_us": trips}))
"""


def sh(*argv: str, netns: str | None = None, timeout: float = 300, stdin: str | None = None) -> str:
    command = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()[-500:]}")
    return done.stdout


def med(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def iperf(target: str, seconds: float, netns: str | None) -> float:
    """Gbit/s received by the server."""
    out = sh("iperf3", "-c", target, "-p", str(IPERF_PORT), "-t", str(seconds), "-J",
             "--connect-timeout", "5000", netns=netns, timeout=seconds + 60)  # fmt: skip
    result = json.loads(out)
    if "error" in result:
        raise RuntimeError(f"iperf3 to {target} in {netns or 'the host'}: {result['error']}")
    return float(result["end"]["sum_received"]["bits_per_second"]) / 1e9


@contextmanager
def spawned(argv: list[str], netns: str) -> Iterator[None]:
    proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(1)
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited at once in {netns}")
        yield
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def namespaces(*names: str) -> Iterator[None]:
    try:
        for name in names:
            sh("ip", "netns", "add", name)
        yield
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
