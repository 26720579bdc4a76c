"""The operator's build environment (``HUTCH_BUILD_ENV``): variables every deploy's
install and build steps get, typically a package mirror (``NPM_CONFIG_REGISTRY``,
``PIP_INDEX_URL``).

Two spellings:

- ``NAME=value,NAME=value``: a comma starts a new pair only where ``NAME=`` follows it, so
  a value may hold commas (``NO_PROXY=a.test,b.test`` is one pair); a value that itself
  holds ``,NAME=`` must use the other spelling. Spaces around a pair are dropped.
- a JSON object of strings, ``{"NAME": "value"}`` (the text starts with ``{``): anything
  goes in a value.

Names are shell variable names. ``PORT`` and ``HOST`` are refused: hutch sets them per
deploy. Values hold no NUL byte (no environment can).
"""

from __future__ import annotations

import json
import re

__all__ = ["RESERVED", "parse_build_env"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
_PAIR_START = re.compile(r",\s*(?=[A-Za-z_][A-Za-z0-9_]*=)")
RESERVED = frozenset({"PORT", "HOST"})


def parse_build_env(text: str) -> dict[str, str]:
    """The variables ``text`` names, in order; ValueError saying what is wrong."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        pairs = _json_pairs(text)
    else:
        pairs = []
        for item in _PAIR_START.split(text):
            name, sep, value = item.strip().partition("=")
            if not sep:
                raise ValueError(f"build_env: {item.strip()[:40]!r} is not NAME=value")
            pairs.append((name, value))
    env: dict[str, str] = {}
    for name, value in pairs:
        if not _NAME.fullmatch(name):
            raise ValueError(f"build_env: {name[:40]!r} is not a variable name")
        if name in RESERVED:
            raise ValueError(f"build_env: {name} is set by hutch for each deploy")
        if name in env:
            raise ValueError(f"build_env: {name} is given twice")
        if "\0" in value:
            raise ValueError(f"build_env: {name}'s value holds a NUL byte")
        env[name] = value
    return env


def _json_pairs(text: str) -> list[tuple[str, str]]:
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"build_env: not a JSON object ({exc.msg})") from None
    if not isinstance(loaded, dict):
        raise ValueError("build_env: not a JSON object")
    pairs = []
    for name, value in loaded.items():
        if not isinstance(value, str):
            raise ValueError(f"build_env: {name}'s value is not a string")
        pairs.append((name, value))
    return pairs
