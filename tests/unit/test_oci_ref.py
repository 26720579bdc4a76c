"""Image references read the way Docker reads them, and the registry allowlist."""

from __future__ import annotations

import pytest

from hutch.core.errors import InvalidInput
from hutch.host.oci_ref import (
    RegistryNotAllowed,
    check_allowed,
    parse_allowed_registries,
    parse_reference,
)
from hutch.settings import Settings


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("docker://127.0.0.1:5000/team/app:1", "127.0.0.1:5000/team/app:1"),
        ("registry.corp.example/base/py", "registry.corp.example/base/py:latest"),
        ("localhost/app:v2", "localhost/app:v2"),
        ("debian:12", "docker.io/library/debian:12"),
        ("someone/tool", "docker.io/someone/tool:latest"),
        ("index.docker.io/library/debian:12", "docker.io/library/debian:12"),
        ("reg.example:443/a/b@sha256:" + "a" * 64, "reg.example:443/a/b@sha256:" + "a" * 64),
    ],
)
def test_references_name_their_registry_like_docker(text: str, canonical: str) -> None:
    assert parse_reference(text).canonical == canonical


@pytest.mark.parametrize(
    "text",
    ["", "oci:/layout:tag", "docker-archive:/x.tar", "http://reg/x", "reg.example/UPPER:1",
     "reg.example/app:bad tag", "reg.example/app@sha256:short"],
)  # fmt: skip
def test_malformed_references_are_invalid_input(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_reference(text)


def test_the_allowlist_admits_a_registry_and_path_prefix_only() -> None:
    allowed = parse_allowed_registries("http://127.0.0.1:5000, Registry.Corp.Example/team,")
    assert [str(entry) for entry in allowed] == [
        "http://127.0.0.1:5000",
        "Registry.Corp.Example/team",
    ]
    assert check_allowed(parse_reference("127.0.0.1:5000/x/y:1"), allowed).plain_http
    entry = check_allowed(parse_reference("registry.corp.example/team/app:1"), allowed)
    assert not entry.plain_http
    for refused in ("registry.corp.example/teamx/app", "registry.corp.example/other/app",
                    "127.0.0.1:5001/x", "debian:12"):  # fmt: skip
        with pytest.raises(RegistryNotAllowed, match="not from an allowed registry"):
            check_allowed(parse_reference(refused), allowed)


def test_a_malformed_allowlist_entry_is_a_settings_error_naming_it() -> None:
    with pytest.raises(ValueError, match="bad host"):
        Settings(template_registries="ok.example, bad host!")
    with pytest.raises(ValueError, match="bad host"):
        parse_allowed_registries("bad host!")
