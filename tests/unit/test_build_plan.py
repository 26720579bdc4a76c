import json
import shlex

import pytest

from hutch.build.plan import BuildPlan, PlanError, plan_build

VENV = "python3 -m venv --system-site-packages .venv"
PIP = ".venv/bin/pip install --no-input --disable-pip-version-check --retries 0 --timeout 10"


def pip(arguments: str) -> str:
    """pip install, then without dependencies when the image's packages disagree on pins."""
    return f"({PIP} {arguments} || {PIP} --no-deps {arguments})"


FASTAPI_MAIN = b"from fastapi import FastAPI\n\napp = FastAPI()\n"
FLASK_APP = b"from flask import Flask\n\napp = Flask(__name__)\n"


def package_json(**fields: object) -> bytes:
    return json.dumps({"name": "demo", "version": "1.0.0", **fields}).encode()


NODE_APP = {
    "package.json": package_json(scripts={"build": "tsc", "start": "node dist/server.js"}),
    "package-lock.json": b"{}",
}


# --- precedence -----------------------------------------------------------------------------


def test_explicit_run_wins_over_procfile_and_detection() -> None:
    plan = plan_build(
        {**NODE_APP, "Procfile": b"web: node other.js\n"},
        install="npm ci",
        run="node server.js --port $PORT",
    )
    assert plan == BuildPlan(
        image="node",
        kind="explicit",
        install="npm ci",
        build=None,
        run="node server.js --port $PORT",
        detected="commands from the settings: npm ci, node server.js --port $PORT",
    )


def test_explicit_run_uses_devbox_without_package_json_and_needs_nothing_recognisable() -> None:
    plan = plan_build({"main.go": b"package main\n"}, run="./serve")
    assert (plan.image, plan.kind, plan.install, plan.build, plan.run) == (
        "devbox:1",
        "explicit",
        None,
        None,
        "./serve",
    )


def test_explicit_run_does_not_parse_a_broken_package_json() -> None:
    plan = plan_build({"package.json": b"{oops"}, run="node server.js")
    assert plan.image == "node" and plan.run == "node server.js"


def test_explicit_install_and_build_replace_detected_ones_and_empty_removes_a_step() -> None:
    plan = plan_build(NODE_APP, install="npm install --omit=dev", build="")
    assert plan.kind == "node"
    assert plan.install == "npm install --omit=dev"
    assert plan.build is None
    assert plan.run == "npm start"
    assert plan.detected == "a Node project (package-lock.json): npm install --omit=dev, npm start"


def test_procfile_web_line_wins_over_detection_and_keeps_node_install_and_build() -> None:
    procfile = b"# processes\nworker: node worker.js\nweb: node dist/server.js --port $PORT\n"
    plan = plan_build({**NODE_APP, "Procfile": procfile})
    assert plan.kind == "procfile"
    assert plan.image == "node"
    assert plan.install == "npm ci --no-audit --no-fund"
    assert plan.build == "npm run build"
    assert plan.run == (
        'export PATH="$PWD/node_modules/.bin:$PATH" && node dist/server.js --port $PORT'
    )
    assert plan.detected.startswith("a Procfile web process in a Node project")


def test_procfile_runs_python_tools_from_the_venv_even_without_an_entry_point() -> None:
    plan = plan_build(
        {"requirements.txt": b"gunicorn\n", "Procfile": b"web: gunicorn site:app -b :$PORT\n"}
    )
    assert plan.image == "devbox:1"
    assert plan.install == f"{VENV} && {pip('-r requirements.txt')}"
    assert plan.run == 'export PATH="$PWD/.venv/bin:$PATH" && gunicorn site:app -b :$PORT'


def test_procfile_alone_is_enough() -> None:
    plan = plan_build({"Procfile": b"web: ./bin/server\n", "bin/server": b"#!/bin/sh\n"})
    assert (plan.image, plan.kind, plan.install, plan.build, plan.run) == (
        "devbox:1",
        "procfile",
        None,
        None,
        "./bin/server",
    )


def test_procfile_without_web_line_is_ignored() -> None:
    plan = plan_build({**NODE_APP, "Procfile": b"worker: node worker.js\n"})
    assert plan.kind == "node" and plan.run == "npm start"


def test_procfile_with_empty_web_line_is_an_error() -> None:
    with pytest.raises(PlanError, match="web: line has no command"):
        plan_build({"Procfile": b"web:\n"})


# --- Node -----------------------------------------------------------------------------------


def test_node_with_package_lock_uses_npm_ci_build_and_start() -> None:
    plan = plan_build(NODE_APP)
    assert plan == BuildPlan(
        image="node",
        kind="node",
        install="npm ci --no-audit --no-fund",
        build="npm run build",
        run="npm start",
        detected="a Node project (package-lock.json): npm ci, npm run build, npm start",
    )


def test_node_with_shrinkwrap_uses_npm_ci() -> None:
    plan = plan_build(
        {"package.json": package_json(scripts={"start": "node ."}), "npm-shrinkwrap.json": b"{}"}
    )
    assert plan.install == "npm ci --no-audit --no-fund"


@pytest.mark.parametrize(("lockfile", "tool"), [("yarn.lock", "yarn"), ("pnpm-lock.yaml", "pnpm")])
def test_node_with_yarn_or_pnpm_lock_uses_that_tool_when_present_else_npm(
    lockfile: str, tool: str
) -> None:
    plan = plan_build({"package.json": package_json(scripts={"start": "node ."}), lockfile: b""})
    assert plan.install == (
        f"if command -v {tool} >/dev/null 2>&1; then {tool} install --frozen-lockfile;"
        " else npm install --no-audit --no-fund; fi"
    )
    assert f"({lockfile})" in plan.detected


def test_node_without_lockfile_uses_npm_install_and_no_build_step() -> None:
    plan = plan_build({"package.json": package_json(scripts={"start": "node server.js"})})
    assert plan.install == "npm install --no-audit --no-fund"
    assert plan.build is None
    assert plan.detected == "a Node project (package.json): npm install, npm start"


def test_node_without_start_script_runs_main_quoted() -> None:
    files = {"package.json": package_json(main="./src/my server.js"), "src/my server.js": b""}
    assert plan_build(files).run == "node 'src/my server.js'"


def test_node_main_without_extension_resolves_like_node() -> None:
    files = {"package.json": package_json(main="lib/index"), "lib/index.js": b""}
    assert plan_build(files).run == "node lib/index.js"


def test_node_falls_back_to_a_conventional_entry_file() -> None:
    files = {"package.json": package_json(main="missing.js"), "app.js": b"", "main.js": b""}
    assert plan_build(files).run == "node app.js"


def test_nextjs_without_scripts_builds_and_starts_with_next() -> None:
    files = {"package.json": package_json(dependencies={"next": "14.2.0", "react": "18.3.1"})}
    plan = plan_build(files)
    assert plan.build == "npx --no next build"
    assert plan.run == "npx --no next start -p $PORT"
    assert plan.detected.startswith("a Next.js app (package.json)")


def test_node_without_a_way_to_start_says_to_add_a_start_script() -> None:
    with pytest.raises(PlanError, match=r"add a start script to package.json"):
        plan_build({"package.json": package_json(scripts={"build": "vite build"})})


def test_invalid_package_json_is_an_error_even_with_a_procfile() -> None:
    with pytest.raises(PlanError, match=r"package.json is not valid JSON \(.* line 1"):
        plan_build({"package.json": b'{"scripts": {', "Procfile": b"web: node s.js\n"})


def test_package_json_that_is_not_an_object_is_an_error() -> None:
    with pytest.raises(PlanError, match="not a JSON object"):
        plan_build({"package.json": b"[]"})


# --- Python ---------------------------------------------------------------------------------


def test_fastapi_in_app_main_runs_uvicorn_from_the_venv() -> None:
    files = {
        "requirements.txt": b"fastapi\nuvicorn[standard]\n",
        "app/__init__.py": b"",
        "app/main.py": FASTAPI_MAIN,
        "tests/test_main.py": b"from fastapi import FastAPI\ntest_app = FastAPI()\n",
    }
    plan = plan_build(files)
    assert plan == BuildPlan(
        image="devbox:1",
        kind="python-fastapi",
        install=f"{VENV} && {pip('-r requirements.txt')}",
        build=None,
        run=".venv/bin/python -m uvicorn app.main:app --host 0.0.0.0 --port $PORT",
        detected=(
            "a FastAPI app in app/main.py (requirements.txt):"
            " venv + pip install -r requirements.txt, uvicorn app.main:app"
        ),
    )


def test_fastapi_variable_name_and_annotation_are_read() -> None:
    files = {
        "requirements.txt": b"fastapi\n",
        "main.py": b"import fastapi\napi: fastapi.FastAPI = fastapi.FastAPI(title='x')\n",
    }
    assert plan_build(files).run.startswith(".venv/bin/python -m uvicorn main:api ")


def test_modules_with_unimportable_paths_are_not_used() -> None:
    files = {
        "requirements.txt": b"fastapi\n",
        "my-app/main.py": FASTAPI_MAIN,
        "class/main.py": FASTAPI_MAIN,
        "service/main.py": FASTAPI_MAIN,
    }
    assert "service.main:app" in plan_build(files).run


def test_flask_runs_gunicorn() -> None:
    plan = plan_build({"requirements.txt": b"Flask==2.2.2\n", "app.py": FLASK_APP})
    assert plan.kind == "python-flask"
    assert plan.run == ".venv/bin/python -m gunicorn --bind 0.0.0.0:$PORT app:app"


def test_django_runs_manage_py_runserver() -> None:
    files = {
        "requirements.txt": b"django\n",
        "manage.py": b"#!/usr/bin/env python\n",
        "mysite/settings.py": b"",
    }
    plan = plan_build(files)
    assert plan.kind == "python-django"
    assert plan.run == ".venv/bin/python manage.py runserver 0.0.0.0:$PORT --noreload"


def test_plain_python_script() -> None:
    plan = plan_build({"requirements.txt": b"", "server.py": b"import http.server\n"})
    assert (plan.kind, plan.run) == ("python", ".venv/bin/python server.py")


def test_python_frameworks_tie_break_by_hint_then_dependencies() -> None:
    files = {
        "requirements.txt": b"flask\nfastapi\n",
        "api.py": FASTAPI_MAIN,
        "web.py": FLASK_APP,
    }
    assert plan_build(files).kind == "python-fastapi"  # both named: FastAPI comes first
    assert plan_build({**files, "requirements.txt": b"flask\n"}).kind == "python-flask"
    assert plan_build({**files, "requirements.txt": b"fastapi\n"}).kind == "python-fastapi"
    assert plan_build(files, framework="flask").kind == "python-flask"


def test_pyproject_dependencies_are_installed_without_building_the_project() -> None:
    pyproject = b'[project]\nname = "demo"\ndependencies = ["fastapi>=0.90", "uvicorn"]\n'
    plan = plan_build({"pyproject.toml": pyproject, "main.py": FASTAPI_MAIN})
    assert plan.install == f"{VENV} && {pip(shlex.quote('fastapi>=0.90') + ' uvicorn')}"
    assert plan.kind == "python-fastapi"


def test_pyproject_without_dependencies_only_makes_the_venv() -> None:
    plan = plan_build({"pyproject.toml": b"[tool.ruff]\nline-length = 100\n", "main.py": b""})
    assert plan.install == VENV


def test_invalid_pyproject_is_an_error() -> None:
    with pytest.raises(PlanError, match=r"pyproject.toml is not valid TOML"):
        plan_build({"pyproject.toml": b"[project\n", "main.py": b""})


def test_pyproject_dependencies_that_look_like_pip_options_are_refused() -> None:
    pyproject = b'[project]\ndependencies = ["--index-url=http://example.com"]\n'
    with pytest.raises(PlanError, match="list of requirement strings"):
        plan_build({"pyproject.toml": pyproject, "main.py": b""})


def test_python_without_entry_point_says_what_to_add() -> None:
    with pytest.raises(PlanError, match=r"requirements.txt names fastapi but build-ai found no"):
        plan_build({"requirements.txt": b"fastapi\n", "lib/util.py": b"x = 1\n"})
    with pytest.raises(PlanError, match=r"add a main.py, app.py or server.py"):
        plan_build({"requirements.txt": b"requests\n"})


# --- static and mixed -----------------------------------------------------------------------


def test_static_site_is_served_by_python_http_server() -> None:
    plan = plan_build({"index.html": b"<h1>hi</h1>", "style.css": b""})
    assert plan == BuildPlan(
        image="devbox:1",
        kind="static",
        install=None,
        build=None,
        run="python3 -m http.server $PORT --bind 0.0.0.0",
        detected="a static site (index.html): python3 -m http.server",
    )


def test_package_json_for_tooling_only_does_not_stop_a_static_site() -> None:
    files = {"package.json": package_json(devDependencies={"prettier": "3"}), "index.html": b""}
    assert plan_build(files).kind == "static"


def test_node_project_with_a_build_step_is_not_served_raw() -> None:
    files = {"package.json": package_json(scripts={"build": "vite build"}), "index.html": b""}
    with pytest.raises(PlanError, match="start script"):
        plan_build(files)


def test_static_hint_serves_index_html_over_node() -> None:
    assert plan_build({**NODE_APP, "index.html": b""}, framework="static").kind == "static"


def test_node_and_python_together_follow_the_hint_then_whichever_can_start() -> None:
    files = {**NODE_APP, "requirements.txt": b"flask\n", "app.py": FLASK_APP}
    assert plan_build(files).kind == "node"
    assert plan_build(files, framework="flask").kind == "python-flask"
    tooling = {"package.json": package_json(devDependencies={"tailwindcss": "3"})}
    assert plan_build({**files, **tooling}).kind == "python-flask"


# --- nothing recognised ---------------------------------------------------------------------


def test_unsupported_language_is_named_in_the_error() -> None:
    with pytest.raises(PlanError, match=r"found a Go module \(go.mod\) but cannot build it"):
        plan_build({"go.mod": b"module x\n", "main.go": b"package main\n"})


def test_empty_project_lists_what_build_ai_recognises() -> None:
    with pytest.raises(PlanError) as raised:
        plan_build({"README.md": b"# hi\n"})
    assert str(raised.value) == (
        "build-ai found no package.json, requirements.txt, pyproject.toml, Procfile or"
        " index.html at the root; add one, or set settings.runCommand"
    )


def test_project_nested_in_one_folder_is_pointed_out() -> None:
    with pytest.raises(PlanError, match=r"everything in the upload is inside myapp/"):
        plan_build({"myapp/package.json": package_json(), "myapp/server.js": b""})


def test_loose_python_files_ask_for_requirements_txt() -> None:
    with pytest.raises(PlanError, match=r"add a requirements.txt"):
        plan_build({"app.py": FLASK_APP})


def test_manifests_nested_too_deeply_are_refused_not_crashed_on() -> None:
    with pytest.raises(PlanError, match="too deeply"):
        plan_build({"package.json": b"[" * 100_000 + b"]" * 100_000})
    with pytest.raises(PlanError, match="too deeply"):
        plan_build({"pyproject.toml": b"a = " + b"[" * 100_000 + b"]" * 100_000, "main.py": b""})
