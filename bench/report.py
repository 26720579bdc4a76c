"""Every benchmark, then one report: ``bench/results/latest.json`` and a chart per benchmark.

    .venv/bin/python bench/report.py [--charts-only] [--load-seconds 180] [--capacity-max 1000]

Runs bench/sandboxes.py, bench/proxy.py, bench/load.py, bench/capacity.py, bench/tunnel.py,
bench/dns.py, bench/egress.py, bench/images.py, bench/templates.py and bench/warm.py one
after the other (each starts its own server and its peers: bare runc, bare fork/exec,
nginx, a direct socket, the upstream resolver, the host itself, a plain copy, devbox:1,
a cold create), each writing
``bench/results/<name>.json``; then gathers them into ``latest.json`` with the machine and
the ratios to each peer, and draws ``bench/results/<name>.png``. With ``--charts-only`` it
only gathers and draws from the results already there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"


def run_all(load_seconds: float, capacity_max: int) -> None:
    python = sys.executable
    runs = [
        [python, str(BENCH / "sandboxes.py")],
        [python, str(BENCH / "proxy.py")],
        [python, str(BENCH / "load.py"), "--duration", str(load_seconds)],
        [python, str(BENCH / "capacity.py"), "--max", str(capacity_max)],
        [python, str(BENCH / "tunnel.py")],
        [python, str(BENCH / "dns.py")],
        [python, str(BENCH / "egress.py")],
        [python, str(BENCH / "images.py")],
        [python, str(BENCH / "templates.py")],
        [python, str(BENCH / "warm.py")],
        [python, str(BENCH / "api.py")],
    ]
    for command in runs:
        print("running", " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sandboxes := results.get("sandboxes"):
        out["create_to_first_exec_p50_vs_bare_runc_run"] = sandboxes["create_to_first_exec_ms"][
            "ratio_p50_sequential_to_bare_runc"
        ]
        out["exec_round_trip_p50_vs_bare_fork_exec"] = sandboxes["exec_round_trip_ms"][
            "ratio_p50_api_to_fork_exec"
        ]
        if concurrent := sandboxes.get("concurrent_creates_ms"):
            out["ten_concurrent_creates_p50_vs_ten_bare_runc_run_d"] = concurrent[
                "ratio_p50_create_to_bare_runc_run_detached"
            ]
    if proxy := results.get("proxy"):
        out["proxy_throughput_vs_nginx"] = proxy.get("hutch_to_nginx_throughput")
    if load_ := results.get("load"):
        out["exec_p99_under_load_vs_bare_fork_exec_under_load"] = load_.get(
            "ratio_exec_p99_to_bare_fork_exec_p99"
        )
        out["create_speed_under_load_vs_bare_runc_run_d_under_load"] = load_.get(
            "create_speed_p50_vs_bare_runc_run_detached"
        )
    if capacity := results.get("capacity"):
        out["create_rate_vs_bare_runc"] = capacity["ratio_create_rate_to_bare_runc"]
        out["idle_memory_vs_bare_runc_container"] = capacity["ratio_memory_to_bare_runc"]
    if tunnel := results.get("tunnel"):
        out["tunnel_echo_throughput_vs_direct_in_netns"] = tunnel["echo_mib_per_s"][
            "ratio_best_tunnel_to_direct"
        ]
    if dns := results.get("dns"):
        out["dns_lookup_p50_open_sandbox_vs_host_to_upstream"] = dns["ratios_p50_to_direct"]["open"]
        out["dns_lookup_p50_restricted_sandbox_vs_host_to_upstream"] = dns["ratios_p50_to_direct"][
            "restricted"
        ]
    if egress := results.get("egress"):
        out["egress_throughput_sandbox_vs_host"] = egress["open"]["throughput"][
            "ratio_sandbox_to_host"
        ]
        out["egress_throughput_50_rules_vs_host"] = egress["rules_50"]["throughput"][
            "ratio_sandbox_to_host"
        ]
        out["egress_added_round_trip_p50_us"] = egress["open"]["latency"]["round_trip_us"][
            "added_p50_us"
        ]
        out["egress_first_connect_after_dns_vs_second"] = egress["dns_answer_to_first_syn"][
            "ratio_first_to_second_p50"
        ]
        out["egress_create_to_first_exec_added_p50_ms"] = egress["create_to_first_exec"][
            "added_p50_ms"
        ]
    if images := results.get("images"):
        out["disk_per_sandbox_from_an_imported_image_vs_a_copy_of_it"] = images["disk"][
            "ratio_per_sandbox_to_image_copy"
        ]
    if templates := results.get("templates"):
        out["create_to_first_exec_p50_template_vs_devbox"] = templates["create_to_first_exec"][
            "template_vs_devbox"
        ]
        out["five_step_template_build_vs_by_hand"] = templates["build_vs_by_hand"]["ratio"]
    if api := results.get("api"):
        out["exec_round_trip_p50_by_workers_vs_bare_fork_exec"] = api.get(
            "exec_p50_ratio_to_fork_exec"
        )
        out["reads_by_workers_vs_one_process"] = api.get("reads_ratio_to_one_process")
    if warm := results.get("warm"):
        create = warm["create_to_first_exec_ms"]
        out["create_to_first_exec_p50_warm_pool_vs_bare_runc_run"] = create[
            "ratio_p50_warm_to_bare_runc"
        ]
        out["create_to_first_exec_p50_cold_vs_bare_runc_run"] = create[
            "ratio_p50_cold_to_bare_runc"
        ]
    return out


def chart_egress(data: dict[str, Any], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    runs = {"open": data["open"]["throughput"], "50 rules": data["rules_50"]["throughput"]}
    labels = [f"{who}, {name}" for name in runs for who in ("host", "sandbox")]
    values = [max(run[f"{who}_gbit_s"]) for run in runs.values() for who in ("host", "sandbox")]
    left.bar(labels, values)
    left.set_ylabel("Gbit/s (best of rounds)")
    left.set_title("iperf3 to the upstream namespace")
    left.tick_params(axis="x", labelrotation=20)
    create = data["create_to_first_exec"]
    right.bar(["egress on", "egress off"],
              [create["egress_on_ms"]["p50"], create["egress_off_ms"]["p50"]])  # fmt: skip
    right.set_ylabel("ms (p50)")
    right.set_title("Create to first exec")
    _save(fig, path)


def chart_sandboxes(data: dict[str, Any], path: Path) -> None:
    create, execs = data["create_to_first_exec_ms"], data["exec_round_trip_ms"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    labels = ["hutch create→exec", "bare runc run"]
    for offset, stat in ((-0.2, "p50"), (0.2, "p95")):
        left.bar(
            [i + offset for i in range(2)],
            [create["sequential"][stat], create["bare_runc_run_true"][stat]],
            0.4,
            label=stat,
        )
        right.bar(
            [i + offset for i in range(2)],
            [execs["api"][stat], execs["bare_fork_exec"][stat]],
            0.4,
            label=stat,
        )
    left.set_xticks(range(2), labels)
    right.set_xticks(range(2), ["hutch exec (API)", "bare fork/exec"])
    left.set_ylabel("ms")
    left.set_title("Create to first exec")
    right.set_title("Exec round trip")
    left.legend()
    _save(fig, path)


def chart_proxy(data: dict[str, Any], path: Path) -> None:
    runs = data["runs"]
    names = list(runs)
    best = [max(r["requests_per_s"] for r in runs[name]) for name in names]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(names, best)
    ax.set_ylabel("requests/s (best of rounds)")
    ax.set_title("Proxy throughput, same upstream")
    _save(fig, path)


def chart_load(data: dict[str, Any], path: Path) -> None:
    ops = data["operations"]
    names = list(ops)
    fig, ax = plt.subplots(figsize=(8, 4))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [ops[n]["p50_ms"] for n in names], 0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], [ops[n]["p99_ms"] for n in names], 0.4, label="p99")
    ax.set_xticks(list(xs), names)
    ax.set_yscale("log")
    ax.set_ylabel("ms (log)")
    ax.set_title(
        f"{data['clients']} clients, {data['requests_per_s']} requests/s; "
        f"bare fork/exec p99 {data['bare_fork_exec_under_load']['p99_ms']} ms"
    )
    ax.legend()
    _save(fig, path)


def chart_capacity(data: dict[str, Any], path: Path) -> None:
    samples = data["hutch"]["samples"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(
        [s["sandboxes"] for s in samples],
        [s["mem_available_mib"] / 1024 for s in samples],
        marker="o",
    )
    ax.set_xlabel("idle sandboxes running")
    ax.set_ylabel("host MemAvailable (GiB)")
    ax.set_title(f"{data['hutch']['held']} held, stopped by {data['hutch']['stopped_by']}")
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def chart_tunnel(data: dict[str, Any], path: Path) -> None:
    echo = data["echo_mib_per_s"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(["through the tunnel", "direct, in the netns"],
           [max(echo["tunnel"]), max(echo["direct_in_netns"])])  # fmt: skip
    ax.set_ylabel("MiB/s each way (best of rounds)")
    ax.set_title("TCP echo in a sandbox")
    _save(fig, path)


def chart_dns(data: dict[str, Any], path: Path) -> None:
    look = data["lookup"]
    labels = ["host → upstream", "open sandbox", "restricted sandbox\n(kernel update)"]
    keys = ["host_to_upstream_directly", "open_sandbox_through_hutch",
            "restricted_sandbox_through_hutch_with_kernel_update"]  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(labels, [look[key]["p50_ms"] for key in keys])
    ax.set_ylabel("A lookup, p50 (ms)")
    ax.set_title("DNS lookups through hutch's server")
    _save(fig, path)


def chart_images(data: dict[str, Any], path: Path) -> None:
    snaps = data["snapshot"]
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [name.replace("_", " ") for name in snaps]
    ax.bar([f"{label}\nfrozen" for label in labels], [s["frozen_ms"] for s in snaps.values()])
    ax.bar([f"{label}\nplain cp" for label in labels],
           [s["peer_plain_cp_of_the_layer_ms"] for s in snaps.values()])  # fmt: skip
    ax.set_ylabel("ms")
    ax.set_title("Snapshot: time a sandbox is frozen vs a plain copy of its layer")
    ax.tick_params(axis="x", labelsize=7)
    _save(fig, path)


def chart_templates(data: dict[str, Any], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    start = data["create_to_first_exec"]
    left.bar(["devbox:1", "template"], [start["devbox_p50_ms"], start["template_p50_ms"]])
    left.set_ylabel("ms (p50)")
    left.set_title("create -> first exec")
    build = data["build_vs_by_hand"]
    right.bar(["5-step build", "by hand"], [build["five_step_build_s_p50"],
                                            build["by_hand_s_p50"]])  # fmt: skip
    right.set_ylabel("s (p50)")
    right.set_title("no cache vs the same commands by hand")
    _save(fig, path)


def chart_warm(data: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    create = data["create_to_first_exec_ms"]
    names = {"warm pool": "warm", "cold": "cold", "bare runc run": "bare_runc_run_true"}
    ax.bar(list(names), [create[key]["p50"] for key in names.values()])
    ax.set_ylabel("ms (p50)")
    ax.set_title("create -> first exec (same run)")
    _save(fig, path)


def chart_api(data: dict[str, Any], path: Path) -> None:
    fig, (by_workers, by_clients) = plt.subplots(1, 2, figsize=(11, 4))
    runs = [run for run in data["runs"] if run.get("get_sandbox_by_clients")]
    workers = [run for run in runs if run["workers"]]
    peer = next((run for run in runs if not run["workers"]), None)
    clients = sorted({int(n) for run in runs for n in run["get_sandbox_by_clients"]})
    for n in clients:
        by_workers.plot(
            [run["workers"] for run in workers],
            [run["get_sandbox_by_clients"][str(n)]["requests_per_s"] for run in workers],
            marker="o",
            label=f"{n} clients",
        )
        if peer is not None:
            by_workers.axhline(
                peer["get_sandbox_by_clients"][str(n)]["requests_per_s"], linestyle=":",
                color=by_workers.lines[-1].get_color(),
            )  # fmt: skip
    by_workers.set_xlabel("control workers (dotted: one process)")
    by_workers.set_ylabel("GET /v1/sandboxes/{id}, req/s")
    by_workers.set_xticks([run["workers"] for run in workers])
    by_workers.legend()
    for run in runs:
        by_clients.plot(
            clients,
            [run["get_sandbox_by_clients"][str(n)]["requests_per_s"] for n in clients],
            marker="o",
            label=f"{run['workers']} workers" if run["workers"] else "one process",
        )
    by_clients.set_xscale("log")
    by_clients.set_xticks(clients, [str(n) for n in clients])
    by_clients.set_xlabel("concurrent clients (wrk connections)")
    by_clients.legend()
    start, end = data["load_at_start"][0], data["load"][0]
    fig.suptitle(f"API reads, 2 cores shared with wrk and other work (load {start:.1f}-{end:.1f})")
    _save(fig, path)


CHARTS = {
    "api": chart_api,
    "sandboxes": chart_sandboxes,
    "proxy": chart_proxy,
    "load": chart_load,
    "capacity": chart_capacity,
    "tunnel": chart_tunnel,
    "dns": chart_dns,
    "egress": chart_egress,
    "images": chart_images,
    "templates": chart_templates,
    "warm": chart_warm,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--charts-only", action="store_true")
    parser.add_argument("--load-seconds", type=float, default=180)
    parser.add_argument("--capacity-max", type=int, default=1000)
    options = parser.parse_args()
    if not options.charts_only:
        run_all(options.load_seconds, options.capacity_max)
    results = {name: data for name in CHARTS if (data := load(name)) is not None}
    for name, data in results.items():
        CHARTS[name](data, RESULTS / f"{name}.png")
    latest = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "ratios": ratios(results),
        "results": results,
    }
    (RESULTS / "latest.json").write_text(json.dumps(latest, indent=2) + "\n")
    print(json.dumps(latest["ratios"], indent=2))


if __name__ == "__main__":
    main()
