"""Paid deploys end to end: a wallet pays on a real local chain (anvil), hutch builds the
project in a real sandbox with build-ai and serves it through its proxy at
``http://{uniqueName}.localhost:PORT``. Requests to the proxy go to loopback with the app's
Host header (a browser resolves ``*.localhost`` to loopback by itself)."""

from __future__ import annotations

import base64
import io
import json
import signal
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hutch.proxy.nginx import free_port
from tests.conftest import LocalChains
from tests.e2e.test_sandboxes_runc import leftovers, new_pool, runc_server
from tests.support.server import HutchProcess, remove_instance
from tests.support.wallet import Wallet

PAY_TO = Wallet.new().address
MONTH = 500_000

NODE_APP = {
    "package.json": json.dumps(
        {
            "name": "hello-node",
            "version": "1.0.0",
            "scripts": {"build": "node build.js", "start": "node server.js"},
        }
    ),
    "package-lock.json": json.dumps(
        {
            "name": "hello-node",
            "version": "1.0.0",
            "lockfileVersion": 3,
            "requires": True,
            "packages": {"": {"name": "hello-node", "version": "1.0.0"}},
        }
    ),
    "build.js": "require('fs').writeFileSync('built.txt', 'built by npm run build');",
    "server.js": (
        "const fs = require('fs');\n"
        "require('http').createServer((req, res) => {\n"
        "  res.end(`hello from node (${fs.readFileSync('built.txt')}) ${req.url}`);\n"
        "}).listen(process.env.PORT);\n"
    ),
}

PYTHON_APP = {
    "requirements.txt": "fastapi\nuvicorn\n",
    "main.py": (
        "from fastapi import FastAPI\n\n"
        "app = FastAPI()\n\n\n"
        "@app.get('/')\n"
        "def root() -> dict[str, str]:\n"
        "    return {'hello': 'from fastapi'}\n"
    ),
}


def files(project: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "files",
        "files": [
            {"path": path, "content": base64.b64encode(text.encode()).decode()}
            for path, text in project.items()
        ],
    }


def zipped(project: dict[str, str], folder: str) -> dict[str, Any]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, text in project.items():
            archive.writestr(f"{folder}/{path}", text)
    return {"type": "zip", "content": base64.b64encode(buffer.getvalue()).decode()}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, images: Path, chains: LocalChains
) -> Iterator[HutchProcess]:
    env = {f"HUTCH_{key.upper()}": value for key, value in chains.env().items()}
    process = runc_server(
        tmp_path_factory.mktemp("deploys") / "home",
        images,
        env={
            **env,
            "HUTCH_PROXY_ENABLED": "true",
            "HUTCH_PROXY_PORT": "0",
            "HUTCH_PAY_TO": PAY_TO,
            "HUTCH_AGENT_REQUESTS_PER_MINUTE": "1000",
            "HUTCH_AGENT_REQUESTS_PER_MINUTE_PER_ADDRESS": "10000",
            "HUTCH_DEPLOY_HEALTH_TIMEOUT_S": "20",
        },
    )
    yield process
    process.stop()
    remove_instance(process.home)


@pytest.fixture
def agent(server: HutchProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.url}/agent", timeout=60) as client:
        yield client


@pytest.fixture
def wallet(chains: LocalChains) -> Wallet:
    wallet = Wallet.new()
    wallet.fund(chains.arbitrum, chains.tokens["arbitrum"]["usdc"], 20 * MONTH)
    return wallet


def paid_deploy(
    agent: httpx.Client,
    chains: LocalChains,
    wallet: Wallet,
    name: str,
    upload: dict[str, Any],
    **settings: Any,
) -> dict[str, str]:
    payload = {
        "uniqueName": name,
        "displayName": f"App {name}",
        "upload": upload,
        "settings": settings,
    }
    quote = agent.post("/deploy", json=payload, headers=wallet.headers())
    assert quote.status_code == 402, quote.text
    tx = wallet.pay(
        chains.arbitrum,
        chains.tokens["arbitrum"]["usdc"],
        quote.json()["pay_to"],
        int(quote.json()["amount_token"]),
    )
    answer = agent.post("/deploy", json=payload, headers=wallet.headers(**{"X-Payment-Tx": tx}))
    assert answer.status_code == 200, answer.text
    started: dict[str, str] = answer.json()
    return started


def finished(agent: httpx.Client, wallet: Wallet, started: dict[str, str]) -> dict[str, Any]:
    url = f"/deploy/{started['projectId']}/{started['deploymentId']}/status"
    seen = set()
    for _ in range(600):
        answer = agent.get(url, headers=wallet.headers())
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        seen.add(body.get("deployment_status", body["status"]))
        if body["status"] != "deploying":
            return body | {"seen": seen}
        time.sleep(0.5)
    raise AssertionError(f"still deploying after 5 minutes: {body}")


def visit(endpoint: str, path: str = "/") -> httpx.Response:
    """GET the app through hutch's proxy, as a browser that resolves *.localhost would."""
    host_port = endpoint.removeprefix("http://").rstrip("/")
    port = host_port.rsplit(":", 1)[1]
    return httpx.get(
        f"http://127.0.0.1:{port}{path}", headers={"Host": host_port}, timeout=10, trust_env=False
    )


def test_a_node_app_is_built_served_redeployed_and_deleted(
    agent: httpx.Client, chains: LocalChains, wallet: Wallet, server: HutchProcess
) -> None:
    started = paid_deploy(agent, chains, wallet, "hello-node", files(NODE_APP))
    ready = finished(agent, wallet, started)
    assert ready["status"] == "ready", ready
    assert ready["endpoint"].startswith("http://hello-node.localhost:")
    assert "building" in ready["seen"] or "deploying" in ready["seen"]
    page = visit(ready["endpoint"], "/path?q=1")
    assert page.status_code == 200
    assert page.text == "hello from node (built by npm run build) /path?q=1"
    listed = agent.get("/projects", headers=wallet.headers()).json()
    assert [(p["name"], p["status"], p["url"]) for p in listed["projects"]] == [
        ("hello-node", "active", ready["endpoint"])
    ]

    # A redeploy builds beside the running version and switches when it is healthy.
    changed = NODE_APP | {"build.js": NODE_APP["build.js"].replace("npm run build", "v2")}
    again = paid_deploy(agent, chains, wallet, "hello-node", files(changed))
    assert again["projectId"] == started["projectId"]
    assert finished(agent, wallet, again)["status"] == "ready"
    assert visit(ready["endpoint"]).text == "hello from node (built by v2) /"
    first = agent.get(
        f"/deploy/{started['projectId']}/{started['deploymentId']}/status", headers=wallet.headers()
    ).json()
    assert first["status"] == "ready"  # it was, and its project still serves there

    deleted = agent.delete(f"/projects/{started['projectId']}", headers=wallet.headers())
    assert deleted.json() == {"projectId": started["projectId"], "status": "deleted"}
    assert visit(ready["endpoint"]).status_code == 404
    assert agent.get("/projects", headers=wallet.headers()).json()["count"] == 0
    assert not any(leftovers(server.home).values())  # both sandboxes are gone


def test_a_fastapi_app_from_a_zip_is_served(
    agent: httpx.Client, chains: LocalChains, wallet: Wallet
) -> None:
    started = paid_deploy(
        agent, chains, wallet, "hello-py", zipped(PYTHON_APP, "my-project"), port=8000
    )
    ready = finished(agent, wallet, started)
    assert ready["status"] == "ready", ready
    assert visit(ready["endpoint"]).json() == {"hello": "from fastapi"}
    agent.delete(f"/projects/{started['projectId']}", headers=wallet.headers())


def test_a_static_site_is_served(agent: httpx.Client, chains: LocalChains, wallet: Wallet) -> None:
    site = {"index.html": "<h1>static hello</h1>", "about/index.html": "about us"}
    started = paid_deploy(agent, chains, wallet, "hello-static", files(site))
    ready = finished(agent, wallet, started)
    assert ready["status"] == "ready", ready
    assert visit(ready["endpoint"]).text == "<h1>static hello</h1>"
    assert visit(ready["endpoint"], "/about/").text == "about us"
    agent.delete(f"/projects/{started['projectId']}", headers=wallet.headers())


def test_failures_say_what_went_wrong_and_give_the_credits_back(
    agent: httpx.Client, chains: LocalChains, wallet: Wallet
) -> None:
    broken = NODE_APP | {
        "build.js": "console.error('boom: missing semicolon at line 3');process.exit(2);"
    }
    started = paid_deploy(agent, chains, wallet, "broken-build", files(broken))
    failed = finished(agent, wallet, started)
    assert failed["status"] == "failed"
    assert failed["reason"].startswith("build error: build (npm run build) failed with exit code")
    assert "boom: missing semicolon at line 3" in failed["reason"]

    # The credits came back: the next deploy needs no payment.
    deaf = {"server.py": "import time\nprint('ignoring $PORT', flush=True)\ntime.sleep(600)\n"}
    payload = {
        "uniqueName": "deaf-app",
        "displayName": "Deaf app",
        "upload": files(deaf),
        "settings": {"runCommand": "python3 server.py"},
    }
    answer = agent.post(
        "/deploy", json=payload, headers=wallet.headers(**{"X-Use-Existing-Credits": "true"})
    )
    assert answer.status_code == 200, answer.text
    deaf_failed = finished(agent, wallet, answer.json())
    assert deaf_failed["status"] == "failed"
    assert "never answered HTTP on port 3000" in deaf_failed["reason"]
    assert "ignoring $PORT" in deaf_failed["reason"]
    projects = agent.get("/projects", headers=wallet.headers()).json()["projects"]
    assert {(p["name"], p["status"], p["url"]) for p in projects} == {
        ("broken-build", "failed", None),
        ("deaf-app", "failed", None),
    }
    for project in projects:
        agent.delete(f"/projects/{project['id']}", headers=wallet.headers())


def test_after_kill_9_apps_are_served_again_and_cut_builds_are_refunded(
    tmp_path: Path, images: Path, chains: LocalChains, wallet: Wallet
) -> None:
    home, pool, port = tmp_path / "home", new_pool(), free_port()
    env = {f"HUTCH_{key.upper()}": value for key, value in chains.env().items()} | {
        "HUTCH_PROXY_ENABLED": "true",
        "HUTCH_PROXY_PORT": str(port),
        "HUTCH_PAY_TO": PAY_TO,
        "HUTCH_AGENT_REQUESTS_PER_MINUTE": "1000",
        "HUTCH_AGENT_REQUESTS_PER_MINUTE_PER_ADDRESS": "10000",
    }
    first = runc_server(home, images, pool=pool, env=env)
    agent = httpx.Client(base_url=f"{first.url}/agent", timeout=60)
    served = paid_deploy(agent, chains, wallet, "survivor", files(NODE_APP))
    endpoint = finished(agent, wallet, served)["endpoint"]
    slow = NODE_APP | {"build.js": "setTimeout(() => {}, 600000);"}
    cut = paid_deploy(agent, chains, wallet, "cut-short", files(slow))
    for _ in range(100):  # wait until its build is under way
        if finished_or_stage(agent, wallet, cut) == "building":
            break
        time.sleep(0.2)
    first.stop(signal.SIGKILL)
    moved = free_port()  # and the proxy comes back on another port
    second = runc_server(home, images, pool=pool, env=env | {"HUTCH_PROXY_PORT": str(moved)})
    agent = httpx.Client(base_url=f"{second.url}/agent", timeout=60)
    try:
        [survivor] = [
            p
            for p in agent.get("/projects", headers=wallet.headers()).json()["projects"]
            if p["name"] == "survivor"
        ]
        assert survivor["url"] == endpoint.replace(f":{port}", f":{moved}")
        assert visit(survivor["url"]).text == "hello from node (built by npm run build) /"
        failed = finished(agent, wallet, cut)
        assert failed["status"] == "failed" and "restarted" in failed["reason"]
        # Its credits came back: another month needs no payment.
        again = agent.post(
            "/deploy",
            headers=wallet.headers(**{"X-Use-Existing-Credits": "true"}),
            json={
                "uniqueName": "cut-short",
                "displayName": "Cut short",
                "upload": files({"index.html": "back"}),
            },
        )
        assert again.status_code == 200, again.text
        assert finished(agent, wallet, again.json())["status"] == "ready"
        for project in agent.get("/projects", headers=wallet.headers()).json()["projects"]:
            agent.delete(f"/projects/{project['id']}", headers=wallet.headers())
        assert not any(leftovers(home).values())
    finally:
        agent.close()
        second.stop()
        remove_instance(home)


def finished_or_stage(agent: httpx.Client, wallet: Wallet, started: dict[str, str]) -> str:
    url = f"/deploy/{started['projectId']}/{started['deploymentId']}/status"
    body = agent.get(url, headers=wallet.headers()).json()
    return str(body.get("deployment_status", body["status"]))
