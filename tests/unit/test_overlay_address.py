"""Which address an agent's VXLAN segments use, for itself and its peers: a host may be
registered by name (``HUTCH_AGENT_URL=http://node1.internal:8702``) as well as by address."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from hutch.cluster import overlay
from hutch.settings import Settings


def test_a_name_is_looked_up_and_an_address_taken_as_it_is(tmp_path: Path) -> None:
    by_name = Settings(home=tmp_path, agent_url="http://localhost:8702")
    assert overlay.overlay_address(by_name) == IPv4Address("127.0.0.1")
    by_address = Settings(home=tmp_path, agent_listen="10.1.2.3:8702")
    assert overlay.overlay_address(by_address) == IPv4Address("10.1.2.3")
    assert overlay._resolve("http://localhost:8703") == IPv4Address("127.0.0.1")


def test_a_name_without_an_address_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    url = "http://no-such-host.invalid:8702"
    assert overlay._resolve(url) is None
    assert overlay._resolve(url) is None
    said = [r for r in caplog.records if "no-such-host.invalid" in r.getMessage()]
    assert len(said) == 1 and "cannot span" in said[0].getMessage()
