"""schemathesis against a running ``hutch serve`` (fake driver, proxy on): every operation
of specs/openapi.yaml, both dialects, with generated input. No answer may be a 5xx, use an
undocumented status or break its schema.

Registering a disk is left out: its probe would reach whatever endpoint the generator
makes up, and tests send traffic only to loopback (its schema is exercised in-process)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from hutch.host.drivers.fake import FakeDriver
from tests.support.server import HutchProcess

REPO = Path(__file__).resolve().parents[2]


def test_no_operation_breaks_its_schema(tmp_path: Path, images: Path) -> None:
    home = tmp_path / "home"
    server = HutchProcess(home, env={"HUTCH_IMAGES_DIR": str(images), "HUTCH_PROXY_ENABLED": "true",
                                     "HUTCH_PROXY_PORT": "0"}).wait_ready()  # fmt: skip
    try:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "schemathesis"), "run",
             str(REPO / "specs" / "openapi.yaml"), "--url", server.url,
             "-H", f"X-Api-Key: {server.admin_key}",
             "-H", f"Authorization: Bearer {server.admin_key}",
             "--checks", "not_a_server_error,status_code_conformance,"
             "response_schema_conformance,content_type_conformance",
             "--phases", "examples,fuzzing", "-n", "15", "--workers", "2", "--seed", "1",
             "--exclude-operation-id", "register_disk_v1_disks_post", "--no-color"],
            capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL, cwd=tmp_path,
        )  # fmt: skip
        failures = done.stdout[done.stdout.find("FAILURES") :]
        assert done.returncode == 0, failures[:6000] + done.stderr[-2000:]
        assert " passed" in done.stdout
    finally:
        server.stop()
        asyncio.run(FakeDriver(home / "fake-sandboxes").cleanup(set()))
