"""build-ai: recognise an uploaded project and plan the commands that build and serve it.

A project is a mapping of relative POSIX path to file bytes. :func:`plan_build` reads only
that mapping and returns a :class:`BuildPlan`: shell command lines that hutch runs with
``sh -c`` in ``/app`` inside a sandbox with no network access, where ``PORT`` is set and
``HOST=0.0.0.0``. A project whose dependencies all ship in the image builds offline.

What build-ai recognises, in this order (only files at the root of the upload count):

1. Explicit commands. A given run command is used as it is, with the given install and
   build commands (none when not given); the image is ``node`` when there is a package.json,
   else ``devbox:1``. Install or build commands given without a run command replace the
   detected ones, and an empty one removes the step.
2. A ``Procfile`` with a ``web:`` line. Its command is the run command (``$PORT`` works),
   with ``.venv/bin`` or ``node_modules/.bin`` first on ``PATH``; install and build come
   from the detection below when it recognises the project. A Procfile without a ``web:``
   line is ignored.
3. Node, from ``package.json`` (image ``node``).
   Install: ``npm ci`` with package-lock.json or npm-shrinkwrap.json. With yarn.lock or
   pnpm-lock.yaml, ``yarn``/``pnpm install --frozen-lockfile`` when the image has that tool
   and ``npm install`` when it does not (the ``node`` image ships neither, nor corepack).
   Otherwise ``npm install``.
   Build: ``npm run build`` when scripts.build exists; ``next build`` for a Next.js app
   (``next`` among the dependencies) without one.
   Run: ``npm start`` when scripts.start exists; else ``next start -p $PORT`` for a Next.js
   app; else ``node <main>`` when package.json's main file exists; else ``node`` on the first
   of server.js, index.js, app.js, main.js.
4. Python, from ``requirements.txt`` or ``pyproject.toml`` (image ``devbox:1``).
   Install: a venv in ``.venv`` that sees the image's packages (Flask, FastAPI, uvicorn,
   gunicorn, Django), then ``pip install -r requirements.txt``, or else a pip install of
   pyproject.toml's ``[project] dependencies`` (retried with ``--no-deps`` when that fails,
   for packages the image has whose own pins disagree); the project itself is not
   installed, as its build backend would have to be downloaded.
   Run, from what is found: Django (``manage.py``): ``manage.py runserver 0.0.0.0:$PORT``;
   FastAPI (a module that assigns ``FastAPI(...)`` to a top-level variable, such as
   ``app = FastAPI()`` in main.py or app/main.py): uvicorn; Flask (a module that assigns
   ``Flask(...)`` to a top-level variable): gunicorn; otherwise the venv's python on the
   first of main.py, app.py, server.py. When several are found the ``framework`` hint picks,
   then the framework the dependencies name, then the order above.
5. Static, from ``index.html`` (image ``devbox:1``): ``python3 -m http.server $PORT``. A
   project that Node or Python gives no way to start and no build step is served as static
   when it has an index.html.

The ``framework`` hint (``node``, ``express``, ``next``, ``python``, ``django``, ``fastapi``,
``flask`` or ``static``) breaks ties: it picks Node or Python when a project has both a
package.json and a Python manifest (without it Node wins, unless only Python has a way to
start), and ``static`` serves index.html whatever else is there. Anything else (go.mod,
Cargo.toml, Gemfile, a Dockerfile, ...) raises :class:`PlanError` saying what to add.
"""

from __future__ import annotations

import json
import keyword
import posixpath
import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DEVBOX_IMAGE", "NODE_IMAGE", "BuildPlan", "PlanError", "plan_build"]

NODE_IMAGE = "node"
DEVBOX_IMAGE = "devbox:1"

_RUN_SETTING = "settings.runCommand"
_NPM_INSTALL = "npm install --no-audit --no-fund"
_VENV = "python3 -m venv --system-site-packages .venv"
_PIP = ".venv/bin/pip install --no-input --disable-pip-version-check --retries 0 --timeout 10"
_STATIC_RUN = "python3 -m http.server $PORT --bind 0.0.0.0"

_NODE_HINTS = frozenset({"node", "nodejs", "express", "next", "nextjs", "next.js"})
_PYTHON_HINTS = frozenset({"python", "django", "fastapi", "flask"})
_NODE_ENTRY_FILES = ("server.js", "index.js", "app.js", "main.js")
_PYTHON_SCRIPTS = ("main.py", "app.py", "server.py")
# Module stems tried first when several modules define an app, most conventional first.
_APP_MODULE_STEMS = ("main", "app", "server", "api", "application", "asgi", "wsgi", "__init__")
_SKIPPED_DIRS = frozenset(
    {"node_modules", "__pycache__", "venv", "env", "site-packages", "tests", "test", "migrations"}
)
_ROOT_MARKERS = ("package.json", "requirements.txt", "pyproject.toml", "Procfile", "index.html")
_UNSUPPORTED = (
    ("go.mod", "a Go module (go.mod)"),
    ("Cargo.toml", "a Rust crate (Cargo.toml)"),
    ("Gemfile", "a Ruby project (Gemfile)"),
    ("composer.json", "a PHP project (composer.json)"),
    ("pom.xml", "a Java project (pom.xml)"),
    ("build.gradle", "a Gradle project (build.gradle)"),
    ("build.gradle.kts", "a Gradle project (build.gradle.kts)"),
    ("mix.exs", "an Elixir project (mix.exs)"),
    ("deno.json", "a Deno project (deno.json)"),
    ("Dockerfile", "a Dockerfile"),
)
# What each framework needs to be found, for the error when the dependencies name it.
_FRAMEWORK_ENTRY = {
    "fastapi": "module that assigns FastAPI() to a top-level variable",
    "flask": "module that assigns Flask(__name__) to a top-level variable",
    "django": "manage.py at the root",
}
_PROCFILE_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_-]+):\s*(?P<command>.*?)\s*$")
_REQUIREMENT_NAME = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)")


def _app_assignment(package: str, cls: str) -> re.Pattern[str]:
    return re.compile(
        rf"^(?P<var>[A-Za-z_]\w*)\s*(?::[^=\n]*)?=\s*(?:{package}\.)?{cls}\(", re.MULTILINE
    )


_FASTAPI_APP = _app_assignment("fastapi", "FastAPI")
_FLASK_APP = _app_assignment("flask", "Flask")


@dataclass(frozen=True, kw_only=True)
class BuildPlan:
    """How to build and serve a project: commands for ``sh -c`` in ``/app`` with ``PORT`` set.

    ``install`` and ``build`` run once, in that order, and are skipped when ``None``; ``run``
    is the long-running command that serves HTTP on ``$PORT``. ``detected`` is one sentence
    for people saying what was recognised and what will run.
    """

    image: str
    kind: str
    install: str | None
    build: str | None
    run: str
    detected: str


class PlanError(Exception):
    """The project cannot be planned; the message says what to add."""


@dataclass(frozen=True, kw_only=True)
class _Step:
    command: str
    label: str


@dataclass(frozen=True, kw_only=True)
class _Stack:
    """What detection recognised; ``run`` is ``None`` when it found no way to start."""

    image: str
    kind: str
    description: str
    install: _Step | None = None
    build: _Step | None = None
    run: _Step | None = None
    missing_run: str = ""
    bin_dir: str | None = None


@dataclass(frozen=True, kw_only=True)
class _PythonEntry:
    framework: str
    kind: str
    description: str
    run: _Step


def plan_build(
    files: Mapping[str, bytes],
    *,
    install: str | None = None,
    build: str | None = None,
    run: str | None = None,
    framework: str | None = None,
) -> BuildPlan:
    """Plan how to build and serve ``files`` (relative POSIX path -> bytes).

    ``install``, ``build`` and ``run`` are commands the user gave, which win over detection
    (an empty ``install`` or ``build`` removes that step); ``framework`` is a lowercase hint
    such as ``"fastapi"`` or ``"static"``. Pure: no I/O. Raises :class:`PlanError` with a
    message that says what to add when the project cannot be planned, or when its
    package.json or pyproject.toml cannot be parsed.
    """
    project = _normalised(files)
    hint = (framework or "").strip().lower() or None
    if run is not None and run.strip():
        image = NODE_IMAGE if "package.json" in project else DEVBOX_IMAGE
        return _assemble(
            image=image,
            kind="explicit",
            description="commands from the settings",
            install=_given(install),
            build=_given(build),
            run=_Step(command=run.strip(), label=run.strip()),
        )
    stack = _detect(project, hint)
    web = _procfile_web(project)
    if web is not None:
        stack = _with_procfile(stack, web)
    elif stack is None:
        raise PlanError(_nothing_recognised(project))
    elif stack.run is None and stack.build is None and "index.html" in project:
        stack = _static_stack()
    if stack.run is None:
        raise PlanError(stack.missing_run)
    return _assemble(
        image=stack.image,
        kind=stack.kind,
        description=stack.description,
        install=stack.install if install is None else _given(install),
        build=stack.build if build is None else _given(build),
        run=stack.run,
    )


def _assemble(
    *,
    image: str,
    kind: str,
    description: str,
    install: _Step | None,
    build: _Step | None,
    run: _Step,
) -> BuildPlan:
    steps = ", ".join(step.label for step in (install, build, run) if step is not None)
    return BuildPlan(
        image=image,
        kind=kind,
        install=install.command if install else None,
        build=build.command if build else None,
        run=run.command,
        detected=f"{description}: {steps}",
    )


def _given(command: str | None) -> _Step | None:
    if command is None or not command.strip():
        return None
    return _Step(command=command.strip(), label=command.strip())


def _normalised(files: Mapping[str, bytes]) -> dict[str, bytes]:
    project: dict[str, bytes] = {}
    for path, content in files.items():
        clean = posixpath.normpath(path.lstrip("/"))
        if clean != "." and not clean.startswith("../"):
            project[clean] = content
    return project


def _text(project: Mapping[str, bytes], path: str) -> str:
    try:
        return project[path].decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PlanError(f"{path} is not UTF-8 text; save it as UTF-8") from exc


def _detect(project: Mapping[str, bytes], hint: str | None) -> _Stack | None:
    if hint == "static" and "index.html" in project:
        return _static_stack()
    node = _node_stack(project) if "package.json" in project else None
    python = _python_stack(project, hint)
    if node is not None and python is not None:
        if hint in _PYTHON_HINTS:
            return python
        if hint in _NODE_HINTS:
            return node
        return python if node.run is None and python.run is not None else node
    if node is not None:
        return node
    if python is not None:
        return python
    return _static_stack() if "index.html" in project else None


def _procfile_web(project: Mapping[str, bytes]) -> str | None:
    if "Procfile" not in project:
        return None
    for line in _text(project, "Procfile").splitlines():
        match = _PROCFILE_LINE.match(line)
        if match and match["name"] == "web":
            if not match["command"]:
                raise PlanError(
                    "the Procfile's web: line has no command; add the one that serves $PORT"
                )
            return match["command"]
    return None


def _with_procfile(stack: _Stack | None, web: str) -> _Stack:
    """The Procfile's web command, after whatever install and build detection found."""
    if stack is None:
        return _Stack(
            image=DEVBOX_IMAGE,
            kind="procfile",
            description="a Procfile",
            run=_Step(command=web, label=f"web: {web}"),
        )
    # Procfile commands name tools (gunicorn, next) that the install put in the venv or in
    # node_modules, as on Heroku.
    prefix = f'export PATH="$PWD/{stack.bin_dir}:$PATH" && ' if stack.bin_dir else ""
    return _Stack(
        image=stack.image,
        kind="procfile",
        description=f"a Procfile web process in {stack.description}",
        install=stack.install,
        build=stack.build,
        run=_Step(command=prefix + web, label=f"web: {web}"),
    )


def _static_stack() -> _Stack:
    return _Stack(
        image=DEVBOX_IMAGE,
        kind="static",
        description="a static site (index.html)",
        run=_Step(command=_STATIC_RUN, label="python3 -m http.server"),
    )


# --- Node -----------------------------------------------------------------------------------


def _node_stack(project: Mapping[str, bytes]) -> _Stack:
    try:
        manifest = json.loads(_text(project, "package.json"))
    except json.JSONDecodeError as exc:
        raise PlanError(
            f"package.json is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno});"
            " fix it so build-ai can read its scripts"
        ) from exc
    except RecursionError:
        raise PlanError("package.json is nested too deeply to read") from None
    if not isinstance(manifest, dict):
        raise PlanError('package.json is not a JSON object; it should look like {"scripts": {}}')
    raw_scripts = manifest.get("scripts")
    scripts = (
        {name for name, value in raw_scripts.items() if isinstance(value, str) and value.strip()}
        if isinstance(raw_scripts, dict)
        else set()
    )
    dependencies: set[str] = set()
    for field in ("dependencies", "devDependencies"):
        declared = manifest.get(field)
        if isinstance(declared, dict):
            dependencies.update(declared)
    nextjs = "next" in dependencies

    lockfile, install = _node_install(project)
    build: _Step | None = None
    if "build" in scripts:
        build = _Step(command="npm run build", label="npm run build")
    elif nextjs:
        build = _Step(command="npx --no next build", label="next build")

    run: _Step | None = None
    if "start" in scripts:
        run = _Step(command="npm start", label="npm start")
    elif nextjs:
        run = _Step(command="npx --no next start -p $PORT", label="next start")
    else:
        entry = _node_entry(project, manifest.get("main"))
        if entry is not None:
            run = _Step(command=f"node {shlex.quote(entry)}", label=f"node {entry}")
    return _Stack(
        image=NODE_IMAGE,
        kind="node",
        description=f"{'a Next.js app' if nextjs else 'a Node project'} ({lockfile})",
        install=install,
        build=build,
        run=run,
        missing_run=(
            "build-ai found package.json but no way to start the app: add a start script to"
            ' package.json (such as "scripts": {"start": "node server.js"}), a server.js or'
            f" index.js, or a Procfile with a web: line; or set {_RUN_SETTING}"
        ),
        bin_dir="node_modules/.bin",
    )


def _node_install(project: Mapping[str, bytes]) -> tuple[str, _Step]:
    """The lockfile that decides the install, and the install step."""
    for lockfile in ("package-lock.json", "npm-shrinkwrap.json"):
        if lockfile in project:
            return lockfile, _Step(command="npm ci --no-audit --no-fund", label="npm ci")
    for lockfile, tool in (("yarn.lock", "yarn"), ("pnpm-lock.yaml", "pnpm")):
        if lockfile in project:
            # Neither tool (nor corepack) is in the node image, and corepack would have to
            # download them; npm installs from package.json instead, which works offline
            # when there is nothing to fetch.
            command = (
                f"if command -v {tool} >/dev/null 2>&1;"
                f" then {tool} install --frozen-lockfile; else {_NPM_INSTALL}; fi"
            )
            return lockfile, _Step(
                command=command, label=f"{tool} install (npm install without {tool})"
            )
    return "package.json", _Step(command=_NPM_INSTALL, label="npm install")


def _node_entry(project: Mapping[str, bytes], main: object) -> str | None:
    if isinstance(main, str) and main.strip():
        path = posixpath.normpath(main.strip())
        if not path.startswith(("/", "../")) and path != "..":
            for candidate in (path, f"{path}.js", f"{path}/index.js"):
                if candidate in project:
                    return candidate
    return next((name for name in _NODE_ENTRY_FILES if name in project), None)


# --- Python ---------------------------------------------------------------------------------


def _pip(arguments: str) -> str:
    """pip install, then again without dependencies: the image's own packages satisfy what is
    listed but not always each other's pins (Debian's FastAPI names an older Starlette than
    Debian ships), and offline nothing else can be fetched."""
    return f"({_PIP} {arguments} || {_PIP} --no-deps {arguments})"


def _python_stack(project: Mapping[str, bytes], hint: str | None) -> _Stack | None:
    if "requirements.txt" in project:
        manifest = "requirements.txt"
        requirements = _text(project, manifest).splitlines()
        install = _Step(
            command=f"{_VENV} && {_pip('-r requirements.txt')}",
            label="venv + pip install -r requirements.txt",
        )
    elif "pyproject.toml" in project:
        manifest = "pyproject.toml"
        requirements = _pyproject_dependencies(_text(project, manifest))
        if requirements:
            quoted = " ".join(shlex.quote(requirement) for requirement in requirements)
            install = _Step(
                command=f"{_VENV} && {_pip(quoted)}",
                label=f"venv + pip install of pyproject.toml's {len(requirements)} dependencies",
            )
        else:
            install = _Step(command=_VENV, label="venv")
    else:
        return None

    named = {name for line in requirements if (name := _requirement_name(line)) is not None}
    entries = _python_entries(project, manifest)
    if not entries:
        return _Stack(
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
    return _Stack(
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
                run=_Step(
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
                run=_Step(
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
                run=_Step(
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
                run=_Step(
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
        f" or set {_RUN_SETTING}"
    )


# --- Nothing recognised ---------------------------------------------------------------------


def _nothing_recognised(project: Mapping[str, bytes]) -> str:
    for marker, description in _UNSUPPORTED:
        if marker in project:
            return (
                f"build-ai found {description} but cannot build it: it recognises package.json"
                " (Node), requirements.txt or pyproject.toml (Python) and index.html (static)"
                f" at the root; add a Procfile with a web: line, or set {_RUN_SETTING}"
            )
    tops = {path.split("/", 1)[0] for path in project}
    if len(tops) == 1 and all("/" in path for path in project):
        (top,) = tops
        if any(f"{top}/{name}" in project for name in _ROOT_MARKERS):
            return (
                f"everything in the upload is inside {top}/; upload the contents of that folder"
                " so that its package.json, requirements.txt, pyproject.toml, Procfile or"
                " index.html is at the root"
            )
    if any("/" not in path and path.endswith(".py") for path in project):
        return (
            "build-ai found Python files but no requirements.txt or pyproject.toml at the root;"
            f" add a requirements.txt (it may be empty), or set {_RUN_SETTING}"
        )
    return (
        "build-ai found no package.json, requirements.txt, pyproject.toml, Procfile or"
        f" index.html at the root; add one, or set {_RUN_SETTING}"
    )
