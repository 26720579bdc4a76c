"""Tunnels and sshd, with their floors measured in the same run.

    .venv/bin/python bench/tunnel.py [--quick] [--out bench/results/tunnel.json]

1. Throughput of a TCP echo inside a sandbox (64 MiB each way at once) through
   ``POST …/tunnel/{port}`` (the API's upgrade and splice), next to the same echo reached
   directly by a socket the host makes inside the sandbox's network namespace (the floor:
   the same path without the API).
2. Opening a tunnel (request to ``101``) next to a direct connect.
3. sshd: the first tunnel to port 22 (host keys made, sshd started) and later ones; and
   what an idle sshd holds in memory (``smaps_rollup`` of each, in 10 sandboxes), the
   figure behind starting sshd on demand rather than at boot.

It starts its own ``hutch serve`` (runc driver) in a temp home, destroys everything it
made, and prints one JSON document. No thresholds: read the ratios, not single numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.server import HutchProcess, remove_instance  # noqa: E402

from hutch.host.drivers.runc import instance_tag  # noqa: E402
from hutch.host.link import netns_name  # noqa: E402
from hutch.host.ports import connect_port  # noqa: E402

IMAGES = Path(os.environ.get("HUTCH_IMAGES_DIR", "/var/cache/hutch-test-images"))
ECHO = """
import socket, threading
server = socket.create_server(("127.0.0.1", 7007), backlog=128)
def serve(conn):
    while data := conn.recv(262144):
        conn.sendall(data)
    conn.close()
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def tunnel(url: str, key: str, sandbox_id: str, port: int) -> socket.socket:
    host, port_text = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port_text)))
    sock.sendall(
        f"POST /v1/sandboxes/{sandbox_id}/tunnel/{port} HTTP/1.1\r\nHost: {host}\r\n"
        f"X-Api-Key: {key}\r\nConnection: Upgrade\r\nUpgrade: tcp-tunnel\r\n"
        "Content-Length: 0\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: nothing past the answer is consumed
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def direct(home: Path, sandbox_id: str, port: int) -> socket.socket:
    netns = Path("/run/netns") / netns_name(instance_tag(home), sandbox_id)
    sock = asyncio.run(connect_port(netns, ["127.0.0.1"], port))
    sock.setblocking(True)
    return sock


def echo_mib_per_s(sock: socket.socket, size: int) -> float:
    payload = os.urandom(1 << 20)
    received = 0

    def reader() -> None:
        nonlocal received
        while data := sock.recv(1 << 20):
            received += len(data)

    started = time.perf_counter()
    thread = threading.Thread(target=reader)
    thread.start()
    for _ in range(size >> 20):
        sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    thread.join()
    elapsed = time.perf_counter() - started
    sock.close()
    assert received == size, (received, size)
    return round(size / (1 << 20) / elapsed, 1)


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def sh(api: httpx.Client, sandbox_id: str, script: str) -> str:
    answer = api.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": script})
    answer.raise_for_status()
    return str(answer.json()["data"]["result"]["stdout"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and smaller samples")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "tunnel.json")
    args = parser.parse_args()
    size, rounds, opens, boxes = ((16 << 20), 2, 20, 3) if args.quick else ((64 << 20), 3, 100, 10)

    home = Path(tempfile.mkdtemp(prefix="hutch-bench-tunnel-")) / "home"
    server = HutchProcess(home, env={"HUTCH_DRIVER": "runc", "HUTCH_IMAGES_DIR": str(IMAGES),
                                     "HUTCH_LINK_POOL": "10.99.0.0/16"}).wait_ready()  # fmt: skip
    assert server.admin_key
    key = server.admin_key
    report: dict[str, Any] = {"benchmark": "tunnel", "echo_bytes": size}
    api = server.client(key)
    api.timeout = httpx.Timeout(120)
    try:
        made = [api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"}).json()["data"]
                for _ in range(boxes)]  # fmt: skip
        box = made[0]["id"]
        api.post(f"/v1/sandboxes/{box}/processes", json={"cmd": "python3", "args": ["-c", ECHO]})
        while "up" not in sh(api, box, "grep -q ':1B5F 00000000:0000 0A' /proc/net/tcp && echo up"):
            time.sleep(0.1)

        through = [echo_mib_per_s(tunnel(server.url, key, box, 7007), size) for _ in range(rounds)]
        floor = [echo_mib_per_s(direct(home, box, 7007), size) for _ in range(rounds)]
        report["echo_mib_per_s"] = {"tunnel": through, "direct_in_netns": floor,
                                    "ratio_best_tunnel_to_direct":
                                    round(max(through) / max(floor), 2)}  # fmt: skip

        open_times, connect_times = [], []
        for _ in range(opens):
            started = time.perf_counter()
            tunnel(server.url, key, box, 7007).close()
            open_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            direct(home, box, 7007).close()
            connect_times.append(time.perf_counter() - started)
        report["open_ms_p50"] = {"tunnel_to_101": median_ms(open_times),
                                 "direct_connect_in_netns": median_ms(connect_times)}  # fmt: skip

        first, later = [], []
        for sandbox in made:
            started = time.perf_counter()
            tunnel(server.url, key, sandbox["id"], 22).close()
            first.append(time.perf_counter() - started)
            started = time.perf_counter()
            tunnel(server.url, key, sandbox["id"], 22).close()
            later.append(time.perf_counter() - started)
        report["ssh_tunnel_open_ms_p50"] = {"first_starts_sshd": median_ms(first),
                                            "sshd_running": median_ms(later)}  # fmt: skip

        fields = ("Rss", "Pss", "Private_Dirty", "Anonymous")
        per_sshd: dict[str, list[int]] = {field: [] for field in fields}
        time.sleep(1)  # let the closed sessions' children go
        for sandbox in made:
            rollup = sh(api, sandbox["id"], "cat /proc/$(pgrep -o -x sshd)/smaps_rollup")
            for line in rollup.splitlines():
                name, _, rest = line.partition(":")
                if name in per_sshd:
                    per_sshd[name].append(int(rest.split()[0]))
        report["idle_sshd_kib_mean"] = {
            field: round(statistics.fmean(values)) for field, values in per_sshd.items() if values
        }
        report["sandboxes_measured"] = len(made)
        for sandbox in made:
            api.delete(f"/v1/sandboxes/{sandbox['id']}")
    finally:
        api.close()
        server.stop()
        remove_instance(home)
    document = json.dumps(report, indent=2)
    print(document)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(document + "\n")


if __name__ == "__main__":
    main()
