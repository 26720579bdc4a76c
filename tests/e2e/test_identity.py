"""API keys, auth and users, as an operator and their users meet them."""

from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.support.postgres import PostgresServer
from tests.support.server import HutchProcess, run_cli


@pytest.fixture
def server(shared_server: HutchProcess) -> HutchProcess:
    """One server for the tests that take it: each makes users of its own and counts
    nothing of the others'. The tests that restart a server or list every key start
    their own."""
    return shared_server


def _whoami(server: HutchProcess, key: str) -> httpx.Response:
    with server.client(key) as client:
        return client.get("/v1/whoami")


def test_admin_key_is_printed_once_and_keeps_working(home: Path) -> None:
    first = HutchProcess(home).wait_ready()
    try:
        key = first.admin_key
        assert key and key.startswith("hk_")
        body = _whoami(first, key).json()
    finally:
        first.stop()
    assert body["status"] == "success"
    assert body["data"]["user_id"].startswith("usr_")
    assert body["data"]["stats"] == {"running": 0, "paused": 0, "other": 0, "total": 0}

    second = HutchProcess(home).wait_ready()
    try:
        assert second.admin_key is None
        assert any("hutch keys create --user admin" in line for line in second.lines)
        assert _whoami(second, key).json()["data"]["user_id"] == body["data"]["user_id"]
    finally:
        second.stop()
    assert key not in (home / "hutch.db").read_bytes().decode("latin-1")


def test_keys_made_while_the_server_runs_work_at_once(fresh_server: HutchProcess) -> None:
    server = fresh_server  # its own: the listing below is every key of the store
    created = run_cli(server.home, "keys", "create", "--user", "alice")
    alice_key = created.stdout.strip()
    assert created.stdout == alice_key + "\n", "only the key goes to stdout"
    assert alice_key.startswith("hk_")

    by_header = _whoami(server, alice_key)
    with httpx.Client(base_url=server.url) as client:
        by_bearer = client.get("/v1/whoami", headers={"Authorization": f"Bearer {alice_key}"})
    assert by_header.status_code == by_bearer.status_code == 200
    alice_id = by_header.json()["data"]["user_id"]
    assert by_bearer.json()["data"]["user_id"] == alice_id

    assert server.admin_key is not None
    assert _whoami(server, server.admin_key).json()["data"]["user_id"] != alice_id
    second = run_cli(server.home, "keys", "create", "--user", "alice").stdout.strip()
    assert _whoami(server, second).json()["data"]["user_id"] == alice_id

    listed = json.loads(run_cli(server.home, "keys", "list", "--json").stdout)
    assert sorted(k["user"] for k in listed) == ["admin", "alice", "alice"]
    assert all(k["prefix"] and alice_key not in json.dumps(k) for k in listed)
    table = run_cli(server.home, "keys", "list").stdout
    assert "alice" in table and "admin" in table and alice_key not in table


def test_revoked_keys_get_401_at_once(server: HutchProcess) -> None:
    key = run_cli(server.home, "keys", "create", "--user", "bob").stdout.strip()
    assert _whoami(server, key).status_code == 200
    revoked = run_cli(server.home, "keys", "revoke", key)
    assert "revoked key_" in revoked.stdout
    response = _whoami(server, key)
    assert response.status_code == 401
    assert response.json() == {"status": "fail", "data": {"message": "invalid or revoked API key"}}


def test_cli_mistakes_are_one_line_not_a_traceback(server: HutchProcess) -> None:
    unknown = run_cli(server.home, "keys", "revoke", "key_NOSUCHKEY", check=False)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: no API key")
    assert "Traceback" not in unknown.stderr
    bad_name = run_cli(server.home, "keys", "create", "--user", "no spaces", check=False)
    assert bad_name.returncode == 1 and "user names are" in bad_name.stderr
    assert bad_name.stdout == ""
    bad_env = run_cli(server.home, "keys", "list", env={"HUTCH_PORT": "many"}, check=False)
    assert bad_env.returncode == 1 and "bad configuration: port" in bad_env.stderr


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Api-Key": "hk_wrong"},
        {"Authorization": "Bearer hk_wrong"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
    ],
)
def test_requests_without_a_good_key_are_401(server: HutchProcess, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=server.url) as client:
        response = client.get("/v1/whoami", headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert body["status"] == "fail" and body["data"]["message"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("offset=1.5", "offset"),
    ],
)
def test_bad_pagination_is_a_400_naming_the_field(
    server: HutchProcess, query: str, field: str
) -> None:
    with server.client() as client:
        for path in ("/v1/shapes", "/v1/hosts"):
            response = client.get(f"{path}?{query}")
            assert response.status_code == 400
            body = response.json()
            assert body["status"] == "fail" and list(body["data"]) == [field]


def test_oversized_and_misdirected_requests_get_the_envelope(server: HutchProcess) -> None:
    with server.client(server.admin_key) as client:
        too_big = client.post("/v1/whoami", content=b"{" + b" " * (2 * 1024 * 1024) + b"}")
        wrong_method = client.delete("/v1/whoami")
        nowhere = client.get("/v2/anything")
    assert too_big.status_code == 413 and too_big.json()["status"] == "fail"
    assert wrong_method.status_code == 405 and wrong_method.json()["status"] == "fail"
    assert nowhere.status_code == 404 and nowhere.json()["status"] == "fail"


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HutchProcess(tmp_path / "home", "--port", str(port))
        code = server.wait_exit(timeout=60)
    assert code == 1
    assert any(line.startswith("error: could not serve") for line in server.stderr_lines)
    assert not any("Traceback" in line for line in server.stderr_lines)
    assert server.admin_key is None


@pytest.mark.postgres
def test_postgres_backend_and_readiness_when_it_goes_away(tmp_path: Path) -> None:
    pg = PostgresServer(Path(tempfile.mkdtemp(prefix="hutch-test-pg-")))
    pg.init()
    pg.start()
    try:
        url = pg.create_database("hutch")
        server = HutchProcess(tmp_path / "home", "--database-url", url).wait_ready()
        try:
            assert server.admin_key is not None
            assert not (tmp_path / "home" / "hutch.db").exists()
            key = run_cli(
                server.home, "keys", "create", "--user", "pat", "--database-url", url
            ).stdout.strip()
            assert _whoami(server, key).status_code == 200

            pg.stop()
            with server.client(key) as client:
                ready = client.get("/readyz")
                whoami = client.get("/v1/whoami")
                alive = client.get("/healthz")
            assert ready.status_code == 503
            reason = "the control plane cannot reach its database"
            assert ready.json() == {
                "status": "error",
                "message": reason,
                "code": 503,
                "data": {
                    "ready": False,
                    "reason": reason,
                    "scheduler_last_ok_ms_ago": ready.json()["data"]["scheduler_last_ok_ms_ago"],
                },
            }
            assert whoami.status_code == 503 and whoami.json()["status"] == "error"
            assert alive.status_code == 200

            pg.start()
            with server.client(key) as client:
                assert client.get("/readyz").status_code == 200
                assert client.get("/v1/whoami").status_code == 200
        finally:
            server.stop()
    finally:
        pg.destroy()
