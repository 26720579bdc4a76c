import pytest
from pydantic import ValidationError

from hutch.build.env import parse_build_env
from hutch.settings import Settings


def test_pairs_are_split_where_a_name_follows_a_comma() -> None:
    text = (
        "NPM_CONFIG_REGISTRY=http://registry.test/, PIP_INDEX_URL=http://pypi.test/simple/,"
        "NO_PROXY=a.test,b.test,EMPTY=,EQ=a=b"
    )
    assert parse_build_env(text) == {
        "NPM_CONFIG_REGISTRY": "http://registry.test/",
        "PIP_INDEX_URL": "http://pypi.test/simple/",
        "NO_PROXY": "a.test,b.test",
        "EMPTY": "",
        "EQ": "a=b",
    }


def test_a_json_object_takes_any_value() -> None:
    assert parse_build_env('{"A": "x,B=y", "C": ""}') == {"A": "x,B=y", "C": ""}
    assert parse_build_env("  ") == {}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("JUST_A_NAME", "is not NAME=value"),
        ("1X=a", "is not a variable name"),
        ("A B=c", "is not a variable name"),
        ("PORT=80", "PORT is set by hutch"),
        ('{"HOST": "x"}', "HOST is set by hutch"),
        ("A=1,A=2", "A is given twice"),
        ('{"A": 1}', "A's value is not a string"),
        ('{"A": "x\\u0000"}', "NUL"),
        ("[1]", "is not NAME=value"),
        ("{nope", "not a JSON object"),
        ('{"A": "x"', "not a JSON object"),
    ],
)
def test_bad_text_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_build_env(text)


def test_the_setting_is_checked_when_settings_are_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTCH_BUILD_ENV", "PIP_INDEX_URL=http://mirror.test/simple/")
    assert Settings().build_env_vars == {"PIP_INDEX_URL": "http://mirror.test/simple/"}
    monkeypatch.setenv("HUTCH_BUILD_ENV", "PORT=1")
    with pytest.raises(ValidationError, match="PORT is set by hutch"):
        Settings()
