"""Resume of a hibernated gvisor sandbox through two codes side by side
(``bench/gvisor_exec_ab.py``'s way): ``hutch serve`` of another checkout and of this one,
both up at once, each with one idle ``s-1vcpu-256mb`` gvisor sandbox.

    git worktree add --detach /tmp/hutch-before <commit>
    .venv/bin/python bench/gvisor_resume_ab.py --before-src /tmp/hutch-before/src [--rounds 12]

Each round pauses (hibernates) both sandboxes, lets their Sentries exit (2 s), then
resumes one and the other, the order alternating: the two resumes of a round meet the
same load. Reported: each code's resume (p50), the ratio of each round's pair, and each
server's driver steps (``steps wake`` lines, :func:`gvisor.steps_breakdown`): what the
driver took of each resume, so what is left is the API's and the store's. Prints one JSON
document; no thresholds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from gvisor import steps_breakdown  # noqa: E402
from gvisor_floors import percentiles  # noqa: E402
from tests.support.server import HutchProcess, remove_instance  # noqa: E402

IMAGES = Path(os.environ.get("HUTCH_IMAGES_DIR", "/var/cache/hutch-test-images"))


def start(src: str | None, link_pool: str, network_pool: str) -> HutchProcess:
    env = {"HUTCH_DRIVER": "runc", "HUTCH_IMAGES_DIR": str(IMAGES),
           "HUTCH_LINK_POOL": link_pool, "HUTCH_NETWORK_POOL": network_pool}  # fmt: skip
    if src is not None:  # the child imports that checkout's hutch first
        env["PYTHONPATH"] = src
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-gvres-")) / "home"
    return HutchProcess(home, "--log-level", "info", env=env).wait_ready(180)


def ok(answer: httpx.Response) -> dict[str, object]:
    answer.raise_for_status()
    data: dict[str, object] = answer.json()["data"]
    return data


def wakes(server: HutchProcess) -> list[str]:
    return [line for line in server.stderr_lines if " steps wake " in line]


def driver_total(server: HutchProcess, seen: int) -> float:
    """The driver's total of the server's wake after the ``seen`` first (its ``steps
    wake`` line, logged before the resume is answered; its reader may lag a moment)."""
    for _ in range(500):
        lines = wakes(server)
        if len(lines) > seen:
            return float(lines[seen].rpartition("total=")[2].split()[0])
        time.sleep(0.01)
    raise AssertionError("no new steps wake line in the server's log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before-src", required=True, help="the other checkout's src/")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--out", type=Path,
                        default=REPO / "bench" / "results" / "gvisor_resume_ab.json")  # fmt: skip
    args = parser.parse_args()
    servers = {
        "before": start(args.before_src, "10.221.0.0/22", "10.222.0.0/22"),
        "after": start(None, "10.223.0.0/22", "10.224.0.0/22"),
    }
    load_at_start = os.getloadavg()
    samples: dict[str, list[float]] = {name: [] for name in servers}
    outside: dict[str, list[float]] = {name: [] for name in servers}
    ratios, outside_ratios = [], []
    try:
        clients, boxes = {}, {}
        for name, server in servers.items():
            client = httpx.Client(
                base_url=server.url, headers={"X-Api-Key": server.admin_key or ""}, timeout=60
            )
            box = ok(client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb",
                                                        "runtime": "gvisor"}))  # fmt: skip
            boxes[name], clients[name] = str(box["id"]), client
            ok(client.post(f"/v1/sandboxes/{boxes[name]}/exec", json={"cmd": "true"}))
        for round_ in range(args.rounds + 1):  # the first warms up
            order = list(clients.items())
            if round_ % 2:
                order.reverse()
            for name, client in order:
                assert ok(client.post(f"/v1/sandboxes/{boxes[name]}/pause"))["hibernated"]
            time.sleep(2)  # the hibernated Sentries exit (1-2 s on ptrace)
            took, beside = {}, {}
            for name, client in order:
                seen = len(wakes(servers[name]))
                started = time.perf_counter()
                ok(client.post(f"/v1/sandboxes/{boxes[name]}/resume"))
                took[name] = (time.perf_counter() - started) * 1000
                beside[name] = took[name] - driver_total(servers[name], seen)
            if round_:
                for name, ms in took.items():
                    samples[name].append(ms)
                    outside[name].append(beside[name])
                ratios.append(took["after"] / took["before"])
                outside_ratios.append(beside["after"] / beside["before"])
        for name, client in clients.items():
            client.delete(f"/v1/sandboxes/{boxes[name]}")
            client.close()
    finally:
        for server in servers.values():
            server.stop()
            remove_instance(server.home)
    result = {
        "benchmark": "gvisor_resume_ab",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "before_src": args.before_src,
        "platform": os.environ.get("HUTCH_GVISOR_PLATFORM", "ptrace"),
        "load": [round(load_at_start[0], 2), round(os.getloadavg()[0], 2)],
        "resume_ms": {name: percentiles(values) for name, values in samples.items()},
        "after_to_before_p50": round(statistics.median(ratios), 3),
        "ratios": [round(r, 2) for r in ratios],
        # Each resume less its driver's own total (its last `steps wake` line): the API's,
        # the store's and the core's part, what a slow restore does not hide.
        "outside_driver_ms": {name: percentiles(values) for name, values in outside.items()},
        "outside_after_to_before_p50": round(statistics.median(outside_ratios), 3),
        "outside_ratios": [round(r, 2) for r in outside_ratios],
        "driver_steps": {
            name: steps_breakdown(server.stderr_lines).get("wake", {})
            for name, server in servers.items()
        },
        "probe_lines": {
            name: [line.split("PROBE ", 1)[1] for line in server.stderr_lines if "PROBE " in line]
            for name, server in servers.items()
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
