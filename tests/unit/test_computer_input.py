"""What the desktop's actions become in the sandbox: every name checked or mapped, nothing
from a request reaching xdotool as an option."""

from __future__ import annotations

import pytest

from hutch.core.computer_input import (
    chord,
    click_argv,
    drag_argv,
    scroll_argv,
    type_argv,
    window_number,
)
from hutch.core.errors import InvalidInput


def test_chords_use_xdotools_names() -> None:
    assert chord(["ctrl", "a"]) == "ctrl+a"
    assert chord(["Ctrl", "Shift", "T"]) == "ctrl+shift+T"
    assert chord(["cmd", "enter"]) == "super+Return"
    assert chord(["esc"]) == "Escape"
    assert chord(["pagedown"]) == "Next"
    assert chord(["f5"]) == "F5"
    assert chord(["ctrl", "+"]) == "ctrl+plus"
    assert chord(["BackSpace"]) == "BackSpace"  # an X keysym as it is


@pytest.mark.parametrize("keys", [[], ["--window"], ["a b"], ["ctrl"] * 9, ["ü+"]])
def test_bad_keys_are_refused(keys: list[str]) -> None:
    with pytest.raises(InvalidInput) as caught:
        chord(keys)
    assert caught.value.field == "keys"


def test_clicks_scrolls_drags_and_typing() -> None:
    assert click_argv(x=None, y=None, button_name=None, count=1)[-1] == "1"
    argv = click_argv(x=10, y=20, button_name="right", count=2)
    assert argv[:4] == ["xdotool", "mousemove", "10", "20"] and argv[-1] == "3"
    assert "2" in argv
    with pytest.raises(InvalidInput):
        click_argv(x=10, y=None, button_name=None, count=1)
    assert scroll_argv("down", 3)[-1] == "5"
    with pytest.raises(InvalidInput):
        scroll_argv("sideways", 1)
    drag = drag_argv((1, 2), (3, 4), None)
    assert drag.count("mousedown") == 1 and drag[-2:] == ["mouseup", "1"]
    assert type_argv("--help", 12)[-2:] == ["--", "--help"], "text is never an option"


def test_window_ids() -> None:
    assert window_number("0x01a00003") == 0x01A00003
    assert window_number("27262979") == 27262979
    for bad in ("nonsense", "0", "-5", "0x1" + "0" * 9):
        with pytest.raises(InvalidInput):
            window_number(bad)
