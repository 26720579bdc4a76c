"""Computer-use benchmarks (issue 21), with their floors measured in the same run.

    .venv/bin/python bench/computer.py [--quick] [--out bench/results/computer.json]

1. create -> ``/computer/screen`` answering 200 (the desktop is up), on runc; next to
   create -> first exec of a devbox:1 sandbox (the floor: a sandbox without a desktop).
2. screenshot p50 at 1280x800 (hutch reads Xvfb's framebuffer file and encodes the PNG on
   the host) and its bytes; next to ``scrot`` run in the sandbox and its PNG fetched
   (what hutch would do with a screenshot program), and to an exec of ``true`` (the
   floor of any round trip into the sandbox).
3. click -> the next screenshot that shows the change: a page that turns from white to
   black (and back) at each click; the time from sending the click to the first
   screenshot with the new colour.
4. memory of an idle desktop sandbox (its cgroup's charge, the desktop up, no browser),
   next to an idle devbox:1 sandbox.
5. create -> ``/screen`` from a warm pool entry of desktop:1 (``HUTCH_WARM_POOL``), on runc
   and on gvisor, next to a cold create of the same runtime in the same server; and
   gvisor's phases.
6. the same as 2-4 on a gvisor desktop (its memory: the cgroup's charge and the RSS of
   its Sentry and gofer), next to the runc figures of the same run.
7. noVNC: ``connect`` answering (x11vnc and websockify start with the first link) and the
   first VNC greeting through hutch's proxy (websockify checks the token, x11vnc greets),
   then a second greeting, on runc and on gvisor.

Step 1 also reports where the time went (the supervisor's status says when it started
and when the X server and the window manager were up) and, as a peer, a bare ``Xvfb``
started in the same sandbox.

Needs ``desktop:1`` built (``hutch images build desktop:1``, into ``HUTCH_IMAGES_DIR``). It
starts its own ``hutch serve`` (runc), destroys everything it made, prints one JSON
document. No thresholds: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.gvisor_memory import runtime_rss_mib  # noqa: E402
from bench.sandboxes import cgroup_memory, percentiles  # noqa: E402
from tests.e2e.test_sandboxes_runc import new_pool  # noqa: E402
from tests.support.server import HutchProcess, remove_instance, run_cli  # noqa: E402

IMAGES = Path(os.environ.get("HUTCH_IMAGES_DIR", "/var/cache/hutch-test-images"))
SHAPE = "s-2vcpu-2gb"
PAGE = """<!doctype html><title>bench</title>
<style>body { margin: 0 } #b { position: fixed; left: 0; top: 0; width: 100%; height: 100%;
background: #fff; border: 0 }</style>
<button id="b" onclick="window.n = (window.n || 0) + 1;
this.style.background = window.n % 2 ? '#000' : '#fff'"></button>"""


def ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def wait_for(check: Any, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what or check}")
        time.sleep(0.02)


def page_pixel(png: bytes) -> tuple[int, int, int]:
    """A pixel of the page, away from the pointer (Xvfb draws it into its framebuffer)."""
    width, height = struct.unpack(">II", png[16:24])
    at, idat = 8, b""
    while at < len(png):
        length, kind = struct.unpack(">I4s", png[at : at + 8])
        if kind == b"IDAT":
            idat += png[at + 8 : at + 8 + length]
        at += 12 + length
    raw = zlib.decompress(idat)
    row = raw[(height * 3 // 4) * (width * 3 + 1) + 1 :]
    r, g, b = row[(width // 4) * 3 : (width // 4) * 3 + 3]
    return r, g, b


def create_to_screen(
    api: httpx.Client,
    phases: dict[str, list[float]],
    runtime: str = "runc",
    shape: str = SHAPE,
    ingress: bool = False,
) -> tuple[float, str]:
    """Create -> /screen answering 200; ``phases`` gets where the time went, from the
    supervisor's status (wall-clock times, as the host's: runc and gVisor share its clock)."""
    wall, started = time.time(), time.perf_counter()
    made = api.post("/v1/sandboxes", json={"shape": shape, "rootfs": "desktop:1",
                                           "runtime": runtime,
                                           "ingress_enabled": ingress})  # fmt: skip
    made.raise_for_status()
    created = ms(started)
    box = made.json()["data"]
    screen = f"/v1/sandboxes/{box['id']}/computer/screen"
    wait_for(lambda: api.get(screen).status_code == 200)
    took = ms(started)
    status = api.get(f"/v1/sandboxes/{box['id']}/files",
                     params={"path": "/run/hutch-desktop/status.json"}).json()  # fmt: skip
    at = status["screens"]["0"]["at"]
    marks = {"created": created, "supervisor_started": (status["started_at"] - wall) * 1000,
             "screen_start": (at["start"] - wall) * 1000, "x_up": (at["x"] - wall) * 1000,
             "wm_up": (at["wm"] - wall) * 1000, "screen_answered": took}  # fmt: skip
    for name, value in marks.items():
        phases.setdefault(name, []).append(value)
    return took, box["id"]


# Inside the sandbox: start a bare Xvfb on another display and time it until its socket
# takes a connection (the X server's own start, the floor of a screen's).
BARE_XVFB = """
import os, socket, subprocess, time
t = time.perf_counter()
p = subprocess.Popen(["Xvfb", ":9", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while True:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect("/tmp/.X11-unix/X9"); break
    except OSError:
        time.sleep(0.002)
    finally:
        s.close()
print((time.perf_counter() - t) * 1000)
p.terminate(); p.wait()
"""


def create_to_exec(api: httpx.Client) -> tuple[float, str]:
    started = time.perf_counter()
    made = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
    made.raise_for_status()
    box = made.json()["data"]
    ran = api.post(f"/v1/sandboxes/{box['id']}/exec", json={"cmd": "true", "args": []})
    ran.raise_for_status()
    return ms(started), box["id"]


def timed(count: int, call: Any) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(ms(started))
    return samples


def interact(
    api: httpx.Client,
    home: Path,
    box: str,
    rounds: dict[str, int],
    made: list[str],
    *,
    devbox: bool = True,
) -> dict[str, Any]:
    """Steps 2-4 on the desktop sandbox ``box`` (its desktop up, no browser yet)."""
    result: dict[str, Any] = {}
    base = f"/v1/sandboxes/{box}"
    # 4. memory of the idle desktop (before any browser), next to an idle devbox
    others = [create_to_exec(api)[1]] if devbox else []
    made.extend(others)
    time.sleep(3)
    result["idle_memory_mib"] = {"desktop": round(cgroup_memory(home, [box]) / 2**20, 1)}
    if others:
        result["idle_memory_mib"]["devbox"] = round(cgroup_memory(home, others) / 2**20, 1)

    # 2. screenshots, next to scrot in the sandbox and to an exec of true
    shot = api.get(f"{base}/computer/screenshot")
    shot.raise_for_status()
    result["screenshot_bytes"] = len(shot.content)
    result["screenshot_ms"] = percentiles(
        timed(rounds["shots"], lambda: api.get(f"{base}/computer/screenshot").content)
    )

    scrot_exec = {"cmd": "scrot", "args": ["-o", "/tmp/s.png"], "env": {"DISPLAY": ":0"}}

    def scrot() -> None:
        ran = api.post(f"{base}/exec", json=scrot_exec).json()["data"]["result"]
        assert ran["exit_code"] == 0, ran
        api.get(f"{base}/files", params={"path": "/tmp/s.png"}).raise_for_status()

    result["scrot_in_sandbox_ms"] = percentiles(timed(rounds["shots"] // 2, scrot))
    exec_true = {"cmd": "true", "args": []}
    result["exec_true_ms"] = percentiles(
        timed(rounds["shots"], lambda: api.post(f"{base}/exec", json=exec_true))
    )

    # 3. click -> the next screenshot showing it
    api.put(f"{base}/files", params={"path": "/srv/bench.html"}, content=PAGE.encode())
    api.post(f"{base}/processes", json={"cmd": "python3", "args": [
        "-m", "http.server", "8000", "-b", "127.0.0.1", "-d", "/srv"]})  # fmt: skip
    api.post(f"{base}/computer/open", json={"target": "http://127.0.0.1:8000/bench.html"})

    def window() -> list[Any]:
        found = api.get(f"{base}/computer/windows", params={"application": "chromium"})
        return [w for w in found.json()["data"] if w["title"].startswith("bench")]

    wait_for(window)
    api.post(f"{base}/computer/windows/{window()[0]['id']}/maximize")

    def shows(wanted: tuple[int, int, int]) -> Any:
        return lambda: colour() == wanted

    def colour() -> tuple[int, int, int]:
        png = api.get(f"{base}/computer/screenshot").content
        Path("/tmp/hutch-bench-computer-last.png").write_bytes(png)
        return page_pixel(png)

    wait_for(
        lambda: colour() == (255, 255, 255),
        what="a white page (the last screenshot is /tmp/hutch-bench-computer-last.png)",
    )
    seen, now = [], (255, 255, 255)
    for _ in range(rounds["clicks"]):
        # Each click turns the page from white to black or back.
        after = (0, 0, 0) if now == (255, 255, 255) else (255, 255, 255)
        started = time.perf_counter()
        api.post(f"{base}/computer/mouse/click", json={"x": 640, "y": 500})
        wait_for(shows(after), what="the click's colour")
        seen.append(ms(started))
        now = after
    result["click_to_screenshot_ms"] = percentiles(seen)
    return result


def greeting(link: dict[str, Any]) -> float:
    """ms from opening the WebSocket through hutch's proxy to the VNC server's greeting."""
    from websockets.sync.client import connect

    host_port = link["url"].split("//", 1)[1].split("/", 1)[0]
    port = int(host_port.rsplit(":", 1)[1])
    started = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port), timeout=300)
    uri = f"ws://{host_port}/websockify?token={link['token']}"
    with connect(uri, sock=sock, subprotocols=["binary"], open_timeout=300) as ws:  # type: ignore[list-item]
        first = ws.recv(timeout=300)
    assert isinstance(first, bytes) and first.startswith(b"RFB "), first
    return ms(started)


def novnc(api: httpx.Client, box: str) -> dict[str, float]:
    """Step 7: the first ``connect`` (x11vnc and websockify start), the first greeting
    through the proxy, and a second one (x11vnc already warm)."""
    api.patch(f"/v1/sandboxes/{box}", json={"ingress_enabled": True}).raise_for_status()
    started = time.perf_counter()
    answer = api.get(f"/v1/sandboxes/{box}/computer/screens/screen-0/connect")
    answer.raise_for_status()
    connect_ms = ms(started)
    link = answer.json()["data"]
    return {"first_connect_ms": round(connect_ms, 1),
            "first_greeting_ms": round(greeting(link), 1),
            "second_greeting_ms": round(greeting(link), 1)}  # fmt: skip


def prepared(home: Path) -> int:
    """How many warm pool sandboxes are ready on the host (their directories' marker)."""
    return sum(1 for d in (home / "sandboxes").glob("*") if (d / "warm").exists())


def warm_and_gvisor(count: int) -> dict[str, Any]:
    """create -> /screen with a warm pool entry of desktop:1 (runc and gvisor; each create
    waits for the pool to be refilled first), next to a cold create of the same runtime in
    the same server (a shape the pool has not), and gvisor's phases."""
    home = Path(f"/tmp/hutch-bench-computer-warm-{os.getpid()}") / "home"
    env = {"HUTCH_DRIVER": "runc", "HUTCH_IMAGES_DIR": str(IMAGES), "HUTCH_LINK_POOL": new_pool(),
           "HUTCH_WARM_POOL": f"desktop:1:{SHAPE}=1,gvisor:desktop:1:{SHAPE}=1"}  # fmt: skip
    server = HutchProcess(home, env=env).wait_ready()
    key = run_cli(home, "keys", "create", "--user", "bench").stdout.strip()
    found: dict[str, Any] = {"load_before": os.getloadavg()}
    try:
        with server.client(key) as api:
            api.timeout = httpx.Timeout(120)
            for runtime in ("runc", "gvisor"):
                warm: list[float] = []
                cold: list[float] = []
                phases: dict[str, list[float]] = {}
                for _ in range(count):
                    wait_for(lambda: prepared(home) >= 2, what="the warm pool")
                    time.sleep(0.5)  # the last one's checks settle after its marker
                    took, box = create_to_screen(api, {}, runtime)
                    warm.append(took)
                    api.delete(f"/v1/sandboxes/{box}")
                    took, box = create_to_screen(api, phases, runtime, shape="s-2vcpu-4gb")
                    cold.append(took)
                    api.delete(f"/v1/sandboxes/{box}")
                found[runtime] = {"warm_create_to_screen_ms": percentiles(warm),
                                  "cold_create_to_screen_ms": percentiles(cold)}  # fmt: skip
                if runtime == "gvisor":
                    found[runtime]["cold_phases_ms"] = {
                        name: percentiles(values) for name, values in phases.items()
                    }
    finally:
        server.stop()
        remove_instance(home)
    found["load_after"] = os.getloadavg()
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "computer.json")
    args = parser.parse_args()
    rounds = {"create": 2 if args.quick else 5, "shots": 20 if args.quick else 100,
              "clicks": 5 if args.quick else 15}  # fmt: skip
    home = Path(f"/tmp/hutch-bench-computer-{os.getpid()}") / "home"
    env = {"HUTCH_DRIVER": "runc", "HUTCH_IMAGES_DIR": str(IMAGES), "HUTCH_LINK_POOL": new_pool(),
           "HUTCH_COMPUTER_SCREENSHOTS_PER_MINUTE": "100000", "HUTCH_PROXY_ENABLED": "true",
           "HUTCH_PROXY_PORT": "0"}  # fmt: skip
    server = HutchProcess(home, env=env).wait_ready()
    made: list[str] = []
    result: dict[str, Any] = {"machine": {"python": platform.python_version(),
                                          "cpus": os.cpu_count(),
                                          "load": os.getloadavg()}}  # fmt: skip
    key = run_cli(home, "keys", "create", "--user", "bench").stdout.strip()
    try:
        with server.client(key) as api:
            api.timeout = httpx.Timeout(120)
            # 1. create -> /screen, next to create -> exec of a plain sandbox
            desktop, plain, phases = [], [], {}
            for _ in range(rounds["create"]):
                took, box = create_to_screen(api, phases)
                desktop.append(took)
                made.append(box)
                took, box = create_to_exec(api)
                plain.append(took)
                made.append(box)
            result["create_to_screen_ms"] = percentiles(desktop)
            result["create_to_screen_phases_ms"] = {
                name: percentiles(values) for name, values in phases.items()
            }
            result["devbox_create_to_exec_ms"] = percentiles(plain)
            bare = []
            for _ in range(rounds["create"]):
                ran = api.post(f"/v1/sandboxes/{made[0]}/exec",
                               json={"cmd": "python3", "args": ["-c", BARE_XVFB]})  # fmt: skip
                bare.append(float(ran.json()["data"]["result"]["stdout"]))
            result["bare_xvfb_start_in_the_sandbox_ms"] = percentiles(bare)
            for box in made[1:]:
                api.delete(f"/v1/sandboxes/{box}")
            box, made = made[0], made[:1]

            result |= interact(api, home, box, rounds, made)
            result["novnc"] = novnc(api, box)

            # 6. and 7. on gvisor
            gbox = create_to_screen(api, {}, "gvisor", ingress=True)[1]
            made.append(gbox)
            gvisor_rounds = {"shots": max(10, rounds["shots"] // 4), "clicks": rounds["clicks"]}
            result["gvisor"] = interact(api, home, gbox, gvisor_rounds, made, devbox=False)
            result["gvisor"]["idle_memory_mib"]["sentry_and_gofer_rss"] = runtime_rss_mib(
                home, [gbox]
            )
            result["gvisor"]["novnc"] = novnc(api, gbox)
            result["load_after"] = os.getloadavg()
    finally:
        with server.client(key) as owner:
            for box in made:
                owner.delete(f"/v1/sandboxes/{box}")
        server.stop()
        remove_instance(home)
    result["warm_pool_and_gvisor"] = warm_and_gvisor(rounds["create"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
