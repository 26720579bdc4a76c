"""Property-based tests (hypothesis) of what users type: names, paths, pagination, and the
deploy body and upload. Whatever comes in, the answer is a success or a 4xx in the
dialect's envelope, never a 5xx, and a success means what it says."""

from __future__ import annotations

import asyncio
import base64
import io
import string
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hutch.api.app import create_app
from hutch.build.plan import BuildPlan, PlanError, plan_build
from hutch.build.upload import UploadError, files_from_base64, files_from_zip
from hutch.core.names import NAME_PATTERN
from hutch.host.drivers.fake import FakeDriver
from hutch.settings import Settings
from tests.support.images import fake_image

SETTINGS = settings(
    database=None,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
names = st.one_of(
    st.text(alphabet=string.ascii_lowercase + string.digits + "-", max_size=70),
    st.text(max_size=70),
)
paths = st.one_of(
    st.text(alphabet=string.ascii_letters + "/._- ", max_size=60).map(lambda p: "/" + p),
    st.text(max_size=60),
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("properties")
    fake_image(root / "images", "devbox:1")
    config = Settings(
        home=root / "home",
        images_dir=root / "images",
        driver="fake",
        proxy_enabled=False,
        max_running_per_user=500,
    )
    with TestClient(create_app(config)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        assert client.portal is not None
        client.headers["X-Api-Key"] = client.portal.call(services.identity.issue_key, "prop").key
        yield client
    asyncio.run(FakeDriver(config.home / "fake-sandboxes").cleanup(set()))


@pytest.fixture(scope="module")
def box(client: TestClient) -> dict[str, Any]:
    made = client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb", "name": "prop-box"})
    assert made.status_code == 201
    data: dict[str, Any] = made.json()["data"]
    return data


@SETTINGS
@given(name=names)
def test_any_network_name_is_made_exactly_when_valid(client: TestClient, name: str) -> None:
    answer = client.post("/v1/networks", json={"name": name})
    assert answer.status_code in (200, 400, 409), answer.text
    if answer.status_code == 200:
        made = answer.json()["data"]
        assert made["name"] == name
        assert client.get(f"/v1/networks/{made['id']}").json()["data"]["name"] == name
        assert client.delete(f"/v1/networks/{made['id']}").status_code == 200
    else:
        assert answer.json()["status"] == "fail"


@SETTINGS
@given(name=names)
def test_a_sandbox_gets_any_valid_name_and_refuses_the_rest(
    client: TestClient, box: dict[str, Any], name: str
) -> None:
    answer = client.patch(f"/v1/sandboxes/{box['id']}", json={"name": name})
    valid = bool(NAME_PATTERN.fullmatch(name))
    assert answer.status_code == (200 if valid else 400), answer.text
    if valid:
        assert client.get(f"/v1/sandboxes/{box['id']}").json()["data"]["name"] == name
    else:
        assert answer.json()["data"]["name"]


@SETTINGS
@given(path=paths, data=st.binary(max_size=512))
def test_files_at_any_path_read_back_or_are_refused(
    client: TestClient, box: dict[str, Any], path: str, data: bytes
) -> None:
    url = f"/v1/sandboxes/{box['id']}/files"
    written = client.put(url, params={"path": path}, content=data)
    assert written.status_code in (200, 400, 404, 409), written.text
    if written.status_code == 200:
        assert client.get(url, params={"path": path}).content == data
    else:
        assert written.json()["status"] == "fail"


@SETTINGS
@given(limit=st.integers(-5, 600), offset=st.one_of(st.integers(-5, 40), st.integers()))
def test_pagination_is_a_slice_or_a_400(client: TestClient, limit: int, offset: int) -> None:
    for url in ("/v1/sandboxes", "/v1/networks", "/v1/disks"):
        answer = client.get(url, params={"limit": limit, "offset": offset})
        if 1 <= limit <= 500 and 0 <= offset <= 1_000_000_000:
            assert answer.status_code == 200, answer.text
            page = answer.json()["data"]
            total, items = page["pagination"]["total"], page["data"]
            assert len(items) == page["pagination"]["count"] == max(0, min(limit, total - offset))
        else:
            assert answer.status_code == 400 and answer.json()["status"] == "fail"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


entries = st.dictionaries(
    st.text(alphabet=string.ascii_letters + "/._-", min_size=1, max_size=30),
    st.binary(max_size=64),
    max_size=6,
)


@SETTINGS
@given(files=entries)
def test_uploads_unpack_inside_the_project_or_are_refused(files: dict[str, bytes]) -> None:
    try:
        got = files_from_base64(((p, _b64(d)) for p, d in files.items()), max_bytes=1 << 20)
    except UploadError as exc:
        assert exc.field.startswith("upload.files")
        return
    for path in got:
        assert (
            not path.startswith("/") and ".." not in path.split("/") and "" not in path.split("/")
        )
    assert sorted(got.values()) == sorted(files.values())


@SETTINGS
@given(files=entries, raw=st.binary(max_size=200))
def test_any_zip_or_garbage_unpacks_safely_or_is_refused(
    files: dict[str, bytes], raw: bytes
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    for blob in (buffer.getvalue(), raw, buffer.getvalue()[: len(raw)]):
        try:
            got = files_from_zip(_b64(blob), max_bytes=1 << 20)
        except UploadError as exc:
            assert exc.field == "upload.content"
            continue
        assert all(not p.startswith("/") and ".." not in p.split("/") for p in got)


manifests = st.dictionaries(
    st.sampled_from(
        [
            "package.json",
            "requirements.txt",
            "pyproject.toml",
            "Procfile",
            "index.html",
            "main.py",
            "app.py",
            "manage.py",
            "server.js",
            "go.mod",
            "app/main.py",
            "package-lock.json",
            "yarn.lock",
        ]
    ),
    st.one_of(
        st.binary(max_size=80),
        st.sampled_from(
            [
                b"{}",
                b'{"scripts": {"start": "node x"}}',
                b"web: run $PORT",
                b"from fastapi import FastAPI\napp = FastAPI()\n",
                b"flask\n",
                b'[project]\ndependencies = ["a"]\n',
            ]
        ),
    ),
    max_size=5,
)


@SETTINGS
@given(
    project=manifests,
    run=st.one_of(st.none(), st.text(max_size=20)),
    framework=st.one_of(st.none(), st.text(max_size=10)),
)
def test_build_ai_plans_or_says_what_to_add(
    project: dict[str, bytes], run: str | None, framework: str | None
) -> None:
    try:
        plan = plan_build(project, run=run, framework=framework)
    except PlanError as exc:
        assert str(exc)
        return
    assert isinstance(plan, BuildPlan) and plan.run.strip()
    assert plan.image in ("node", "devbox:1")


@pytest.fixture(scope="module")
def agent_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("agent-properties")
    fake_image(root / "images", "devbox:1")
    config = Settings(
        home=root / "home",
        images_dir=root / "images",
        driver="fake",
        proxy_port=0,
        pay_to="0x" + "5" * 40,
        agent_requests_per_minute=100_000,
        agent_requests_per_minute_per_address=100_000,
    )
    with TestClient(create_app(config)) as client:
        yield client
    asyncio.run(FakeDriver(config.home / "fake-sandboxes").cleanup(set()))


text_or_junk = st.one_of(
    st.text(max_size=40),
    st.integers(),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
deploy_bodies = st.fixed_dictionaries(
    {},
    optional={
        "uniqueName": st.one_of(st.from_regex(r"\A[a-z0-9-]{2,34}\Z"), text_or_junk),
        "displayName": text_or_junk,
        "description": text_or_junk,
        "months": st.one_of(st.integers(-2, 200), st.floats(allow_nan=False), text_or_junk),
        "settings": st.one_of(
            text_or_junk,
            st.fixed_dictionaries(
                {},
                optional={
                    "port": st.one_of(st.integers(-1, 70000), text_or_junk),
                    "runtime": st.one_of(
                        st.sampled_from(["build-ai", "node", "python", "x"]), text_or_junk
                    ),
                    "useBuildAI": st.one_of(st.booleans(), text_or_junk),
                    "runCommand": text_or_junk,
                    "hasDockerfile": st.one_of(st.booleans(), text_or_junk),
                },
            ),
        ),
        "upload": st.one_of(
            text_or_junk,
            st.fixed_dictionaries(
                {"type": st.one_of(st.sampled_from(["files", "zip"]), text_or_junk)},
                optional={
                    "files": st.one_of(
                        text_or_junk,
                        st.lists(
                            st.fixed_dictionaries(
                                {
                                    "path": text_or_junk,
                                    "content": st.one_of(
                                        st.binary(max_size=30).map(
                                            lambda b: base64.b64encode(b).decode()
                                        ),
                                        text_or_junk,
                                    ),
                                }
                            ),
                            max_size=3,
                        ),
                    ),
                    "content": st.one_of(
                        st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode()),
                        text_or_junk,
                    ),
                },
            ),
        ),
    },
)


WHOLE_BODY = {
    "uniqueName": "prop-app",
    "displayName": "Property app",
    "upload": {"type": "files", "files": [{"path": "index.html", "content": _b64(b"hi")}]},
}
one_field_off = st.builds(
    lambda key, value: {**WHOLE_BODY, key: value},
    st.sampled_from([*WHOLE_BODY, "months", "settings", "description"]),
    text_or_junk,
)


@SETTINGS
@given(document=st.one_of(st.just(WHOLE_BODY), one_field_off, deploy_bodies))
def test_any_deploy_body_is_refused_or_quoted_never_a_5xx(
    agent_client: TestClient, document: dict[str, Any]
) -> None:
    from tests.support.wallet import Wallet

    answer = agent_client.post("/agent/deploy", json=document, headers=Wallet.new().headers())
    assert answer.status_code in (400, 402), answer.text
    body = answer.json()
    assert body["error"]
    if answer.status_code == 400:
        assert body.get("field")
    else:  # only a body that is whole gets as far as the price
        assert body["amount_token"] == "500000" and body["pay_to"] == "0x" + "5" * 40
