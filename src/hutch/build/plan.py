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
import posixpath
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from hutch.build.python_plan import python_stack
from hutch.build.stacks import DEVBOX_IMAGE, NODE_IMAGE, RUN_SETTING, PlanError, Stack, Step, text

__all__ = ["DEVBOX_IMAGE", "NODE_IMAGE", "BuildPlan", "PlanError", "plan_build"]

_NPM_INSTALL = "npm install --no-audit --no-fund"
_STATIC_RUN = "python3 -m http.server $PORT --bind 0.0.0.0"

_NODE_HINTS = frozenset({"node", "nodejs", "express", "next", "nextjs", "next.js"})
_PYTHON_HINTS = frozenset({"python", "django", "fastapi", "flask"})
_NODE_ENTRY_FILES = ("server.js", "index.js", "app.js", "main.js")
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
_PROCFILE_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_-]+):\s*(?P<command>.*?)\s*$")


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
            run=Step(command=run.strip(), label=run.strip()),
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
    install: Step | None,
    build: Step | None,
    run: Step,
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


def _given(command: str | None) -> Step | None:
    if command is None or not command.strip():
        return None
    return Step(command=command.strip(), label=command.strip())


def _normalised(files: Mapping[str, bytes]) -> dict[str, bytes]:
    project: dict[str, bytes] = {}
    for path, content in files.items():
        clean = posixpath.normpath(path.lstrip("/"))
        if clean != "." and not clean.startswith("../"):
            project[clean] = content
    return project


def _detect(project: Mapping[str, bytes], hint: str | None) -> Stack | None:
    if hint == "static" and "index.html" in project:
        return _static_stack()
    node = _node_stack(project) if "package.json" in project else None
    python = python_stack(project, hint)
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
    for line in text(project, "Procfile").splitlines():
        match = _PROCFILE_LINE.match(line)
        if match and match["name"] == "web":
            if not match["command"]:
                raise PlanError(
                    "the Procfile's web: line has no command; add the one that serves $PORT"
                )
            return match["command"]
    return None


def _with_procfile(stack: Stack | None, web: str) -> Stack:
    """The Procfile's web command, after whatever install and build detection found."""
    if stack is None:
        return Stack(
            image=DEVBOX_IMAGE,
            kind="procfile",
            description="a Procfile",
            run=Step(command=web, label=f"web: {web}"),
        )
    # Procfile commands name tools (gunicorn, next) that the install put in the venv or in
    # node_modules, as on Heroku.
    prefix = f'export PATH="$PWD/{stack.bin_dir}:$PATH" && ' if stack.bin_dir else ""
    return Stack(
        image=stack.image,
        kind="procfile",
        description=f"a Procfile web process in {stack.description}",
        install=stack.install,
        build=stack.build,
        run=Step(command=prefix + web, label=f"web: {web}"),
    )


def _static_stack() -> Stack:
    return Stack(
        image=DEVBOX_IMAGE,
        kind="static",
        description="a static site (index.html)",
        run=Step(command=_STATIC_RUN, label="python3 -m http.server"),
    )


# --- Node -----------------------------------------------------------------------------------


def _node_stack(project: Mapping[str, bytes]) -> Stack:
    try:
        manifest = json.loads(text(project, "package.json"))
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
    build: Step | None = None
    if "build" in scripts:
        build = Step(command="npm run build", label="npm run build")
    elif nextjs:
        build = Step(command="npx --no next build", label="next build")

    run: Step | None = None
    if "start" in scripts:
        run = Step(command="npm start", label="npm start")
    elif nextjs:
        run = Step(command="npx --no next start -p $PORT", label="next start")
    else:
        entry = _node_entry(project, manifest.get("main"))
        if entry is not None:
            run = Step(command=f"node {shlex.quote(entry)}", label=f"node {entry}")
    return Stack(
        image=NODE_IMAGE,
        kind="node",
        description=f"{'a Next.js app' if nextjs else 'a Node project'} ({lockfile})",
        install=install,
        build=build,
        run=run,
        missing_run=(
            "build-ai found package.json but no way to start the app: add a start script to"
            ' package.json (such as "scripts": {"start": "node server.js"}), a server.js or'
            f" index.js, or a Procfile with a web: line; or set {RUN_SETTING}"
        ),
        bin_dir="node_modules/.bin",
    )


def _node_install(project: Mapping[str, bytes]) -> tuple[str, Step]:
    """The lockfile that decides the install, and the install step."""
    for lockfile in ("package-lock.json", "npm-shrinkwrap.json"):
        if lockfile in project:
            return lockfile, Step(command="npm ci --no-audit --no-fund", label="npm ci")
    for lockfile, tool in (("yarn.lock", "yarn"), ("pnpm-lock.yaml", "pnpm")):
        if lockfile in project:
            # Neither tool (nor corepack) is in the node image, and corepack would have to
            # download them; npm installs from package.json instead, which works offline
            # when there is nothing to fetch.
            command = (
                f"if command -v {tool} >/dev/null 2>&1;"
                f" then {tool} install --frozen-lockfile; else {_NPM_INSTALL}; fi"
            )
            return lockfile, Step(
                command=command, label=f"{tool} install (npm install without {tool})"
            )
    return "package.json", Step(command=_NPM_INSTALL, label="npm install")


def _node_entry(project: Mapping[str, bytes], main: object) -> str | None:
    if isinstance(main, str) and main.strip():
        path = posixpath.normpath(main.strip())
        if not path.startswith(("/", "../")) and path != "..":
            for candidate in (path, f"{path}.js", f"{path}/index.js"):
                if candidate in project:
                    return candidate
    return next((name for name in _NODE_ENTRY_FILES if name in project), None)


# --- Nothing recognised ---------------------------------------------------------------------


def _nothing_recognised(project: Mapping[str, bytes]) -> str:
    for marker, description in _UNSUPPORTED:
        if marker in project:
            return (
                f"build-ai found {description} but cannot build it: it recognises package.json"
                " (Node), requirements.txt or pyproject.toml (Python) and index.html (static)"
                f" at the root; add a Procfile with a web: line, or set {RUN_SETTING}"
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
            f" add a requirements.txt (it may be empty), or set {RUN_SETTING}"
        )
    return (
        "build-ai found no package.json, requirements.txt, pyproject.toml, Procfile or"
        f" index.html at the root; add one, or set {RUN_SETTING}"
    )
