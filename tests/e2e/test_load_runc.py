"""The load benchmark's correctness half, at a small fixed size: 20 clients over four
users, three rounds each, against real sandboxes; everything a user would check holds."""

from __future__ import annotations

from pathlib import Path

from bench.load import audit, cleanup_audit, run_load

from tests.e2e.test_sandboxes_runc import runc_server
from tests.support.server import remove_instance


def test_twenty_clients_at_once_lose_nothing_and_leak_nothing(tmp_path: Path, images: Path) -> None:
    home = tmp_path / "home"
    server = runc_server(home, images, env={"HUTCH_MAX_RUNNING_PER_USER": "200"})
    try:
        keys = [server.new_key(f"load{i}") for i in range(4)]
        report = run_load(server.url, keys, clients=20, rounds=3)
        assert report.failures == []
        assert len(report.made) == 60
        assert set(report.timings) == {
            "create",
            "exec",
            "write_file",
            "read_file",
            "list",
            "delete",
        }
        checked = audit(server.url, keys, home, report)
        assert checked["problems"] == [] and checked["kept"] == 20
        assert cleanup_audit(server.url, keys, home, report) == []
    finally:
        server.stop()
        remove_instance(home)
