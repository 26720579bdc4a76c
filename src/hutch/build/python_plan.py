"""build-ai's Python detection: requirements.txt or pyproject.toml, then how to start the app
(Django's manage.py, a FastAPI or Flask app assigned at a module's top level, or a script).
The rules are :mod:`hutch.build.plan`'s docstring, item 4."""

from __future__ import annotations

import keyword
import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass

from hutch.build.stacks import DEVBOX_IMAGE, RUN_SETTING, PlanError, Stack, Step, text

__all__ = ["python_stack"]

_VENV = "python3 -m venv --system-site-packages .venv"
_PIP = ".venv/bin/pip install --no-input --disable-pip-version-check --retries 0 --timeout 10"
_PYTHON_SCRIPTS = ("main.py", "app.py", "server.py")
# Module stems tried first when several modules define an app, most conventional first.
_APP_MODULE_STEMS = ("main", "app", "server", "api", "application", "asgi", "wsgi", "__init__")
_SKIPPED_DIRS = frozenset(
    {"node_modules", "__pycache__", "venv", "env", "site-packages", "tests", "test", "migrations"}
)
# What each framework needs to be found, for the error when the dependencies name it.
_FRAMEWORK_ENTRY = {
    "fastapi": "module that assigns FastAPI() to a top-level variable",
    "flask": "module that assigns Flask(__name__) to a top-level variable",
    "django": "manage.py at the root",
}
_REQUIREMENT_NAME = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)")


def _app_assignment(package: str, cls: str) -> re.Pattern[str]:
    return re.compile(
        rf"^(?P<var>[A-Za-z_]\w*)\s*(?::[^=\n]*)?=\s*(?:{package}\.)?{cls}\(", re.MULTILINE
    )


_FASTAPI_APP = _app_assignment("fastapi", "FastAPI")
_FLASK_APP = _app_assignment("flask", "Flask")


@dataclass(frozen=True, kw_only=True)
class _PythonEntry:
    framework: str
    kind: str
    description: str
    run: Step


def _pip(arguments: str) -> str:
    """pip install, then again without dependencies: the image's own packages satisfy what is
    listed but not always each other's pins (Debian's FastAPI names an older Starlette than
    Debian ships), and offline nothing else can be fetched."""
    return f"({_PIP} {arguments} || {_PIP} --no-deps {arguments})"


def python_stack(project: Mapping[str, bytes], hint: str | None) -> Stack | None:
    if "requirements.txt" in project:
        manifest = "requirements.txt"
        requirements = text(project, manifest).splitlines()
        install = Step(
            command=f"{_VENV} && {_pip('-r requirements.txt')}",
            label="venv + pip install -r requirements.txt",
        )
    elif "pyproject.toml" in project:
        manifest = "pyproject.toml"
        requirements = _pyproject_dependencies(text(project, manifest))
        if requirements:
            quoted = " ".join(shlex.quote(requirement) for requirement in requirements)
            install = Step(
                command=f"{_VENV} && {_pip(quoted)}",
                label=f"venv + pip install of pyproject.toml's {len(requirements)} dependencies",
            )
        else:
            install = Step(command=_VENV, label="venv")
    else:
        return None

    named = {name for line in requirements if (name := _requirement_name(line)) is not None}
    entries = _python_entries(project, manifest)
    if not entries:
        return Stack(
            image=DEVBOX_IMAGE,
            kind="python",
            description=f"a Python project ({manifest})",
            install=install,
            missing_run=_python_missing_run(manifest, named),
            bin_dir=".venv/bin",
        )

    def preference(entry: _PythonEntry) -> tuple[bool, bool]:
        return (entry.framework != hint, entry.framework not in named)

    chosen = min(entries, key=preference)  # min is stable: ties keep the detection order
    return Stack(
        image=DEVBOX_IMAGE,
        kind=chosen.kind,
        description=chosen.description,
        install=install,
        run=chosen.run,
        bin_dir=".venv/bin",
    )


def _pyproject_dependencies(text: str) -> list[str]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"pyproject.toml is not valid TOML ({exc}); fix it") from exc
    except RecursionError:
        raise PlanError("pyproject.toml is nested too deeply to read") from None
    project = data.get("project")
    if not isinstance(project, dict):
        return []
    dependencies = project.get("dependencies", [])
    if not isinstance(dependencies, list) or not all(
        isinstance(item, str) and item.strip() and not item.strip().startswith("-")
        for item in dependencies
    ):
        raise PlanError(
            "pyproject.toml's [project] dependencies must be a list of requirement strings,"
            ' such as ["flask>=2"]'
        )
    return [item.strip() for item in dependencies]


def _requirement_name(line: str) -> str | None:
    match = _REQUIREMENT_NAME.match(line)
    if match is None:
        return None
    return re.sub(r"[-_.]+", "-", match["name"]).lower()


def _python_entries(project: Mapping[str, bytes], manifest: str) -> list[_PythonEntry]:
    """Every way to start the project that was found, in the default order of preference."""
    entries: list[_PythonEntry] = []
    if "manage.py" in project:
        entries.append(
            _PythonEntry(
                framework="django",
                kind="python-django",
                description=f"a Django project (manage.py, {manifest})",
                run=Step(
                    command=".venv/bin/python manage.py runserver 0.0.0.0:$PORT --noreload",
                    label="manage.py runserver",
                ),
            )
        )
    modules = _python_modules(project)
    fastapi = _find_app(project, modules, _FASTAPI_APP)
    if fastapi is not None:
        path, target = fastapi
        entries.append(
            _PythonEntry(
                framework="fastapi",
                kind="python-fastapi",
                description=f"a FastAPI app in {path} ({manifest})",
                run=Step(
                    command=(
                        f".venv/bin/python -m uvicorn {shlex.quote(target)}"
                        " --host 0.0.0.0 --port $PORT"
                    ),
                    label=f"uvicorn {target}",
                ),
            )
        )
    flask = _find_app(project, modules, _FLASK_APP)
    if flask is not None:
        path, target = flask
        # gunicorn rather than `flask run`: the image ships it, and it is a production server.
        entries.append(
            _PythonEntry(
                framework="flask",
                kind="python-flask",
                description=f"a Flask app in {path} ({manifest})",
                run=Step(
                    command=(
                        f".venv/bin/python -m gunicorn --bind 0.0.0.0:$PORT {shlex.quote(target)}"
                    ),
                    label=f"gunicorn {target}",
                ),
            )
        )
    script = next((name for name in _PYTHON_SCRIPTS if name in project), None)
    if script is not None:
        entries.append(
            _PythonEntry(
                framework="python",
                kind="python",
                description=f"a Python app ({script}, {manifest})",
                run=Step(
                    command=f".venv/bin/python {shlex.quote(script)}", label=f"python {script}"
                ),
            )
        )
    return entries


def _python_modules(project: Mapping[str, bytes]) -> list[tuple[str, str]]:
    """(path, dotted module name) of importable modules, most likely app modules first."""
    modules: list[tuple[tuple[int, int, str], str, str]] = []
    for path in project:
        if not path.endswith(".py"):
            continue
        *dirs, filename = path.split("/")
        stem = filename[: -len(".py")]
        if any(part.startswith(".") or part in _SKIPPED_DIRS for part in dirs):
            continue
        if stem.startswith("test_") or stem.endswith("_test") or stem in ("conftest", "setup"):
            continue
        parts = dirs if stem == "__init__" else [*dirs, stem]
        if not parts or not all(
            part.isidentifier() and not keyword.iskeyword(part) for part in parts
        ):
            continue
        rank = (
            _APP_MODULE_STEMS.index(stem) if stem in _APP_MODULE_STEMS else len(_APP_MODULE_STEMS)
        )
        modules.append(((len(dirs), rank, path), path, ".".join(parts)))
    return [(path, module) for _, path, module in sorted(modules)]


def _find_app(
    project: Mapping[str, bytes], modules: list[tuple[str, str]], pattern: re.Pattern[str]
) -> tuple[str, str] | None:
    """(path, "module:variable") of the first module assigning the app class at top level."""
    for path, module in modules:
        try:
            source = project[path].decode("utf-8-sig")
        except UnicodeDecodeError:
            continue
        match = pattern.search(source)
        if match is not None and not keyword.iskeyword(match["var"]):
            return path, f"{module}:{match['var']}"
    return None


def _python_missing_run(manifest: str, named: set[str]) -> str:
    framework = next((name for name in _FRAMEWORK_ENTRY if name in named), None)
    if framework is None:
        found = f"build-ai found {manifest} but no way to start the app"
    else:
        found = f"{manifest} names {framework} but build-ai found no {_FRAMEWORK_ENTRY[framework]}"
    return (
        f"{found}: add a main.py, app.py or server.py, a module with app = FastAPI() or"
        " app = Flask(__name__), or Django's manage.py; or add a Procfile with a web: line,"
        f" or set {RUN_SETTING}"
    )
