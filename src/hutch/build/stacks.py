"""What build-ai's detectors share: the error, a step, a recognised stack, reading a file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DEVBOX_IMAGE", "NODE_IMAGE", "RUN_SETTING", "PlanError", "Stack", "Step", "text"]

NODE_IMAGE = "node"
DEVBOX_IMAGE = "devbox:1"
RUN_SETTING = "settings.runCommand"


class PlanError(Exception):
    """The project cannot be planned; the message says what to add."""


@dataclass(frozen=True, kw_only=True)
class Step:
    command: str
    label: str


@dataclass(frozen=True, kw_only=True)
class Stack:
    """What detection recognised; ``run`` is ``None`` when it found no way to start."""

    image: str
    kind: str
    description: str
    install: Step | None = None
    build: Step | None = None
    run: Step | None = None
    missing_run: str = ""
    bin_dir: str | None = None


def text(project: Mapping[str, bytes], path: str) -> str:
    try:
        return project[path].decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PlanError(f"{path} is not UTF-8 text; save it as UTF-8") from exc
