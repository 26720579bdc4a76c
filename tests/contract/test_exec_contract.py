"""``POST /v1/sandboxes/{id}/exec`` as CREATEOS-API.md §5 says, on real runc sandboxes:
the buffered shape, and the stream's wire frames (§5.2, §20.5): ``{"stdout"}``,
``{"stderr"}``, ``{"error"}``, a final ``{"exit_code"}`` and ``{"hb": true}``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.contract.conftest import client_of
from tests.support.server import HutchProcess

FRAME_KEYS = {"stdout", "stderr", "error", "exit_code", "hb"}


@pytest.fixture(scope="module")
def box(runc: HutchProcess) -> Iterator[dict[str, Any]]:
    with client_of(runc) as api:
        api.timeout = httpx.Timeout(120)
        made = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb", "envs": {"STAGE": "c"}})
        assert made.status_code == 201, made.text
        yield {**made.json()["data"], "key": api.headers["X-Api-Key"]}
        api.delete(f"/v1/sandboxes/{made.json()['data']['id']}")


@pytest.fixture
def api(runc: HutchProcess, box: dict[str, Any]) -> Iterator[httpx.Client]:
    with runc.client(box["key"]) as client:
        client.timeout = httpx.Timeout(120)
        yield client


def frames(api: httpx.Client, box: dict[str, Any], *, query: bool = True,
           **body: Any) -> list[dict[str, Any]]:  # fmt: skip
    params = {"stream": "true"} if query else {}
    with api.stream("POST", f"/v1/sandboxes/{box['id']}/exec", params=params, json=body) as got:
        assert got.status_code == 200
        assert got.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in got.iter_lines() if line.strip()]
    for frame in lines:
        assert isinstance(frame, dict) and frame and set(frame) <= FRAME_KEYS, frame
    return lines


def test_buffered_result_shape(api: httpx.Client, box: dict[str, Any]) -> None:
    answer = api.post(f"/v1/sandboxes/{box['id']}/exec",
                      json={"cmd": "sh", "args": ["-c", "echo 2; echo e >&2; exit 5"]})  # fmt: skip
    assert answer.status_code == 200 and answer.json()["status"] == "success"
    data = answer.json()["data"]
    assert set(data) == {"result", "exec_ms"} and data["exec_ms"] >= 0
    assert {k: data["result"][k] for k in ("stdout", "stderr", "exit_code")} == {
        "stdout": "2\n", "stderr": "e\n", "exit_code": 5}  # fmt: skip
    assert data["result"].get("error") is None, "a non-zero exit is not an error"


def test_stdin_and_env_are_honoured(api: httpx.Client, box: dict[str, Any]) -> None:
    """§20.4: both are supported as the docs describe."""
    result = api.post(f"/v1/sandboxes/{box['id']}/exec", json={
        "cmd": "sh", "args": ["-c", 'echo "$STAGE-$EXTRA"; cat'], "stdin": "in",
        "env": {"EXTRA": "x"}}).json()["data"]["result"]  # fmt: skip
    assert result["stdout"] == "c-x\nin"


def test_stream_frames_in_order_with_a_final_exit_code(
    api: httpx.Client, box: dict[str, Any]
) -> None:
    got = frames(api, box, cmd="sh", args=["-c", "echo out; echo err >&2; exit 3"])
    assert {"stdout": "out\n"} in got and {"stderr": "err\n"} in got
    assert got[-1] == {"exit_code": 3}
    assert sum("exit_code" in f for f in got) == 1


def test_stream_in_the_body_is_the_same_as_the_query(
    api: httpx.Client, box: dict[str, Any]
) -> None:
    got = frames(api, box, query=False, cmd="echo body", stream=True)
    assert got == [{"stdout": "body\n"}, {"exit_code": 0}]


def test_heartbeats_while_silent(api: httpx.Client, box: dict[str, Any]) -> None:
    got = frames(api, box, cmd="sleep 6; echo done")
    assert {"hb": True} in got
    assert got[-2:] == [{"stdout": "done\n"}, {"exit_code": 0}]


def test_bytes_that_are_not_utf8_become_replacement_characters(
    api: httpx.Client, box: dict[str, Any]
) -> None:
    # A three-byte character cut across writes stays whole; a lone \xff becomes U+FFFD.
    script = "printf '\\342\\202'; sleep 0.2; printf '\\254 \\377 ok\\n'"
    got = frames(api, box, cmd=script)
    assert "".join(f.get("stdout", "") for f in got) == "€ \ufffd ok\n"


def test_a_command_killed_at_its_timeout_ends_with_an_error_frame(
    api: httpx.Client, box: dict[str, Any]
) -> None:
    got = frames(api, box, cmd="echo started; sleep 30", timeout_secs=1)
    assert got[0] == {"stdout": "started\n"}
    assert any("error" in f for f in got)
    assert "exit_code" in got[-1]


def test_errors_before_the_stream_are_jsend(api: httpx.Client, box: dict[str, Any]) -> None:
    """§5.2: non-2xx replies are JSend JSON, not NDJSON."""
    bad = api.post(f"/v1/sandboxes/{box['id']}/exec", params={"stream": "true"},
                   json={"cmd": "true", "shell": True})  # fmt: skip
    assert bad.status_code == 400 and bad.json()["status"] == "fail"
    assert list(bad.json()["data"]) == ["shell"], "an unknown field is named"
    missing = api.post("/v1/sandboxes/sb_missing/exec", params={"stream": "true"},
                       json={"cmd": "true"})  # fmt: skip
    assert missing.status_code == 404 and missing.json()["status"] == "fail"
