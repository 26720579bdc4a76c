"""A Dockerfile, parsed (with ``dockerfile-parse``) and checked into build instructions.

:func:`parse` reads the text and checks what can be checked without the base image:
exactly one ``FROM`` (written out, first), known instructions, the forms of each. Every
error is an :class:`~hutch.core.errors.InvalidInput` on ``dockerfile`` that names the line.
:func:`plan` then walks the instructions from the base's settings, substituting
variables as Docker does, into :class:`BuildStep`\\ s (what runs) and the image's final
settings.

Supported: ``FROM`` (single stage), ``RUN``, ``ENV``, ``ARG``, ``WORKDIR``, ``USER``,
``SHELL``, ``LABEL`` (``MAINTAINER`` as a label), ``EXPOSE``, ``CMD``, ``ENTRYPOINT``,
``COPY`` and ``ADD`` (from the uploaded context; ``--chown``, ``--chmod``). Refused:
multi-stage builds (a second ``FROM``, ``COPY --from``), ``ADD`` of a URL, ``RUN`` flags,
``ONBUILD``, ``HEALTHCHECK``, ``VOLUME``, ``STOPSIGNAL``, heredocs.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped]
from dockerfile_parse.util import WordSplitter, extract_key_values  # type: ignore[import-untyped]

from hutch.core.errors import InvalidInput

__all__ = [
    "MAX_DOCKERFILE_BYTES",
    "BuildPlan",
    "BuildStep",
    "ImageSettings",
    "Instruction",
    "ParsedDockerfile",
    "parse",
    "plan",
]

MAX_DOCKERFILE_BYTES = 64 * 1024
DEFAULT_SHELL = ("/bin/sh", "-c")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_METADATA = {
    "ENV",
    "ARG",
    "WORKDIR",
    "USER",
    "SHELL",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "CMD",
    "ENTRYPOINT",
}
_FILESYSTEM = {"RUN", "COPY", "ADD"}
_REFUSED = {
    "ONBUILD": "ONBUILD is not supported",
    "HEALTHCHECK": "HEALTHCHECK is not supported (hutch does not probe sandboxes)",
    "VOLUME": "VOLUME is not supported (attach a disk to the sandbox instead)",
    "STOPSIGNAL": "STOPSIGNAL is not supported",
}


@dataclass(frozen=True, kw_only=True)
class Instruction:
    line: int
    """The first line of the instruction, from 1."""
    keyword: str
    value: str
    text: str
    """As written, continuation lines joined (for the logs)."""


@dataclass(frozen=True, kw_only=True)
class ParsedDockerfile:
    base: str
    """What ``FROM`` names, as written."""
    base_line: int
    instructions: tuple[Instruction, ...]
    """Every instruction after ``FROM``."""


@dataclass(frozen=True, kw_only=True)
class ImageSettings:
    """What a sandbox of the image starts with; a ``FROM`` template's are the start."""

    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = ""
    shell: tuple[str, ...] = DEFAULT_SHELL
    labels: Mapping[str, str] = field(default_factory=dict)
    exposed: tuple[str, ...] = ()
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None

    @property
    def start(self) -> list[str] | None:
        """ENTRYPOINT then CMD (CMD alone, or ENTRYPOINT alone), as Docker combines them."""
        if self.entrypoint:
            return [*self.entrypoint, *(self.cmd or ())]
        return list(self.cmd) if self.cmd else None


@dataclass(frozen=True, kw_only=True)
class BuildStep:
    """One instruction that changes the filesystem (RUN, COPY, ADD)."""

    number: int
    """Its place among all the Dockerfile's instructions (FROM is 1)."""
    line: int
    keyword: str
    text: str
    argv: tuple[str, ...] = ()
    """RUN: the command (shell form wrapped in SHELL)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """RUN: the environment (ENV, then ARG values)."""
    workdir: str = "/"
    user: str = ""
    sources: tuple[str, ...] = ()
    """COPY/ADD: paths or globs in the context."""
    dest: str = ""
    """COPY/ADD: absolute; ending in '/' when it is a directory."""
    chown: str = ""
    chmod: int | None = None
    extract: bool = False
    """ADD: unpack local tar archives."""

    def identity(self) -> dict[str, Any]:
        """What the step's cache key is made of (besides its parent and copied files)."""
        return {
            "keyword": self.keyword,
            "argv": list(self.argv),
            "env": dict(sorted(self.env.items())),
            "workdir": self.workdir,
            "user": self.user,
            "sources": list(self.sources),
            "dest": self.dest,
            "chown": self.chown,
            "chmod": self.chmod,
            "extract": self.extract,
        }


@dataclass(frozen=True, kw_only=True)
class BuildPlan:
    steps: tuple[BuildStep, ...]
    settings: ImageSettings
    total: int
    """Instructions in all, FROM included (the logs' "step i/N")."""
    lines: Mapping[int, Instruction]
    """Every instruction by its number (for the logs)."""


def _fail(line: int, message: str) -> InvalidInput:
    return InvalidInput(f"line {line}: {message}", field="dockerfile")


def parse(text: str) -> ParsedDockerfile:
    """Parse and check ``text``. Raises InvalidInput (``dockerfile``, naming the line)."""
    if len(text.encode()) > MAX_DOCKERFILE_BYTES:
        raise InvalidInput(
            f"the Dockerfile is {len(text.encode())} bytes; at most {MAX_DOCKERFILE_BYTES} "
            "(64 KiB)",
            field="dockerfile",
        )
    if "\0" in text:
        raise InvalidInput("the Dockerfile contains a NUL byte", field="dockerfile")
    parser = DockerfileParser(fileobj=io.BytesIO(), env_replace=False)
    parser.content = text
    base: str | None = None
    base_line = 0
    instructions: list[Instruction] = []
    for entry in parser.structure:
        keyword = str(entry["instruction"]).upper()
        line = int(entry["startline"]) + 1
        value = str(entry["value"]).strip()
        if keyword == "COMMENT":
            continue
        written = " ".join(str(entry["content"]).replace("\\\n", " ").split())
        if keyword == "FROM":
            if base is not None:
                raise _fail(line, "multi-stage builds (a second FROM) are not supported")
            words = value.split()
            if (
                not words
                or (len(words) not in (1, 3))
                or (len(words) == 3 and words[1].lower() != "as")
            ):
                raise _fail(line, "FROM takes an image and an optional 'AS name'")
            if words[0].startswith("--"):
                raise _fail(line, f"FROM {words[0]} is not supported")
            if "$" in words[0]:
                raise _fail(line, "FROM must name its image literally (no variables)")
            base, base_line = words[0], line
            continue
        if base is None and keyword != "ARG":
            raise _fail(line, f"{keyword} before FROM; a Dockerfile starts with FROM")
        if keyword in _REFUSED:
            raise _fail(line, _REFUSED[keyword])
        if keyword not in _METADATA | _FILESYSTEM:
            raise _fail(line, f"unknown instruction {keyword!r}")
        if not value:
            raise _fail(line, f"{keyword} needs an argument")
        if base is not None:
            instructions.append(Instruction(line=line, keyword=keyword, value=value, text=written))
    if base is None:
        raise InvalidInput("the Dockerfile has no FROM line", field="dockerfile")
    return ParsedDockerfile(base=base, base_line=base_line, instructions=tuple(instructions))


def plan(parsed: ParsedDockerfile, start: ImageSettings) -> BuildPlan:
    """Walk the instructions from the base's settings ``start``. Raises InvalidInput."""
    env = dict(start.env)
    args: dict[str, str] = {}
    workdir, user, shell = start.workdir, start.user, start.shell
    labels, exposed = dict(start.labels), list(start.exposed)
    cmd, entrypoint = start.cmd, start.entrypoint
    steps: list[BuildStep] = []
    numbered: dict[int, Instruction] = {}
    for number, ins in enumerate(parsed.instructions, start=2):
        numbered[number] = ins
        line, keyword, value = ins.line, ins.keyword, ins.value
        try:
            if keyword == "ENV":
                pairs = extract_key_values(True, args, env, value)
                for key, val in pairs:
                    _check_name(line, key)
                    env[key] = val
            elif keyword == "ARG":
                name, sep, default = value.partition("=")
                _check_name(line, name.strip())
                if sep:
                    words = _words(default, args, env)
                    args[name.strip()] = " ".join(words)
                else:
                    args.setdefault(name.strip(), "")
            elif keyword == "LABEL":
                for key, val in extract_key_values(True, args, env, value):
                    labels[key] = val
            elif keyword == "MAINTAINER":
                labels["maintainer"] = value
            elif keyword == "WORKDIR":
                path = " ".join(_words(value, args, env))
                workdir = posixpath.normpath(posixpath.join(workdir, path))
            elif keyword == "USER":
                user = " ".join(_words(value, args, env))
                if not re.fullmatch(
                    r"[A-Za-z0-9_.][A-Za-z0-9_.-]*(:[A-Za-z0-9_.][A-Za-z0-9_.-]*)?", user
                ):
                    raise _fail(line, f"USER {user!r} is not a user[:group] name or id")
            elif keyword == "SHELL":
                shell = tuple(_exec_form(line, value, required=True) or ())
            elif keyword == "EXPOSE":
                for port in _words(value, args, env):
                    if not re.fullmatch(r"\d{1,5}(/(tcp|udp))?", port):
                        raise _fail(line, f"EXPOSE {port!r} is not a port[/tcp|udp]")
                    exposed.append(port)
            elif keyword in ("CMD", "ENTRYPOINT"):
                argv = _exec_form(line, value) or [*shell, value]
                if keyword == "CMD":
                    cmd = tuple(argv)
                else:
                    entrypoint, cmd = tuple(argv), None
            elif keyword == "RUN":
                if value.startswith("--"):
                    raise _fail(line, f"RUN {value.split()[0]} is not supported")
                if value.startswith("<<"):
                    raise _fail(line, "heredocs are not supported; write the lines with RUN")
                argv = _exec_form(line, value) or [*shell, value]
                steps.append(
                    BuildStep(
                        number=number,
                        line=line,
                        keyword="RUN",
                        text=ins.text,
                        argv=tuple(argv),
                        env={**args, **env},
                        workdir=workdir,
                        user=user,
                    )
                )
            else:  # COPY, ADD
                steps.append(_copy_step(number, ins, args, env, workdir))
        except ValueError as exc:
            raise _fail(line, f"{keyword}: {exc}") from None
    settings = ImageSettings(
        env=env,
        workdir=workdir,
        user=user,
        shell=shell,
        labels=labels,
        exposed=tuple(exposed),
        cmd=cmd,
        entrypoint=entrypoint,
    )
    return BuildPlan(
        steps=tuple(steps), settings=settings, total=len(parsed.instructions) + 1, lines=numbered
    )


def _copy_step(
    number: int, ins: Instruction, args: Mapping[str, str], env: Mapping[str, str], workdir: str
) -> BuildStep:
    line, keyword = ins.line, ins.keyword
    words = _exec_form(line, ins.value) if ins.value.startswith("[") else None
    if words is None:
        words = _words(ins.value, args, env)
    chown, chmod = "", None
    while words and words[0].startswith("--"):
        flag, _, setting = words.pop(0).partition("=")
        if flag == "--from":
            raise _fail(line, "COPY --from (multi-stage builds) is not supported")
        if flag == "--chown" and setting:
            chown = setting
        elif flag == "--chmod" and re.fullmatch(r"[0-7]{3,4}", setting):
            chmod = int(setting, 8)
        elif flag == "--link":
            continue
        else:
            raise _fail(line, f"{keyword} {flag} is not supported (--chown, --chmod are)")
    if len(words) < 2:
        raise _fail(line, f"{keyword} needs at least one source and a destination")
    *sources, dest = words
    for source in sources:
        if re.match(r"^[a-z][a-z0-9+.-]*://", source) or source.startswith("git@"):
            raise _fail(line, f"{keyword} of a URL ({source}) is not supported; fetch it in a RUN")
        if any(part == ".." for part in source.split("/")):
            raise _fail(line, f"{keyword} source {source!r} is outside the build context")
    directory = dest.endswith("/") or len(sources) > 1
    absolute = posixpath.normpath(posixpath.join(workdir, dest))
    return BuildStep(
        number=number,
        line=line,
        keyword=keyword,
        text=ins.text,
        sources=tuple(sources),
        dest=absolute.rstrip("/") + "/" if directory else absolute,
        chown=chown,
        chmod=chmod,
        extract=keyword == "ADD",
    )


def _check_name(line: int, name: str) -> None:
    if not _NAME.fullmatch(name):
        raise _fail(line, f"{name!r} is not a valid variable name")


def _words(value: str, args: Mapping[str, str], env: Mapping[str, str]) -> list[str]:
    return [str(word) for word in WordSplitter(value, args=dict(args), envs=dict(env)).split()]


def _exec_form(line: int, value: str, *, required: bool = False) -> list[str] | None:
    """A JSON array of strings (the exec form), or None for the shell form."""
    if not value.startswith("["):
        if required:
            raise _fail(line, 'SHELL takes a JSON array, e.g. ["/bin/bash", "-c"]')
        return None
    try:
        argv = json.loads(value)
    except ValueError:
        if required:
            raise _fail(line, "SHELL's argument is not a valid JSON array") from None
        return None  # Docker runs a malformed exec form as a shell command
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise _fail(line, "the exec form must be a non-empty JSON array of strings")
    return [str(a) for a in argv]
