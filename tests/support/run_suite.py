"""``make test``: the whole suite as two pytest processes at once, to halve CI's wait.

``tests/e2e`` (real servers and sandboxes, much of it waiting on them) runs beside the rest
(``tests/unit``, ``tests/contract``, ``tests/integration``, and the e2e modules that run on
the fake driver alone). The two share no host
resource: each session starts its own PostgreSQL, S3 and chains on free ports; the tests'
internet takes a slot of its own (a lock per session); sandboxes' link pools of the second
part (10.90, 10.92, 10.107-10.110) are no e2e test's, and its one runc server takes its
network pool apart (tests/contract/conftest.py); image builds are serialised by their own
lock. Each line a part prints comes prefixed with its name as soon as it is printed; the
run fails if either part fails, and "no tests ran" (pytest's exit code 5) is a failure too.
Arguments are passed to both (``-x``, ``-k …``); ``HUTCH_TEST_SERIAL=1`` runs one pytest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType
from typing import IO

# End-to-end modules that run in the second part, to even out the two parts' times: those on
# the fake driver alone (a server on a free port, no sandbox, link or network), and
# test_cli_client, whose runc servers (through test_sandboxes_runc.runc_server) take the
# second part's link and network pools (HUTCH_TEST_PART=rest: 10.112, 10.113).
FAKE_E2E = [
    f"tests/e2e/{name}.py"
    for name in ("test_catalog", "test_deep_json", "test_identity", "test_openapi_fuzz",
                 "test_tunnel_protocol", "test_cli_client")
]  # fmt: skip
PARTS = {
    "e2e": ["tests/e2e", *(f"--ignore={path}" for path in FAKE_E2E)],
    "rest": ["tests/unit", "tests/contract", "tests/integration", *FAKE_E2E],
}


def _pump(name: str, stream: IO[bytes], lock: threading.Lock) -> None:
    for line in iter(stream.readline, b""):
        with lock:
            sys.stdout.buffer.write(f"[{name}] ".encode() + line)
            sys.stdout.buffer.flush()


def main(argv: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest", *argv]
    if os.environ.get("HUTCH_TEST_SERIAL"):
        return subprocess.call(pytest, stdin=subprocess.DEVNULL)
    lock = threading.Lock()
    started = time.monotonic()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    pumps = []
    for name, paths in PARTS.items():
        # Each its own cache directory: both write theirs at the end.
        cache = ["-o", f"cache_dir=.pytest_cache/{name}"]
        proc = subprocess.Popen(
            [*pytest, *cache, *paths], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "HUTCH_TEST_PART": name},
        )  # fmt: skip
        procs[name] = proc
        assert proc.stdout is not None
        pump = threading.Thread(target=_pump, args=(name, proc.stdout, lock), daemon=True)
        pump.start()
        pumps.append(pump)

    def forward(signum: int, _frame: FrameType | None) -> None:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    codes = {name: proc.wait() for name, proc in procs.items()}
    for pump in pumps:
        pump.join()
    took = time.monotonic() - started
    summary = ", ".join(f"{name} exit {code}" for name, code in codes.items())
    print(f"[suite] {summary}; {took:.0f} s in all", flush=True)
    # Any non-zero code fails, 5 (no tests collected) included.
    return next((code for code in codes.values() if code), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
