"""Events and webhooks on SQLite and PostgreSQL (fake driver): the log records what users
did to their sandboxes, in order, only for them; webhooks get each event POSTed, signed,
retried until the receiver takes it, and refused on addresses that are not public. And
Prometheus on its operator address: requests, sandboxes and operations, no ids."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from hutch.api.app import create_app
from hutch.host.drivers.fake import FakeDriver
from hutch.settings import Settings
from tests.support.images import fake_image
from tests.support.server import HutchProcess


class Receiver:
    """A webhook receiver on loopback: records every POST; answers ``codes`` in turn, then 200."""

    def __init__(self, codes: list[int] | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.codes = list(codes or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.codes.pop(0) if receiver.codes else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _client(tmp_path: Path, database_url: str, **settings: Any) -> Iterator[TestClient]:
    fake_image(tmp_path / "images", "devbox:1")
    config = Settings(home=tmp_path / "home", images_dir=tmp_path / "images", driver="fake",
                      proxy_enabled=False, database_url=database_url,
                      **settings)  # fmt: skip
    with TestClient(create_app(config)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        assert client.portal is not None
        client.headers["X-Api-Key"] = client.portal.call(services.identity.issue_key, "ann").key
        client.other_key = client.portal.call(services.identity.issue_key, "bob").key  # type: ignore[attr-defined]
        yield client
    asyncio.run(FakeDriver(config.home / "fake-sandboxes").cleanup(set()))


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    yield from _client(tmp_path, database_url, webhook_allow_private="127.0.0.1/32",
                       webhook_retry_s=0.2, webhook_max_attempts=3)  # fmt: skip


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def status_is(client: TestClient, box: str, status: str) -> None:
    wait_for(lambda: client.get(f"/v1/sandboxes/{box}").json()["data"]["status"] == status,
             f"{box} to be {status}")  # fmt: skip


def lifecycle(client: TestClient) -> str:
    made = client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb", "name": "web"})
    assert made.status_code == 201, made.text
    box = made.json()["data"]["id"]
    status_is(client, box, "running")
    assert client.post(f"/v1/sandboxes/{box}/pause").status_code in (200, 202)
    status_is(client, box, "paused")
    assert client.post(f"/v1/sandboxes/{box}/resume").status_code in (200, 202)
    status_is(client, box, "running")
    assert client.delete(f"/v1/sandboxes/{box}").status_code in (200, 202)
    status_is(client, box, "destroyed")
    return str(box)


def events(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    answer = client.get("/v1/events", params=params)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"]["data"])


def test_the_log_holds_a_sandboxs_life_in_order_for_its_owner_only(client: TestClient) -> None:
    box = lifecycle(client)
    mine = [e for e in events(client) if e["subject_id"] == box]
    assert [e["type"] for e in mine] == [
        "sandbox.created", "sandbox.running", "sandbox.paused", "sandbox.resumed",
        "sandbox.destroyed",
    ]  # fmt: skip
    assert [e["seq"] for e in mine] == sorted(e["seq"] for e in mine)
    assert all(e["data"]["name"] == "web" and e["id"].startswith("evt_") for e in mine)
    assert mine[2]["data"]["from"] in ("running", "pausing")
    # Paging forward from a seq, filtering by type and subject.
    later = events(client, since=mine[1]["seq"])
    assert next(e["type"] for e in later if e["subject_id"] == box) == "sandbox.paused"
    assert [e["type"] for e in events(client, type="sandbox.paused")] == ["sandbox.paused"]
    assert len(events(client, subject_id=box, limit=2)) == 2
    # Another user sees none of it, and cannot ask for everyone's.
    other = {"X-Api-Key": client.other_key}  # type: ignore[attr-defined]
    assert client.get("/v1/events", headers=other).json()["data"]["data"] == []
    refused = client.get("/v1/events", params={"all": "true"}, headers=other)
    assert refused.status_code == 403 and refused.json()["status"] == "fail"


def test_bad_queries_are_400s_that_say_what_is_wrong(client: TestClient) -> None:
    bad_since = client.get("/v1/events", params={"since": "yesterday"})
    assert bad_since.status_code == 400 and "since" in bad_since.json()["data"]
    naive = client.get("/v1/events", params={"since": "2026-12-01T10:00:00"})
    assert naive.status_code == 400 and "time zone" in naive.json()["data"]["since"]
    bad_type = client.get("/v1/events", params={"type": "sandbox.exploded"})
    assert bad_type.status_code == 400 and "sandbox.exploded" in bad_type.json()["data"]["type"]
    # A seq past what the store holds (a 500 from the database before), a non-ASCII digit.
    for since in ("9223372036854775808", "9" * 40, "\u00b2"):
        for follow in ("false", "true"):
            odd = client.get("/v1/events", params={"since": since, "follow": follow})
            assert odd.status_code == 400 and "since" in odd.json()["data"], (since, odd.text)
    # seq is 64 bits on both stores (PostgreSQL's column is a BIGINT since 0016).
    for since in (str(2**31), str(2**63 - 1)):
        last = client.get("/v1/events", params={"since": since})
        assert last.status_code == 200 and last.json()["data"]["data"] == [], (since, last.text)


def test_a_time_since_returns_what_happened_from_then(client: TestClient) -> None:
    box = lifecycle(client)
    everything = [e for e in events(client) if e["subject_id"] == box]
    paused_at = everything[2]["created_at"]
    from_then = [e["type"] for e in events(client, since=paused_at) if e["subject_id"] == box]
    assert from_then[0] == "sandbox.paused" and "sandbox.created" not in from_then


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    fields = dict(part.split("=", 1) for part in headers["x-hutch-signature"].split(","))
    mac = hmac.new(secret.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(mac.hexdigest(), fields["v1"])


def make_hook(client: TestClient, url: str, events: list[str]) -> dict[str, Any]:
    made = client.post("/v1/webhooks", json={"url": url, "events": events})
    assert made.status_code == 201, made.text
    return dict(made.json()["data"])


def deliveries(client: TestClient, hook: str) -> list[dict[str, Any]]:
    answer = client.get(f"/v1/webhooks/{hook}/deliveries")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"]["data"])


def test_a_webhook_gets_each_event_signed_and_the_log_says_so(client: TestClient) -> None:
    receiver = Receiver()
    try:
        hook = make_hook(client, receiver.url, ["sandbox.paused", "sandbox.destroyed"])
        assert hook["secret"].startswith("whsec_")
        assert "secret" not in client.get(f"/v1/webhooks/{hook['id']}").json()["data"]
        box = lifecycle(client)
        wait_for(lambda: len(receiver.requests) == 2, "two deliveries")
        kinds = []
        for headers, body in receiver.requests:
            assert verify(hook["secret"], headers, body), "the signature checks out"
            assert not verify("whsec_not-the-secret-at-all", headers, body)
            event = json.loads(body)
            assert event["subject_id"] == box and headers["x-hutch-event"] == event["type"]
            assert headers["x-hutch-event-id"] == event["id"]
            kinds.append(event["type"])
        assert sorted(kinds) == ["sandbox.destroyed", "sandbox.paused"]
        log = wait_for(lambda: [d for d in deliveries(client, hook["id"])
                                if d["state"] == "delivered"], "the log")  # fmt: skip
        assert len(log) == 2 and all(d["last_status"] == 200 and d["attempts"] == 1 for d in log)
    finally:
        receiver.close()


def test_a_failing_receiver_is_retried_then_given_up_on(client: TestClient) -> None:
    receiver = Receiver(codes=[500, 503])  # then 200
    try:
        hook = make_hook(client, receiver.url, ["sandbox.created"])
        client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
        done = wait_for(lambda: [d for d in deliveries(client, hook["id"])
                                 if d["state"] == "delivered"], "the third try")  # fmt: skip
        assert done[0]["attempts"] == 3 and len(receiver.requests) == 3
        # A receiver that never takes it: failed after webhook_max_attempts (3), with why.
        receiver.codes = [500] * 10
        client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
        failed = wait_for(lambda: [d for d in deliveries(client, hook["id"])
                                   if d["state"] == "failed"], "giving up")  # fmt: skip
        assert failed[0]["attempts"] == 3 and "500" in failed[0]["last_error"]
        assert failed[0]["next_attempt_at"] is None
    finally:
        receiver.close()


def test_a_receiver_that_trickles_its_answer_is_cut_off_and_others_still_get_theirs(
    tmp_path: Path, database_url: str
) -> None:
    """httpx's timeout is per read: a receiver sending a byte of its answer now and then
    held the deliverer (and every other user's deliveries) for as long as it liked. One
    trickles its headers (no status: failed after the timeout), one its body (200 came:
    delivered, the body is not waited for)."""
    stop = threading.Event()
    listeners = {"headers": socket.socket(), "body": socket.socket()}

    def trickle(listener: socket.socket, head: bytes) -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(head)
                while not stop.wait(0.2):
                    try:
                        conn.sendall(b"x")
                    except OSError:
                        break

    heads = {"headers": b"HTTP/1.1 200 OK\r\nX-Slow: ",
             "body": b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n"}  # fmt: skip
    for mode, listener in listeners.items():
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        threading.Thread(target=trickle, args=(listener, heads[mode]), daemon=True).start()
    receiver = Receiver()
    try:
        for client in _client(tmp_path, database_url, webhook_allow_private="127.0.0.1/32",
                              webhook_timeout_s=1, webhook_max_attempts=1):  # fmt: skip
            hooks = {mode: make_hook(client, f"http://127.0.0.1:{listener.getsockname()[1]}/",
                                     ["sandbox.created"])["id"]
                     for mode, listener in listeners.items()}  # fmt: skip
            make_hook(client, receiver.url, ["sandbox.created"])
            client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
            wait_for(lambda: receiver.requests, "the other webhook's delivery")
            client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
            wait_for(lambda: len(receiver.requests) == 2, "a delivery after the tricklers'")

            def done(c: TestClient = client, hook_id: str = hooks["headers"]) -> list[Any]:
                return [d for d in deliveries(c, hook_id) if d["state"] != "pending"]

            ended = wait_for(done, "the header trickler's deliveries to end")
            assert ended[0]["state"] == "failed", ended
            assert "no answer within 1 s" in ended[0]["last_error"]
            wait_for(lambda c=client, h=hooks["body"]: [d["state"] for d in deliveries(c, h)]
                     == ["delivered", "delivered"], "the body trickler's two 200s")  # fmt: skip
    finally:
        stop.set()
        for listener in listeners.values():
            listener.close()
        receiver.close()


def test_receivers_on_private_addresses_are_refused(tmp_path: Path, database_url: str) -> None:
    receiver = Receiver()
    try:
        for client in _client(tmp_path, database_url, webhook_max_attempts=1):
            hook = make_hook(client, receiver.url, ["*"])
            client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})

            def refused(client: TestClient = client, hook_id: str = hook["id"]) -> list[Any]:
                return [d for d in deliveries(client, hook_id) if d["state"] == "failed"]

            failed = wait_for(refused, "the refusal")
            assert "public addresses only" in failed[0]["last_error"]
            assert receiver.requests == [], "nothing reached the loopback receiver"
    finally:
        receiver.close()


def test_ipv6_addresses_that_carry_a_private_ipv4_one_are_refused(
    tmp_path: Path, database_url: str
) -> None:
    """6to4, NAT64, IPv4-compatible and site-local addresses are judged by where they lead
    (Python calls 2002:7f00:1:: and 64:ff9b::7f00:1 global)."""
    urls = ["http://[2002:7f00:1::1]/hook", "http://[64:ff9b::a00:1]/hook",
            "http://[::127.0.0.1]/hook", "http://[fec0::1]/hook"]  # fmt: skip
    for client in _client(tmp_path, database_url, webhook_max_attempts=1):
        hooks = [make_hook(client, url, ["sandbox.created"])["id"] for url in urls]
        client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
        for hook_id, url in zip(hooks, urls, strict=True):
            failed = wait_for(lambda c=client, h=hook_id: [d for d in deliveries(c, h)
                                                           if d["state"] == "failed"],
                              url)  # fmt: skip
            assert "public addresses only" in failed[0]["last_error"], (url, failed[0])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://a..b/hook"}, "url"),
        ({"url": "http://" + "x" * 64 + ".test/hook"}, "url"),
        ({"url": "http://example.test/a\x01b"}, "url"),
        ({"url": "ftp://example.test/x"}, "url"),
        ({"url": "http:///nohost"}, "url"),
        ({"url": "http://user:pw@example.test/"}, "url"),
        ({"url": "https://example.test/", "events": ["sandbox.exploded"]}, "events"),
        ({"url": "https://example.test/", "events": []}, "events"),
        ({"url": "https://example.test/", "secret": "short"}, "secret"),
        ({"url": "https://example.test/", "colour": "red"}, "colour"),
    ],
)
def test_bad_webhooks_are_400s_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    answer = client.post("/v1/webhooks", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["status"] == "fail" and field in answer.json()["data"]
    assert client.get("/v1/webhooks").json()["data"]["pagination"]["total"] == 0


def test_webhooks_are_their_owners_and_deleting_one_stops_it(client: TestClient) -> None:
    receiver = Receiver()
    try:
        hook = make_hook(client, receiver.url, ["*"])
        other = {"X-Api-Key": client.other_key}  # type: ignore[attr-defined]
        assert client.get(f"/v1/webhooks/{hook['id']}", headers=other).status_code == 404
        assert client.delete(f"/v1/webhooks/{hook['id']}", headers=other).status_code == 404
        patched = client.patch(f"/v1/webhooks/{hook['id']}", json={"events": ["sandbox.paused"]})
        assert patched.status_code == 200 and patched.json()["data"]["events"] == ["sandbox.paused"]
        assert client.delete(f"/v1/webhooks/{hook['id']}").status_code == 200
        assert client.get(f"/v1/webhooks/{hook['id']}").status_code == 404
        lifecycle(client)
        time.sleep(1)  # the deliverer polls every 0.5 s: it would have sent by now
        assert receiver.requests == []
    finally:
        receiver.close()


def test_follow_streams_events_as_they_happen(tmp_path: Path) -> None:
    fake_image(tmp_path / "images", "devbox:1")
    server = HutchProcess(tmp_path / "home", env={"HUTCH_IMAGES_DIR": str(tmp_path / "images")})
    server.wait_ready()
    try:
        api = server.client(server.admin_key)
        seen: list[dict[str, Any]] = []

        def follow() -> None:
            with httpx.stream(
                "GET",
                f"{server.url}/v1/events",
                params={"follow": "true"},
                headers={"X-Api-Key": server.admin_key or ""},
                timeout=30,
            ) as s:
                assert s.headers["content-type"].startswith("application/x-ndjson")
                for line in s.iter_lines():
                    seen.append(json.loads(line))
                    if seen[-1].get("type") == "sandbox.paused":
                        return  # fmt: skip

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        time.sleep(0.5)  # the stream is open before anything happens
        box = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"}).json()["data"]["id"]
        wait_for(lambda: api.get(f"/v1/sandboxes/{box}").json()["data"]["status"] == "running",
                 "running")  # fmt: skip
        api.post(f"/v1/sandboxes/{box}/pause")
        reader.join(timeout=30)
        assert not reader.is_alive(), f"the stream did not bring the pause: {seen}"
        assert [e["type"] for e in seen if e["subject_id"] == box] == [
            "sandbox.created", "sandbox.running", "sandbox.paused",
        ]  # fmt: skip
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://{address}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_prometheus_scrapes_requests_sandboxes_and_operations(tmp_path: Path) -> None:
    fake_image(tmp_path / "images", "devbox:1")
    address = f"127.0.0.1:{free_port()}"
    server = HutchProcess(tmp_path / "home", env={
        "HUTCH_IMAGES_DIR": str(tmp_path / "images"), "HUTCH_METRICS_ADDR": address,
        "HUTCH_METRICS_INTERVAL_S": "0.5"})  # fmt: skip
    server.wait_ready()
    try:
        api = server.client(server.admin_key)
        box = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"}).json()["data"]["id"]
        wait_for(lambda: api.get(f"/v1/sandboxes/{box}").json()["data"]["status"] == "running",
                 "running")  # fmt: skip
        assert api.post(f"/v1/sandboxes/{box}/exec", json={"cmd": "true"}).status_code == 200
        api.post(f"/v1/sandboxes/{box}/pause")
        api.get("/v1/sandboxes/sb_nonexistent")
        assert api.get("/metrics").status_code == 404, "not on the public API's port"

        def paused_counted() -> dict[Any, float] | None:
            found = scrape(address)
            paused = [v for (n, labels), v in found.items()
                      if n == "hutch_sandboxes" and ("status", "paused") in labels]  # fmt: skip
            return found if paused == [1.0] else None

        found = wait_for(paused_counted, "the paused sandbox counted")
        key = (("method", "POST"), ("route", "/v1/sandboxes"), ("status", "201"))
        assert found[("hutch_http_requests_total", key)] == 1
        missing = (("method", "GET"), ("route", "/v1/sandboxes/{sandbox_id}"), ("status", "404"))
        assert found[("hutch_http_requests_total", missing)] == 1
        for operation in ("create", "exec", "pause"):
            count = found[("hutch_sandbox_operation_seconds_count", (("operation", operation),))]
            assert count == 1, operation
        assert ("hutch_preview_routes", ()) in found and ("hutch_payments", ()) in found
        text = httpx.get(f"http://{address}/metrics", timeout=10).text
        assert box not in text and "sb_nonexistent" not in text, "ids are never labels"
        # Every series the shipped Grafana dashboard asks for is one hutch exports.
        dashboard = (Path(__file__).parents[2] / "grafana" / "hutch.json").read_text()
        wanted = set(re.findall(r"hutch_[a-z_]+", dashboard))
        families = list(text_string_to_metric_families(text))
        exported = {f.name for f in families} | {s.name for f in families for s in f.samples}
        assert wanted and wanted <= exported, wanted - exported
    finally:
        server.stop()


def test_json_logs_carry_the_request_id_user_and_sandbox(tmp_path: Path) -> None:
    fake_image(tmp_path / "images", "devbox:1")
    server = HutchProcess(tmp_path / "home", "--log-level", "info", env={
        "HUTCH_IMAGES_DIR": str(tmp_path / "images"), "HUTCH_LOG_FORMAT": "json"})  # fmt: skip
    server.wait_ready()
    try:
        api = server.client(server.admin_key)
        box = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"}).json()["data"]["id"]
        ran = api.post(f"/v1/sandboxes/{box}/exec", json={"cmd": "true"})
        assert ran.status_code == 200

        def exec_logged() -> list[dict[str, Any]]:
            lines = [json.loads(line) for line in list(server.stderr_lines) if line.strip()]
            return [line for line in lines if f"/v1/sandboxes/{box}/exec" in line["message"]]

        logged = wait_for(exec_logged, "the exec's access log line")[0]
        assert logged["request_id"] == ran.headers["X-Request-ID"]
        assert logged["user"] == "admin" and logged["sandbox_id"] == box
        assert logged["level"] == "info" and logged["ts"].endswith("+00:00")
        # A read a worker answers itself is logged too, with its own request id.
        read = api.get(f"/v1/sandboxes/{box}")

        def read_logged() -> list[dict[str, Any]]:
            lines = [json.loads(line) for line in list(server.stderr_lines) if line.strip()]
            return [line for line in lines if line.get("request_id") == read.headers["X-Request-ID"]
                    and f"GET /v1/sandboxes/{box} " in line["message"]]  # fmt: skip

        assert wait_for(read_logged, "the read's access log line")[0]["user"] == "admin"
    finally:
        server.stop()
    # Every line hutch wrote on stderr is one JSON object (json.loads above would have
    # raised on the first that was not).
    assert all(json.loads(line) for line in server.stderr_lines if line.strip())


def test_the_sdk_and_the_cli_read_events_and_manage_webhooks(tmp_path: Path) -> None:
    from hutch.sdk import Client, Webhook, events, follow_events

    fake_image(tmp_path / "images", "devbox:1")
    server = HutchProcess(tmp_path / "home", env={
        "HUTCH_IMAGES_DIR": str(tmp_path / "images"),
        "HUTCH_WEBHOOK_ALLOW_PRIVATE": "127.0.0.1/32"})  # fmt: skip
    server.wait_ready()
    receiver = Receiver()
    try:
        assert server.admin_key is not None
        client = Client(api_url=server.url, api_key=server.admin_key)
        hook = Webhook.create(receiver.url, events=["sandbox.created"], client=client)
        assert hook.info.secret and hook.info.events == ("sandbox.created",)
        api = server.client(server.admin_key)
        box = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"}).json()["data"]["id"]
        seen = events(types=["sandbox.created"], client=client)
        assert [e.subject_id for e in seen] == [box] and seen[0].seq >= 1
        stream = follow_events(since=seen[0].seq, client=client)
        api.post(f"/v1/sandboxes/{box}/pause")
        assert next(e for e in stream if e.subject_id == box).type in (
            "sandbox.running", "sandbox.paused")  # fmt: skip
        delivered = wait_for(lambda: [d for d in Webhook.get(hook.id, client=client).deliveries()
                                      if d.state == "delivered"], "the delivery")  # fmt: skip
        assert delivered[0].event_type == "sandbox.created"

        env = {**{k: v for k, v in os.environ.items() if not k.startswith("HUTCH_")},
               "HUTCH_API_URL": server.url, "HUTCH_API_KEY": server.admin_key}  # fmt: skip

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "hutch", *args], env=env, text=True,
                                  capture_output=True, timeout=60,
                                  stdin=subprocess.DEVNULL)  # fmt: skip

        listed = cli("events", "--json", "--type", "sandbox.created")
        assert listed.returncode == 0, listed.stderr
        assert [e["subject_id"] for e in json.loads(listed.stdout)] == [box]
        table = cli("webhook", "ls")
        assert table.returncode == 0 and hook.id in table.stdout and receiver.url in table.stdout
        log = cli("webhook", "deliveries", hook.id)
        assert log.returncode == 0 and "delivered" in log.stdout
        made = cli("webhook", "create", "ftp://nowhere.test/")
        assert made.returncode == 1 and "url" in made.stderr
        assert cli("webhook", "rm", hook.id).returncode == 0
        assert cli("webhook", "deliveries", hook.id).returncode == 3  # no such webhook now
        no_sample = cli("metrics", box)  # the fake driver reads no usage
        assert no_sample.returncode == 0 and "no sample yet" in no_sample.stdout
        client.close()
    finally:
        receiver.close()
        server.stop()


def test_a_template_build_ends_with_its_event(client: TestClient) -> None:
    made = client.post("/v1/templates", json={"name": "evt", "dockerfile": "FROM devbox:1\n"})
    assert made.status_code in (200, 201, 202), made.text
    template = made.json()["data"]["id"]

    def ended() -> str | None:
        status = str(client.get(f"/v1/templates/{template}").json()["data"]["status"])
        return status if status in ("ready", "failed") else None

    status = wait_for(ended, "the build to end", timeout=120)
    mine = [e for e in events(client, subject_id=template)]
    assert [e["type"] for e in mine] == [f"template.{status}"]
    assert mine[0]["data"]["name"] == "evt"
    # The build's own sandboxes are the platform's: no sandbox events came of them.
    assert not [e for e in events(client) if e["type"].startswith("sandbox.")]
