"""Deploys of projects with a Dockerfile (issue 16), end to end: paid on the local chain,
built by the templates' builder in real runc sandboxes, started with the image's own start
command and served through hutch's proxy."""

from __future__ import annotations

import httpx

from tests.conftest import LocalChains
from tests.e2e.test_deploys_runc import (
    agent,
    files,
    finished,
    paid_deploy,
    server,
    visit,
    wallet,
)
from tests.e2e.test_sandboxes_runc import leftovers
from tests.support.server import HutchProcess
from tests.support.wallet import Wallet

__all__ = ["agent", "server", "wallet"]  # the deploy tests' fixtures, shared

SERVER_PY = """\
import http.server, os

BUILT = open("built.txt").read().strip()


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{os.environ['GREETING']} ({BUILT}) as {os.getuid()} in {os.getcwd()} {self.path}"
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())


http.server.HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Hello).serve_forever()
"""

DOCKERFILE = """\
FROM devbox:1
RUN useradd --uid 1700 web
WORKDIR /srv/app
COPY server.py ./
RUN echo made by RUN > built.txt
ENV GREETING=hello-from-a-dockerfile
USER web
CMD ["python3", "server.py"]
"""


def credits_deploy(agent: httpx.Client, wallet: Wallet, name: str, project: dict[str, str],
                   **settings: object) -> httpx.Response:  # fmt: skip
    """A deploy paid from the wallet's credits (after a failed one gave them back)."""
    payload = {"uniqueName": name, "displayName": f"App {name}", "upload": files(project),
               "settings": settings}  # fmt: skip
    return agent.post(
        "/deploy", json=payload, headers=wallet.headers(**{"X-Use-Existing-Credits": "true"})
    )


def test_a_dockerfile_project_is_built_started_by_its_cmd_redeployed_and_deleted(
    agent: httpx.Client, chains: LocalChains, wallet: Wallet, server: HutchProcess
) -> None:
    project = {"Dockerfile": DOCKERFILE, "server.py": SERVER_PY}
    started = paid_deploy(agent, chains, wallet, "docker-app", files(project), port=8080)
    ready = finished(agent, wallet, started)
    assert ready["status"] == "ready", ready
    assert "building" in ready["seen"] or "deploying" in ready["seen"]
    page = visit(ready["endpoint"], "/x?y=1")
    assert page.text == "hello-from-a-dockerfile (made by RUN) as 1700 in /srv/app /x?y=1"

    # A redeploy builds a new version (only the changed steps) and switches when healthy.
    changed = project | {"Dockerfile": DOCKERFILE.replace("made by RUN", "made again")}
    again = paid_deploy(agent, chains, wallet, "docker-app", files(changed), port=8080)
    assert finished(agent, wallet, again)["status"] == "ready"
    assert visit(ready["endpoint"]).text.startswith("hello-from-a-dockerfile (made again)")

    agent.delete(f"/projects/{started['projectId']}", headers=wallet.headers())
    assert visit(ready["endpoint"]).status_code == 404
    assert not any(leftovers(server.home).values())  # app and build sandboxes all gone


def test_has_dockerfile_wins_over_build_ai_and_run_command_over_cmd(
    agent: httpx.Client, chains: LocalChains, wallet: Wallet
) -> None:
    project = {
        "index.html": "build-ai would serve this",
        "Dockerfile": "FROM devbox:1\nWORKDIR /site\nCOPY index.html ./\n"
        'RUN echo from the image > index.html\nCMD ["false"]\n',
    }
    started = paid_deploy(
        agent, chains, wallet, "docker-flag", files(project), hasDockerfile=True,
        runCommand="python3 -m http.server $PORT --bind $HOST",
    )  # fmt: skip
    ready = finished(agent, wallet, started)
    assert ready["status"] == "ready", ready
    assert visit(ready["endpoint"]).text == "from the image\n"
    agent.delete(f"/projects/{started['projectId']}", headers=wallet.headers())


def test_dockerfile_failures_say_why_and_give_the_credits_back(
    agent: httpx.Client, chains: LocalChains, wallet: Wallet
) -> None:
    failing = {"Dockerfile": 'FROM devbox:1\nRUN echo about to fail && exit 3\nCMD ["true"]\n'}
    started = paid_deploy(agent, chains, wallet, "docker-fail", files(failing))
    failed = finished(agent, wallet, started)
    assert failed["status"] == "failed"
    assert failed["reason"].startswith("build error: the Dockerfile build failed"), failed
    assert "about to fail" in failed["reason"]

    # The credits came back, so this one is paid from them: no start command at all.
    no_cmd = credits_deploy(agent, wallet, "docker-nocmd", {"Dockerfile": "FROM devbox:1\n"})
    assert no_cmd.status_code == 200, no_cmd.text
    nothing = finished(agent, wallet, no_cmd.json())
    assert nothing["status"] == "failed"
    assert "has no start command" in nothing["reason"]

    # A start command that exits at once fails the deploy with its output, without waiting
    # out the health time.
    crash = credits_deploy(agent, wallet, "docker-crash", {
        "Dockerfile": 'FROM devbox:1\nCMD ["sh", "-c", "echo crashing on purpose; exit 4"]\n'
    })  # fmt: skip
    assert crash.status_code == 200, crash.text
    crashed = finished(agent, wallet, crash.json())
    assert crashed["status"] == "failed"
    assert "exited before it answered on port 3000" in crashed["reason"], crashed
    assert "crashing on purpose" in crashed["reason"]

    # Refused before anything is charged: a bad Dockerfile, a missing one.
    bad = credits_deploy(agent, wallet, "docker-bad", {"Dockerfile": "FROM devbox:1\nFOO bar\n"})
    assert bad.status_code == 400 and "line 2" in bad.json()["error"], bad.text
    missing = credits_deploy(agent, wallet, "docker-none", {"index.html": "hi"},
                             hasDockerfile=True)  # fmt: skip
    assert missing.status_code == 400 and "no Dockerfile" in missing.json()["error"]
    for project in agent.get("/projects", headers=wallet.headers()).json()["projects"]:
        agent.delete(f"/projects/{project['id']}", headers=wallet.headers())
