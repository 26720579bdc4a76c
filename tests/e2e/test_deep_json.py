"""Deeply nested JSON in a request body is a 400 in the dialect's envelope, also after the
server has loaded the Ethereum libraries (py_ecc raises the interpreter's recursion limit
when imported; with it, such a body would overflow the C stack and kill the server)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.server import HutchProcess, remove_instance
from tests.support.wallet import Wallet

DEEP = "[" * 200_000 + "]" * 200_000  # 400 KB, under the 1 MiB body limit


def test_deep_json_after_a_signed_request_is_a_400_and_the_server_lives(tmp_path: Path) -> None:
    server = HutchProcess(tmp_path / "home").wait_ready()
    key = server.new_key("deep")
    try:
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as http:
            # A signed request: the server imports eth_account (and py_ecc) to check it.
            assert http.get("/agent/projects", headers=Wallet.new().headers()).status_code == 200
            for path, headers in (
                ("/v1/networks", {"X-Api-Key": key}),
                ("/agent/deploy", Wallet.new().headers()),
                ("/nullspace/v1/sandboxes", {"Authorization": f"Bearer {key}"}),
            ):
                answer = http.post(
                    path, content=DEEP, headers={**headers, "Content-Type": "application/json"}
                )
                assert answer.status_code == 400, (path, answer.status_code, answer.text[:200])
            assert http.get("/healthz").status_code == 200
        assert server.proc.poll() is None
    finally:
        server.stop()
        remove_instance(server.home)
