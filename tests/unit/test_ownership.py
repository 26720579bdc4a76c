"""Which addresses and routes of the host clash with hutch's pools (hutch.host.ownership)."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from hutch.host.ownership import HomeInUse, HomeLock, find_clashes

POOLS = {"HUTCH_LINK_POOL": IPv4Network("10.89.0.0/16"),
         "HUTCH_NETWORK_POOL": IPv4Network("10.42.0.0/16")}  # fmt: skip
ADDRESSES = [
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
    {"ifname": "hvab12sb00001", "addr_info": [{"family": "inet", "local": "10.89.0.1"}]},
    {"ifname": "hvcd34sb00002", "addr_info": [{"family": "inet", "local": "10.89.0.5"}]},
]
ROUTES = [
    {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
    {"dst": "10.89.0.0/30", "dev": "hvab12sb00001"},
    {"dst": "10.0.0.0/8", "dev": "wg0"},
    {"dst": "10.89.0.5", "dev": "hvcd34sb00002", "type": "local"},
]


def test_own_links_pass_and_anything_else_in_a_pool_is_named() -> None:
    found = find_clashes(POOLS, ADDRESSES, ROUTES, own_prefixes=["hvab12", "hnab12", "hpab12"])
    assert found == [
        "HUTCH_LINK_POOL 10.89.0.0/16 overlaps the address 10.89.0.5 on hvcd34sb00002",
        "HUTCH_LINK_POOL 10.89.0.0/16 overlaps the route to 10.0.0.0/8 on wg0",
        "HUTCH_NETWORK_POOL 10.42.0.0/16 overlaps the route to 10.0.0.0/8 on wg0",
    ]


def test_nothing_in_the_pools_is_no_clash() -> None:
    assert find_clashes(POOLS, ADDRESSES[:1], ROUTES[:1], own_prefixes=["hvzz"]) == []


def test_one_agent_per_home(tmp_path: Path) -> None:
    first, second = HomeLock(tmp_path), HomeLock(tmp_path)
    with first.held(), pytest.raises(HomeInUse, match=r"pid \d+"):
        second.acquire()
    with second.held():
        pass
