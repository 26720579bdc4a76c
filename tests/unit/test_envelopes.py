"""The error machinery, in-process: every failure answers in its dialect's envelope."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError

from hutch.api.app import create_app
from hutch.core.errors import Conflict, RateLimited
from hutch.settings import Settings


class Thing(BaseModel):
    name: str
    size: int


def _app_with_probe_routes(settings: Settings) -> FastAPI:
    """The real app plus a few routes that fail on purpose, to exercise the handlers."""
    app = create_app(settings)

    @app.post("/v1/probe/things")
    async def create_thing(thing: Thing) -> Thing:
        return thing

    @app.post("/nullspace/v1/probe/things")
    async def create_nullspace_thing(thing: Thing) -> Thing:
        return thing

    @app.get("/v1/probe/crash")
    async def crash() -> None:
        raise RuntimeError("secret internals /etc/shadow")

    @app.get("/v1/probe/database-down")
    async def database_down() -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    @app.get("/v1/probe/conflict")
    async def conflict() -> None:
        raise Conflict("sandbox is paused; resume it first", field="status")

    @app.get("/v1/probe/slow-down")
    async def slow_down() -> None:
        raise RateLimited("too many running sandboxes", headers={"Retry-After": "5"})

    return app


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    settings = settings.model_copy(update={"max_json_body_bytes": 4096})
    with TestClient(_app_with_probe_routes(settings), raise_server_exceptions=False) as client:
        yield client


def test_malformed_json_is_a_400_naming_the_body(client: TestClient) -> None:
    response = client.post(
        "/v1/probe/things", content=b'{"name": "x",', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "fail"
    assert body["data"]["body"].startswith("malformed JSON")


def test_wrong_fields_are_each_named(client: TestClient) -> None:
    response = client.post("/v1/probe/things", json={"size": "big"})
    assert response.status_code == 400
    assert response.json() == {
        "status": "fail",
        "data": {
            "name": "Field required",
            "size": "Input should be a valid integer, unable to parse string as an integer",
        },
    }


def test_missing_body_is_a_400(client: TestClient) -> None:
    response = client.post("/v1/probe/things")
    assert response.status_code == 400
    assert response.json() == {
        "status": "fail",
        "data": {"body": "a JSON request body is required"},
    }


def test_oversized_declared_body_is_a_413_before_it_is_read(client: TestClient) -> None:
    response = client.post(
        "/v1/probe/things",
        content=b"x" * 5000,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json() == {
        "status": "fail",
        "data": {"body": "request body is larger than 4096 bytes"},
    }


def test_oversized_chunked_body_is_a_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    response = client.post(
        "/v1/probe/things", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["status"] == "fail"


def test_crash_is_a_jsend_error_without_internals(client: TestClient) -> None:
    response = client.get("/v1/probe/crash")
    assert response.status_code == 500
    body = response.json()
    assert body == {
        "status": "error",
        "message": "internal error; the server log has the details",
        "code": 500,
    }
    assert "shadow" not in response.text
    assert response.headers["X-Request-ID"].startswith("req_")


def test_database_errors_are_503(client: TestClient) -> None:
    response = client.get("/v1/probe/database-down")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error" and body["code"] == 503
    assert "database" in body["message"]


def test_domain_errors_keep_their_status_field_and_headers(client: TestClient) -> None:
    response = client.get("/v1/probe/conflict")
    assert response.status_code == 409
    assert response.json() == {
        "status": "fail",
        "data": {"status": "sandbox is paused; resume it first"},
    }
    response = client.get("/v1/probe/slow-down")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "5"


def test_request_id_is_echoed_when_sane_and_made_otherwise(client: TestClient) -> None:
    assert (
        client.get("/healthz", headers={"X-Request-ID": "trace-123"}).headers["X-Request-ID"]
        == "trace-123"
    )
    made = client.get("/healthz", headers={"X-Request-ID": "bad id\twith junk"}).headers[
        "X-Request-ID"
    ]
    assert re.fullmatch(r"req_[0-9A-Z]{26}", made)
    first = client.get("/healthz").headers["X-Request-ID"]
    second = client.get("/healthz").headers["X-Request-ID"]
    assert first != second


def test_nullspace_routes_answer_in_the_nullspace_envelope(client: TestClient) -> None:
    response = client.post("/nullspace/v1/probe/things", json={"name": "x"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"] == "size: Field required"
    assert error["request_id"] == response.headers["X-Request-ID"]

    response = client.get("/nullspace/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "route_not_found"


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    response = client.get("/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json() == {
        "status": "fail",
        "data": {"message": "no such route: GET /v1/no-such-thing"},
    }
    response = client.post("/v1/shapes")
    assert response.status_code == 405
    assert response.json()["status"] == "fail"
    assert "GET" in response.headers["Allow"]
