"""The link pool hands out /30s of its network, lowest free first, and takes back after a
restart the one a sandbox's address is in."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from hutch.host.addresses import LinkPool, PoolExhausted


def test_links_are_the_pools_30s_lowest_free_first() -> None:
    network = IPv4Network("10.89.0.0/28")
    pool = LinkPool(network)
    links = [pool.allocate(f"sb{n}") for n in range(4)]
    assert [link.network for link in links] == list(network.subnets(new_prefix=30))
    assert [(str(link.host), str(link.sandbox)) for link in links] == [
        ("10.89.0.1", "10.89.0.2"), ("10.89.0.5", "10.89.0.6"),
        ("10.89.0.9", "10.89.0.10"), ("10.89.0.13", "10.89.0.14"),
    ]  # fmt: skip
    assert pool.allocate("sb2") == links[2]  # asked again: the same link
    with pytest.raises(PoolExhausted):
        pool.allocate("one-too-many")
    pool.release("sb1")
    assert pool.allocate("new") == links[1]


def test_a_large_pool_reaches_its_last_block() -> None:
    pool = LinkPool(IPv4Network("10.89.0.0/16"))
    last = pool.reserve("last", "10.89.255.254")
    assert last is not None and last.network == IPv4Network("10.89.255.252/30")
    assert last.sandbox == IPv4Address("10.89.255.254")


def test_reserve_takes_the_link_of_an_address_unless_another_has_it() -> None:
    pool = LinkPool(IPv4Network("10.89.0.0/24"))
    kept = pool.reserve("kept", "10.89.0.6")
    assert kept is not None and str(kept.host) == "10.89.0.5"
    assert pool.reserve("other", "10.89.0.6") is None
    assert pool.reserve("outside", "10.90.0.2") is None
    assert str(pool.allocate("first").sandbox) == "10.89.0.2"
    assert str(pool.allocate("second").sandbox) == "10.89.0.10"  # .6 is taken
