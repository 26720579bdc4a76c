"""The desktop's actions as the commands that do them in the sandbox (xdotool, wmctrl,
xclip), checked first: every name a caller gives is mapped or refused here, so nothing
a request holds reaches a command line as an option.

Keys are X keysym names (``Return``, ``a``, ``F5``) or the friendlier names agents send
(``ctrl``, ``enter``, ``esc``, ``cmd``, ``pagedown``, ``arrowleft``), case-insensitive.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hutch.core.errors import InvalidInput

__all__ = [
    "BUTTONS",
    "chord",
    "click_argv",
    "drag_argv",
    "scroll_argv",
    "type_argv",
    "window_number",
]

BUTTONS = {"left": 1, "middle": 2, "right": 3}
SCROLL = {"up": 4, "down": 5, "left": 6, "right": 7}
_ALIASES = {
    "ctrl": "ctrl", "control": "ctrl", "lctrl": "Control_L", "rctrl": "Control_R",
    "alt": "alt", "option": "alt", "shift": "shift",
    "cmd": "super", "command": "super", "meta": "super", "super": "super", "win": "super",
    "windows": "super",
    "enter": "Return", "return": "Return", "esc": "Escape", "escape": "Escape",
    "tab": "Tab", "space": "space", "backspace": "BackSpace", "delete": "Delete",
    "del": "Delete", "insert": "Insert", "home": "Home", "end": "End",
    "pageup": "Prior", "pgup": "Prior", "page_up": "Prior", "prior": "Prior",
    "pagedown": "Next", "pgdn": "Next", "page_down": "Next", "next": "Next",
    "up": "Up", "down": "Down", "left": "Left", "right": "Right",
    "arrowup": "Up", "arrowdown": "Down", "arrowleft": "Left", "arrowright": "Right",
    "capslock": "Caps_Lock", "printscreen": "Print", "print": "Print", "menu": "Menu",
    "plus": "plus", "minus": "minus", "comma": "comma", "period": "period",
    "slash": "slash", "backslash": "backslash", "semicolon": "semicolon",
    "quote": "apostrophe", "equal": "equal", "grave": "grave",
}  # fmt: skip
_SYMBOLS = {
    "+": "plus", "-": "minus", ",": "comma", ".": "period", "/": "slash", "\\": "backslash",
    ";": "semicolon", "'": "apostrophe", "=": "equal", "`": "grave", "[": "bracketleft",
    "]": "bracketright", " ": "space",
}  # fmt: skip
_KEYSYM = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
MAX_KEYS = 8
MAX_TEXT = 10_000


def _key(name: str) -> str:
    if len(name) == 1:
        if name.isalnum():
            return name
        if name in _SYMBOLS:
            return _SYMBOLS[name]
    alias = _ALIASES.get(name.lower())
    if alias is not None:
        return alias
    if re.fullmatch(r"[fF]([1-9]|1[0-9]|2[0-4])", name):
        return name.upper()
    if _KEYSYM.fullmatch(name):
        return name  # an X keysym name (xdotool refuses an unknown one: a 409)
    raise InvalidInput(f"unknown key {name!r}", field="keys")


def chord(keys: Sequence[str]) -> str:
    """``["ctrl", "l"]`` → ``ctrl+l``: the keys pressed together, as xdotool names them."""
    if not keys:
        raise InvalidInput("keys must name at least one key", field="keys")
    if len(keys) > MAX_KEYS:
        raise InvalidInput(f"at most {MAX_KEYS} keys in a chord", field="keys")
    return "+".join(_key(key) for key in keys)


def button(name: str | None) -> str:
    if name is None:
        return "1"
    number = BUTTONS.get(name)
    if number is None:
        raise InvalidInput("button must be left, middle or right", field="button")
    return str(number)


def click_argv(*, x: int | None, y: int | None, button_name: str | None, count: int) -> list[str]:
    argv = ["xdotool"]
    if (x is None) != (y is None):
        raise InvalidInput("give both x and y, or neither", field="x" if x is None else "y")
    if x is not None and y is not None:
        argv += ["mousemove", str(x), str(y)]
    return [*argv, "click", "--repeat", str(count), "--delay", "80", button(button_name)]


def scroll_argv(direction: str, amount: int) -> list[str]:
    number = SCROLL.get(direction)
    if number is None:
        raise InvalidInput("direction must be up, down, left or right", field="direction")
    return ["xdotool", "click", "--repeat", str(amount), "--delay", "20", str(number)]


def drag_argv(start: tuple[int, int], end: tuple[int, int], button_name: str | None) -> list[str]:
    pressed = button(button_name)
    return [
        "xdotool", "mousemove", str(start[0]), str(start[1]), "mousedown", pressed,
        "sleep", "0.05", "mousemove", str(end[0]), str(end[1]), "sleep", "0.05",
        "mouseup", pressed,
    ]  # fmt: skip


def type_argv(text: str, delay_ms: int) -> list[str]:
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"text is longer than {MAX_TEXT} characters", field="text")
    return ["xdotool", "type", "--delay", str(delay_ms), "--", text]


def window_number(window_id: str) -> int:
    """A window id as this API writes it (``0x01a00003``) or as a decimal number."""
    try:
        number = int(window_id, 16) if window_id.lower().startswith("0x") else int(window_id)
    except ValueError:
        number = -1
    if not 0 < number < 1 << 32:
        raise InvalidInput(f"{window_id!r} is not a window id", field="window_id")
    return number
