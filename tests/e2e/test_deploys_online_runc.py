"""Deploy builds reach the internet (issue 14): a project whose manifest names a third-party
package is installed at build time from a real registry of the tests' small internet
(verdaccio for npm, pypiserver for PyPI; tests.support.internet), which the operator points
builds at with ``HUTCH_BUILD_ENV``; the app is then served through hutch's proxy and
answers with what the package returns.

The server runs with ``HUTCH_EGRESS_DEFAULT=closed``: a sandbox created without rules
reaches nothing, so these builds pass only because a build sandbox is created open."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LocalChains
from tests.e2e.test_deploys_runc import MONTH, PAY_TO, files, finished, paid_deploy, visit
from tests.e2e.test_sandboxes_runc import runc_server
from tests.support.internet import Internet
from tests.support.server import HutchProcess, remove_instance
from tests.support.wallet import Wallet

NODE_APP = {
    "package.json": json.dumps(
        {
            "name": "uses-a-package",
            "version": "1.0.0",
            "dependencies": {"hutch-hello": "^1.0.0"},
            "scripts": {"start": "node server.js"},
        }
    ),
    "server.js": (
        "const hello = require('hutch-hello');\n"
        "require('http').createServer((req, res) => res.end(`node: ${hello()}`))\n"
        "  .listen(process.env.PORT, process.env.HOST);\n"
    ),
}

PYTHON_APP = {
    "requirements.txt": "hutch-hello==1.0.0\n",
    "main.py": (
        "import os\n"
        "from http.server import BaseHTTPRequestHandler, HTTPServer\n\n"
        "from hutch_hello import hello\n\n\n"
        "class Handler(BaseHTTPRequestHandler):\n"
        "    def do_GET(self) -> None:\n"
        "        body = f'python: {hello()}'.encode()\n"
        "        self.send_response(200)\n"
        "        self.send_header('Content-Length', str(len(body)))\n"
        "        self.end_headers()\n"
        "        self.wfile.write(body)\n\n\n"
        "HTTPServer(('0.0.0.0', int(os.environ['PORT'])), Handler).serve_forever()\n"
    ),
}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, images: Path, chains: LocalChains, internet: Internet
) -> Iterator[HutchProcess]:
    # By name: the build resolves them through hutch's DNS server, which forwards to the
    # small internet's authoritative server (HUTCH_DNS_UPSTREAM).
    build_env = {
        "NPM_CONFIG_REGISTRY": internet.npm_registry,
        "NPM_CONFIG_AUDIT": "false",
        "NPM_CONFIG_FUND": "false",
        "NPM_CONFIG_UPDATE_NOTIFIER": "false",
        "PIP_INDEX_URL": internet.pypi_index,
        "PIP_TRUSTED_HOST": "pypi.test",
    }
    env = {f"HUTCH_{key.upper()}": value for key, value in chains.env().items()}
    process = runc_server(
        tmp_path_factory.mktemp("deploys-online") / "home",
        images,
        env={
            **env,
            "HUTCH_PROXY_ENABLED": "true",
            "HUTCH_PROXY_PORT": "0",
            "HUTCH_PAY_TO": PAY_TO,
            "HUTCH_AGENT_REQUESTS_PER_MINUTE": "1000",
            "HUTCH_AGENT_REQUESTS_PER_MINUTE_PER_ADDRESS": "10000",
            "HUTCH_EGRESS_DEFAULT": "closed",
            "HUTCH_DNS_UPSTREAM": internet.resolver,
            "HUTCH_BUILD_ENV": ",".join(f"{name}={value}" for name, value in build_env.items()),
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
    wallet.fund(chains.arbitrum, chains.tokens["arbitrum"]["usdc"], 4 * MONTH)
    return wallet


def test_a_node_app_gets_its_dependency_from_the_registry_at_build_time(
    agent: httpx.Client, chains: LocalChains, wallet: Wallet
) -> None:
    started = paid_deploy(agent, chains, wallet, "npm-user", files(NODE_APP))
    done = finished(agent, wallet, started)
    assert done["status"] == "ready", done
    # hutch-hello came from verdaccio, and with it its own dependency hutch-dep.
    assert visit(done["endpoint"]).text == "node: hutch-hello and hutch-dep says hi"


def test_a_python_app_gets_its_requirement_from_the_index_at_build_time(
    agent: httpx.Client, chains: LocalChains, wallet: Wallet
) -> None:
    started = paid_deploy(agent, chains, wallet, "pip-user", files(PYTHON_APP))
    done = finished(agent, wallet, started)
    assert done["status"] == "ready", done
    assert visit(done["endpoint"]).text == "python: hutch-hello and hutch-dep says hi"
