"""The preview proxy's data path, next to nginx proxying to the same upstream, in one run.

    .venv/bin/python bench/proxy.py [--quick] [--out bench/results/proxy.json]

The upstream is an nginx on loopback answering a small static page. In front of it, in
turn: nothing (the floor), a plain nginx reverse proxy (Debian's, a static upstream with
keepalive: the peer), and hutch's own proxy (hutch.proxy.nginx) with a preview route set
at run time exactly as hutch sets one. wrk (Debian) drives each with the same connections
and threads; we report requests/s, latency p50/p99 and the latency each adds over the
floor, and the ratio of hutch's throughput to the peer's (the goal is at least 0.7).
Only loopback is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from hutch.proxy.nginx import NginxProxy, free_port  # noqa: E402

PAGE = b"<html><body>" + b"x" * 1024 + b"</body></html>\n"
HOST = "8080-benchmarkpreviewtoken000000.localhost"

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {work}/nginx-{name}.pid;
error_log {work}/nginx-{name}.err warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/body-{name};
    proxy_temp_path {work}/proxy-{name};
    fastcgi_temp_path {work}/fastcgi-{name};
    uwsgi_temp_path {work}/uwsgi-{name};
    scgi_temp_path {work}/scgi-{name};
    upstream backend {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        {body}
    }}
}}
"""


def nginx(
    work: Path, name: str, port: int, body: str, upstream: int = 0
) -> subprocess.Popen[bytes]:
    conf = work / f"nginx-{name}.conf"
    conf.write_text(NGINX_CONF.format(work=work, name=name, port=port, body=body,
                                      upstream=upstream or port))  # fmt: skip
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-e", str(work / f"nginx-{name}.err")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for(port)
    return proc


def wait_for(port: int) -> None:
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def wrk(port: int, *, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"Host: {HOST}",
         f"http://127.0.0.1:{port}/index.html"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out:
        raise RuntimeError(f"errors under load:\n{out}")

    def latency(label: str) -> float:
        match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        assert match, out
        value, unit = float(match.group(1)), match.group(2)
        return round(value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 3)

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rps, out
    return {"requests_per_s": float(rps.group(1)), "p50_ms": latency("50"), "p99_ms": latency("99")}


async def hutch_in_front(work: Path, upstream: int) -> NginxProxy:
    proxy = NginxProxy(listen_host="127.0.0.1", listen_port=0, workdir=work / "hutch")
    await proxy.start()
    await proxy.add_route("preview-bench", host=HOST, upstream=f"127.0.0.1:{upstream}")
    return proxy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per run instead of 10")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "proxy.json")
    args = parser.parse_args()
    seconds, connections, rounds = (3, 32, 1) if args.quick else (10, 32, 3)
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: make bench installs it")

    work = Path(tempfile.mkdtemp(prefix="hutch-bench-proxy-"))
    work.chmod(0o755)  # nginx's workers run as nobody
    (work / "www").mkdir()
    (work / "www" / "index.html").write_bytes(PAGE)
    upstream_port, nginx_port = free_port(), free_port()
    processes = [
        nginx(work, "upstream", upstream_port, f"root {work / 'www'};"),
        nginx(work, "proxy", nginx_port, "location / { proxy_pass http://backend; "
              "proxy_http_version 1.1; proxy_set_header Connection \"\"; "
              "proxy_set_header Host $host; }", upstream=upstream_port),
    ]  # fmt: skip
    loop = asyncio.new_event_loop()
    hutch = loop.run_until_complete(hutch_in_front(work, upstream_port))
    try:
        targets = {"direct": upstream_port, "nginx": nginx_port, "hutch": hutch.listen_port}
        for port in targets.values():
            wrk(port, seconds=1, connections=connections)  # warm-up
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        for _ in range(rounds):  # interleaved, so drift in the machine hits all alike
            for name, port in targets.items():
                runs[name].append(wrk(port, seconds=seconds, connections=connections))
    finally:
        loop.run_until_complete(hutch.stop())
        loop.close()
        for proc in processes:
            proc.terminate()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)

    def best(name: str) -> dict[str, float]:
        return max(runs[name], key=lambda run: run["requests_per_s"])

    floor = best("direct")
    report: dict[str, Any] = {
        "benchmark": "proxy",
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "load": {
            "tool": "wrk",
            "threads": 2,
            "connections": connections,
            "seconds": seconds,
            "rounds": rounds,
            "page_bytes": len(PAGE),
        },
        "runs": runs,
    }
    for name in ("nginx", "hutch"):
        result = best(name)
        report[name] = {
            **result,
            "added_p50_ms": round(result["p50_ms"] - floor["p50_ms"], 3),
            "added_p99_ms": round(result["p99_ms"] - floor["p99_ms"], 3),
        }
    report["direct"] = floor
    report["hutch_to_nginx_throughput"] = round(
        report["hutch"]["requests_per_s"] / report["nginx"]["requests_per_s"], 2
    )
    document = json.dumps(report, indent=2)
    print(document)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(document + "\n")


if __name__ == "__main__":
    main()
