"""Deploys built from the project's own Dockerfile.

A project is built from its ``Dockerfile`` (at the root of the upload) when the deploy
says so (``settings.hasDockerfile``), or when the Dockerfile is all build-ai could go on
(none of package.json, requirements.txt, pyproject.toml, a Procfile or index.html, and no
``runCommand``). It is then built by the templates' builder (every step in a sandbox, with
the layer cache; :mod:`hutch.core.templates`) with the upload as the build context, and the
app is the image's start command (``CMD``/``ENTRYPOINT``), or ``settings.runCommand`` when
given, with ``PORT`` and ``HOST`` set. :func:`dockerfile_plan` decides, and checks the
Dockerfile's form before anything is charged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hutch.build.plan import DEVBOX_IMAGE, BuildPlan, PlanError

__all__ = ["DOCKERFILE", "DockerfileProject", "dockerfile_plan"]

DOCKERFILE = "Dockerfile"
MAX_DOCKERFILE_BYTES = 64 * 1024
# What build-ai builds by itself: with one of these, a Dockerfile is used only when asked.
_BUILD_AI_MARKERS = ("package.json", "requirements.txt", "pyproject.toml", "Procfile", "index.html")


@dataclass(frozen=True, kw_only=True)
class DockerfileProject:
    plan: BuildPlan
    """``kind`` ``dockerfile``; ``run`` is ``settings.runCommand`` or '' (the image's own
    start command); no install or build steps (the Dockerfile is the build)."""
    dockerfile: str


def dockerfile_plan(
    files: Mapping[str, bytes], *, asked: bool, run: str | None
) -> DockerfileProject | None:
    """The Dockerfile build of ``files``, or None when build-ai plans the project. Raises
    :class:`PlanError` when a Dockerfile build is asked for and there is no usable one."""
    raw = files.get(DOCKERFILE)
    if raw is None:
        if asked:
            raise PlanError(
                "settings.hasDockerfile is true but the upload has no Dockerfile at its root"
            )
        return None
    given_run = (run or "").strip()
    if not asked and (given_run or any(marker in files for marker in _BUILD_AI_MARKERS)):
        return None
    if len(raw) > MAX_DOCKERFILE_BYTES:
        raise PlanError(f"the Dockerfile is over {MAX_DOCKERFILE_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PlanError("the Dockerfile is not UTF-8 text") from None
    started = f"settings.runCommand ({given_run})" if given_run else "its CMD/ENTRYPOINT"
    return DockerfileProject(
        plan=BuildPlan(
            image=DEVBOX_IMAGE,  # unused: the image is the Dockerfile's
            kind="dockerfile",
            install=None,
            build=None,
            run=given_run,
            detected=f"a Dockerfile: built step by step as a template, then {started} runs",
        ),
        dockerfile=text,
    )
