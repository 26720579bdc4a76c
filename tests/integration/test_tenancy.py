"""Tenancy: to a second user, another user's objects do not exist.

For every route of the OpenAPI document that names an object (both dialects), a request
with user B's key for user A's sandbox, network or disk gets exactly the answer (status
and body, ids aside) that a made-up id of the same shape gets; references to A's objects
inside bodies are refused the same way; B's lists, counts and errors never carry A's ids
or names; and nothing B asked for changed A's objects. The deploy API is not here: its
seed answers another wallet's project with 403 (tests/integration/test_deploy_api.py).
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from hutch.api.app import create_app
from hutch.host.drivers.fake import FakeDriver
from hutch.settings import Settings
from tests.support.images import fake_image
from tests.support.seaweed import SeaweedS3

BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/v1/sandboxes/{sandbox_id}"): {"name": "renamed-box"},
    ("PATCH", "/v1/webhooks/{webhook_id}"): {"description": "theirs now"},
    ("POST", "/v1/sandboxes/{sandbox_id}/exec"): {"cmd": "echo", "args": ["hi"]},
    ("POST", "/v1/sandboxes/{sandbox_id}/networks"): {"id": "{network_id}"},
    ("POST", "/v1/sandboxes/{sandbox_id}/disks"): {"disk_id": "{disk}", "mount_path": "/d2"},
    ("POST", "/nullspace/v1/sandboxes/{sandbox_id}/timeout"): {"timeout_ms": 60_000},
    ("POST", "/nullspace/v1/sandboxes/{sandbox_id}/exec"): {"command": "echo hi"},
    ("POST", "/nullspace/v1/sandboxes/{sandbox_id}/host"): {"port": 8080},
    ("POST", "/v1/sandboxes/{sandbox_id}/processes"): {"cmd": "true"},
    ("POST", "/v1/sandboxes/{sandbox_id}/processes/{process_id}/input"): {"data_base64": "eA=="},
    ("POST", "/v1/sandboxes/{sandbox_id}/processes/{process_id}/resize"): {"rows": 9, "cols": 9},
    ("POST", "/v1/sandboxes/{sandbox_id}/processes/{process_id}/signal"): {"signal": "SIGTERM"},
}
QUERIES: dict[tuple[str, str], dict[str, str]] = {
    ("PUT", "/v1/sandboxes/{sandbox_id}/files"): {"path": "/tmp/x"},
    ("GET", "/v1/sandboxes/{sandbox_id}/files"): {"path": "/etc/hostname"},
    ("DELETE", "/v1/sandboxes/{sandbox_id}/disks/{disk_id}"): {"mount_path": "/data"},
    ("GET", "/v1/sandboxes/{sandbox_id}/processes/{process_id}/wait"): {"timeout_ms": "0"},
}
_buckets = itertools.count()
# Destroying routes go last, so every other route meets A's objects as they were.
DESTRUCTIVE = ("DELETE",)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    fake_image(tmp_path / "images", "devbox:1")
    settings = Settings(
        home=tmp_path / "home", images_dir=tmp_path / "images", driver="fake", proxy_port=0
    )
    with TestClient(create_app(settings)) as client:
        yield client
    asyncio.run(FakeDriver(settings.home / "fake-sandboxes").cleanup(set()))


def key_for(client: TestClient, user: str) -> dict[str, str]:
    services = client.app.state.services  # type: ignore[attr-defined]
    assert client.portal is not None
    issued = client.portal.call(services.identity.issue_key, user)
    return {"X-Api-Key": issued.key}


def made_up(ident: str) -> str:
    """An id of the same shape that names nothing."""
    return ident[:-6] + ("zzzzzz" if ident[-6:].islower() else "ZZZZZZ")


def normalised(text: str, *idents: str) -> str:
    text = re.sub(r"req_[0-9A-Z]+", "<REQ>", text)
    for ident in idents:
        if len(ident) >= 6:  # ids, names, addresses; not a port number
            text = text.replace(ident, "<ID>")
    return text


@dataclass(frozen=True)
class World:
    """One user's sandbox, network and disk, wired together, with a process running."""

    real: dict[str, str]
    secrets: list[str]


def build_world(client: TestClient, s3: SeaweedS3, owner: dict[str, str], tag: str) -> World:
    box = client.post(
        "/v1/sandboxes", headers=owner, json={"shape": "s-1vcpu-256mb", "name": f"{tag}-box"}
    ).json()["data"]
    net = client.post("/v1/networks", headers=owner, json={"name": f"{tag}-net"}).json()["data"]
    bucket = s3.make_bucket(f"tenancy-{tag}-{next(_buckets)}")
    disk = client.post(
        "/v1/disks",
        headers=owner,
        json={
            "name": f"{tag}-disk",
            "kind": "s3",
            "config": {"bucket": bucket, "endpoint": s3.endpoint, "use_path_style": True},
            "credentials": {"access_key": s3.access_key, "secret_key": s3.secret_key},
        },
    ).json()["data"]
    assert (
        client.post(
            f"/v1/sandboxes/{box['id']}/networks", headers=owner, json={"id": net["id"]}
        ).status_code
        == 200
    )
    assert (
        client.post(
            f"/v1/sandboxes/{box['id']}/disks",
            headers=owner,
            json={"disk_id": disk["id"], "mount_path": "/data"},
        ).status_code
        == 200
    )
    template = client.post(
        "/v1/templates",
        headers=owner,
        json={"name": f"{tag}-tpl", "dockerfile": 'FROM devbox:1\nCMD ["true"]\n'},
    ).json()["data"]
    # Loopback and not allowed: a delivery is refused before any connection (or lookup).
    hook = client.post(
        "/v1/webhooks", headers=owner, json={"url": "http://127.0.0.1:9/hook", "events": ["*"]}
    ).json()["data"]
    key = client.post("/v1/api-keys", headers=owner).json()["data"]
    real = {
        "key_id": key["id"],
        "webhook_id": hook["id"],
        "template_id": template["id"],
        "sandbox_id": box["id"],
        "network_id": net["id"],
        "disk": disk["id"],
        "disk_id": disk["id"],
        "ip": box["ip"],
        "process_id": start_process(client, owner, box["id"]),
        "port": "22",
        # Computer use (the fake driver's sandboxes have no desktop: the sandbox decides).
        "window_id": "0x01a00003",
        "screen": "screen-0",
        "action": "focus",
    }
    secrets = [box["id"], net["id"], disk["id"], box["ip"], f"{tag}-box", f"{tag}-net",
               f"{tag}-disk", bucket, template["id"], f"{tag}-tpl", hook["id"],
               key["id"], key["key"]]  # fmt: skip
    return World(real=real, secrets=secrets)


def start_process(
    client: TestClient, owner: dict[str, str], sandbox_id: str, args: tuple[str, ...] = ("60",)
) -> str:
    started = client.post(
        f"/v1/sandboxes/{sandbox_id}/processes",
        headers=owner,
        json={"cmd": "sleep", "args": list(args)},
    )
    assert started.status_code == 201, started.text
    data = started.json()["data"]
    return str(data.get("process_id") or data["id"])


def object_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every route of both dialects that names an object, destroying ones last."""
    document = client.get("/openapi.json").json()
    routes = [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if "{" in path and not path.startswith("/agent")
    ]
    routes.sort(key=lambda route: route[0] in DESTRUCTIVE)
    assert len(routes) >= 23
    return routes


def request(
    client: TestClient, headers: dict[str, str], method: str, path: str, values: dict[str, str]
) -> tuple[int, str]:
    """``method path`` with the ``{names}`` filled from ``values``, status and normalised text."""
    url = path.format(**{k: v for k, v in values.items() if "{" + k + "}" in path})
    body = BODIES.get((method, path))
    if isinstance(body, dict):
        body = {
            k: (values[v[1:-1]] if isinstance(v, str) and v.startswith("{") else v)
            for k, v in body.items()
        }
    answer = client.request(
        method, url, headers=headers, json=body, params=QUERIES.get((method, path))
    )
    return answer.status_code, normalised(answer.text, *values.values())


def test_another_users_objects_answer_as_missing_ones(client: TestClient, s3: SeaweedS3) -> None:
    alice, bob = key_for(client, "alice"), key_for(client, "bob")
    world = build_world(client, s3, alice, "alpha")
    real, secrets = world.real, world.secrets
    box = {"id": real["sandbox_id"]}
    net = {"id": real["network_id"]}
    disk = {"id": real["disk"]}
    fake = {name: made_up(value) for name, value in real.items()}
    fake |= {"ip": "10.89.255.253", "port": "22", "window_id": "0x01a00003",
             "screen": "screen-0", "action": "focus"}  # fmt: skip

    routes = object_routes(client)
    by_name = [
        ("GET", "/v1/sandboxes/{sandbox_id}", "alpha-box"),
        ("GET", "/v1/networks/{network_id}", "alpha-net"),
        ("GET", "/v1/disks/{disk}", "alpha-disk"),
        ("GET", "/v1/templates/{template_id}", "alpha-tpl"),
    ]

    def ask(method: str, path: str, values: dict[str, str]) -> tuple[int, str]:
        status, text = request(client, bob, method, path, values)
        return status, normalised(text, *real.values(), *fake.values())

    for method, path in routes:
        theirs, missing = ask(method, path, real), ask(method, path, fake)
        assert theirs == missing, (method, path, theirs, missing)
        assert theirs[0] in (400, 404), (method, path, theirs)
        assert not any(secret in theirs[1] for secret in secrets), (method, path, theirs)
    for method, path, name in by_name:
        param = path.split("{")[1].rstrip("}")
        theirs, missing = ask(method, path, {param: name}), ask(method, path, {param: "omega-x"})
        assert theirs[0] == missing[0] == 404
        assert normalised(theirs[1], name) == normalised(missing[1], "omega-x")

    # References inside bodies: A's network or disk is as unknown to B as a made-up one.
    for field, value in (
        ("networks", [{"id": net["id"]}]),
        ("disks", [{"disk_id": disk["id"], "mount_path": "/d"}]),
    ):
        made = {"shape": "s-1vcpu-256mb", field: value}
        theirs = client.post("/v1/sandboxes", headers=bob, json=made)
        assert theirs.status_code == 400
        assert not any(
            secret in theirs.text.replace(value[0].get("id") or value[0]["disk_id"], "")
            for secret in secrets[3:]
        )

    # B's lists and counts hold nothing of A's.
    for url in (
        "/v1/sandboxes",
        "/v1/networks",
        "/v1/disks",
        "/v1/templates",
        "/v1/whoami",
        "/nullspace/v1/sandboxes",
    ):
        text = client.get(url, headers=bob).text
        assert not any(secret in text for secret in secrets), (url, text)
    assert client.get("/v1/sandboxes", headers=bob).json()["data"]["pagination"]["total"] == 0

    # And A's objects are as they were.
    mine = client.get(f"/v1/sandboxes/{box['id']}", headers=alice).json()["data"]
    assert (mine["status"], mine["name"]) == ("running", "alpha-box")
    members = client.get(f"/v1/networks/{net['id']}", headers=alice).json()["data"]["members"]
    assert [m["sandbox_id"] for m in members] == [box["id"]]
    attached = client.get(f"/v1/sandboxes/{box['id']}/disks", headers=alice).json()["data"]["data"]
    assert [a["mount_path"] for a in attached] == ["/data"]


# What CREATEOS-API.md §12 lets a sandbox access token do on its own sandbox, by the part of
# the route after ``/sandboxes/{sandbox_id}``; and what stays with the owner's key.
TOKEN_MAY = re.compile(
    r"^(GET |DELETE |POST /pause|POST /resume|POST /exec|(PUT|GET) /files|"
    r"(GET|POST|DELETE) /processes(/.*)?|GET /(egress|bandwidth)|POST /exec$)"
)
TOKEN_MAY_NOT = re.compile(
    r"^(\w+ /access-token(/rotate)?|PATCH |\w+ /(networks|disks)(/.*)?|POST /(host|timeout)|"
    r"POST /(fork|resize|ssh-pubkeys|snapshot)|PUT /egress|POST /bandwidth/recharge)$"
)
SANDBOX_ROUTE = re.compile(r"^(?:/nullspace)?/v1/sandboxes/\{sandbox_id\}(.*)$")


def test_a_sandbox_access_token_reaches_its_own_sandbox_only(
    client: TestClient, s3: SeaweedS3
) -> None:
    """The third actor: a delegated token of one of A's sandboxes. On that sandbox it works;
    A's other sandbox and B's objects are exactly as missing as made-up ids; every route
    that is not about its sandbox (networks, disks, lists, keys, token management) is a 403."""
    alice, bob = key_for(client, "alice"), key_for(client, "bob")
    world_a, world_b = build_world(client, s3, alice, "alpha"), build_world(client, s3, bob, "beta")
    own = client.post(
        "/v1/sandboxes", headers=alice, json={"shape": "s-1vcpu-256mb", "name": "own-box"}
    ).json()["data"]
    made = client.post(f"/v1/sandboxes/{own['id']}/access-token", headers=alice)
    assert made.status_code == 200, made.text
    token = {"X-Api-Key": made.json()["data"]["token"]}
    bearer = {"Authorization": f"Bearer {made.json()['data']['token']}"}
    mine = {
        **world_a.real,
        "sandbox_id": own["id"],
        "process_id": start_process(client, alice, own["id"]),
    }
    fake = {name: made_up(value) for name, value in world_a.real.items()}
    fake |= {"ip": "10.89.255.253", "port": "22", "window_id": "0x01a00003",
             "screen": "screen-0", "action": "focus"}  # fmt: skip
    secrets = world_a.secrets + world_b.secrets
    every_value = [*world_a.real.values(), *world_b.real.values(), *fake.values()]

    def ask(headers: dict[str, str], method: str, path: str, values: dict[str, str]) -> Any:
        status, text = request(client, headers, method, path, values)
        return status, normalised(text, *every_value)

    for method, path in object_routes(client):
        scoped = SANDBOX_ROUTE.match(path)
        made_up_answer = ask(token, method, path, fake)
        for world in (world_a, world_b):
            theirs = ask(token, method, path, world.real)
            assert theirs == made_up_answer, (method, path, theirs, made_up_answer)
            assert not any(secret in theirs[1] for secret in secrets), (method, path, theirs)
        assert ask(bearer, method, path, world_a.real) == made_up_answer, (method, path)
        if scoped is None:
            assert made_up_answer[0] == 403, (method, path, made_up_answer)
            continue
        route = f"{method} {scoped[1]}"
        assert made_up_answer[0] in (400, 403, 404), (method, path, made_up_answer)
        if method == "DELETE" and scoped[1] == "":
            continue  # destroying its own sandbox comes last, below
        target = mine
        if scoped[1].endswith("/connect"):  # it follows the output to the exit: one that ends
            ended = start_process(client, alice, own["id"], ("0",))
            target = {**mine, "process_id": ended}
        own_answer = ask(token, method, path, target)
        if TOKEN_MAY_NOT.match(route):
            assert own_answer[0] == 403, (method, path, own_answer)
            assert made_up_answer[0] == 403, (method, path, made_up_answer)
        elif TOKEN_MAY.match(route):
            assert own_answer[0] not in (401, 403, 404), (method, path, own_answer)
        else:  # a route this test does not know yet: confined either way
            assert own_answer[0] != 401, (method, path, own_answer)

    # Account routes without an object: a 403 in each dialect's envelope.
    for method, url, body in (
        ("GET", "/v1/sandboxes", None),
        ("POST", "/v1/sandboxes", {"shape": "s-1vcpu-256mb"}),
        ("GET", "/v1/networks", None),
        ("POST", "/v1/networks", {"name": "from-token"}),
        ("GET", "/v1/disks", None),
        ("GET", "/v1/whoami", None),
        ("GET", "/nullspace/v1/sandboxes", None),
        ("POST", "/nullspace/v1/sandboxes", {"template": "devbox:1"}),
    ):
        answer = client.request(method, url, headers=token, json=body)
        assert answer.status_code == 403, (url, answer.text)
        assert not any(secret in answer.text for secret in secrets), (url, answer.text)
        envelope = answer.json()
        assert (envelope["error"]["code"] if url.startswith("/nullspace") else
                envelope["status"]) in ("forbidden", "fail")  # fmt: skip

    # Nothing of A's or B's changed; the own sandbox is still there and works by name too.
    for owner, world in ((alice, world_a), (bob, world_b)):
        box = client.get(f"/v1/sandboxes/{world.real['sandbox_id']}", headers=owner).json()
        assert box["data"]["status"] == "running"
    ran = client.post("/v1/sandboxes/own-box/exec", headers=token, json={"cmd": "echo hi"})
    assert ran.json()["data"]["result"]["stdout"] == "hi\n"
    assert client.get("/v1/networks", headers=alice).json()["data"]["pagination"]["total"] == 1

    # WebSockets (not in the OpenAPI document) follow the same rule.
    def ws_refusal(url: str) -> tuple[int, str]:
        """A refused WebSocket: a close code (4000 + status) or an HTTP denial, and its text."""
        try:
            with client.websocket_connect(url, headers=token) as socket:
                socket.receive_bytes()
        except WebSocketDenialResponse as denied:  # a WebSocketDisconnect too: first
            return denied.status_code, normalised(denied.text, *every_value)
        except WebSocketDisconnect as closed:
            return closed.code - 4000, normalised(closed.reason, *every_value)
        raise AssertionError(f"{url} was accepted")

    for template in ("/v1/sandboxes/{sandbox_id}/processes/{process_id}/ws",
                     "/v1/sandboxes/{sandbox_id}/shell-ws"):  # fmt: skip
        urls = {name: template.format(**values) for name, values in
                (("a", world_a.real), ("b", world_b.real), ("fake", fake))}  # fmt: skip
        made_up_ws = ws_refusal(urls["fake"])
        assert made_up_ws[0] == 404, made_up_ws
        assert ws_refusal(urls["a"]) == ws_refusal(urls["b"]) == made_up_ws
    # (the loop above ended its process with DELETE …/processes/{p}: a new one)
    own_ws = f"/v1/sandboxes/{own['id']}/processes/{start_process(client, token, own['id'])}/ws"
    with client.websocket_connect(own_ws, headers=token):
        pass  # accepted: its own sandbox's process

    # It may destroy its own sandbox, and it dies with it.
    assert client.delete(f"/v1/sandboxes/{own['id']}", headers=token).status_code == 200
    assert client.get(f"/v1/sandboxes/{own['id']}", headers=token).status_code == 401
