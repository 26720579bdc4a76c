"""``PUT``/``GET /v1/sandboxes/{id}/files`` as CREATEOS-API.md §6 and §20.13 say, on real
runc sandboxes: raw bytes both ways, parents made, ``{bytes, path}``, a per-file cap (this
server's is lowered to 1 MiB, ``HUTCH_FILES_MAX_BYTES``; the default is 500 MiB) that is a
413 leaving nothing behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.contract.conftest import FILES_MAX_BYTES, client_of
from tests.support.server import HutchProcess


@pytest.fixture(scope="module")
def box(runc: HutchProcess) -> Iterator[dict[str, Any]]:
    with client_of(runc) as api:
        made = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
        assert made.status_code == 201, made.text
        yield {**made.json()["data"], "key": api.headers["X-Api-Key"]}
        api.delete(f"/v1/sandboxes/{made.json()['data']['id']}")


@pytest.fixture
def files(runc: HutchProcess, box: dict[str, Any]) -> Iterator[httpx.Client]:
    with runc.client(box["key"]) as client:
        client.timeout = httpx.Timeout(120)
        client.base_url = httpx.URL(f"{runc.url}/v1/sandboxes/{box['id']}/")
        yield client


def exists(files: httpx.Client, path: str) -> bool:
    return files.get("files", params={"path": path}).status_code == 200


def test_upload_makes_parents_and_answers_bytes_and_path(files: httpx.Client) -> None:
    data = os.urandom(70_000)
    put = files.put("files", params={"path": "/work/new/deeper/blob.bin"}, content=data,
                    headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert put.status_code == 200, put.text
    written = {"bytes": len(data), "path": "/work/new/deeper/blob.bin"}
    assert put.json() == {"status": "success", "data": written}
    got = files.get("files", params={"path": "/work/new/deeper/blob.bin"})
    assert got.status_code == 200 and got.content == data, "download is raw bytes, not JSend"


def test_a_file_at_the_cap_is_accepted(files: httpx.Client) -> None:
    put = files.put("files", params={"path": "/cap/exact"}, content=b"x" * FILES_MAX_BYTES)
    assert put.status_code == 200 and put.json()["data"]["bytes"] == FILES_MAX_BYTES


def test_over_the_cap_is_a_413_and_nothing_is_written(files: httpx.Client) -> None:
    too_big = b"y" * (FILES_MAX_BYTES + 1)
    put = files.put("files", params={"path": "/big/declared.bin"}, content=too_big)
    assert put.status_code == 413
    assert put.json()["status"] == "fail" and put.json()["data"]
    assert not exists(files, "/big/declared.bin")

    def undeclared() -> Iterator[bytes]:  # chunked: no Content-Length to refuse it early
        for _ in range(4):
            yield b"z" * (FILES_MAX_BYTES // 2)

    put = files.put("files", params={"path": "/big/streamed.bin"}, content=undeclared())
    assert put.status_code == 413 and put.json()["status"] == "fail"
    assert not exists(files, "/big/streamed.bin")


def test_an_oversized_upload_keeps_the_old_file(files: httpx.Client) -> None:
    assert files.put("files", params={"path": "/keep.txt"}, content=b"old").status_code == 200
    put = files.put("files", params={"path": "/keep.txt"}, content=b"n" * (FILES_MAX_BYTES + 1))
    assert put.status_code == 413
    assert files.get("files", params={"path": "/keep.txt"}).content == b"old"


def test_errors_are_jsend(files: httpx.Client, runc: HutchProcess) -> None:
    for path, status in (("relative", 400), ("/a/../b", 400), ("/missing/file", 404)):
        got = files.get("files", params={"path": path})
        assert got.status_code == status and got.json()["status"] == "fail", path
    assert files.get("files").status_code == 400
    with runc.client("hk_wrong") as stranger:
        assert stranger.get(f"{files.base_url}files", params={"path": "/x"}).status_code == 401
