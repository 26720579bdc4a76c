"""A sandbox's netns and veth made over netlink (hutch.host.rtnl), as ``ip`` made them:
addressed, up, routed, seen by ``ip netns``; and taken down leaving nothing."""

from __future__ import annotations

import asyncio
import subprocess
from ipaddress import IPv4Network

from hutch.host.drivers.base import LinkAddress
from hutch.host.link import SandboxLink


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False).stdout


def test_a_link_is_made_and_removed_over_netlink() -> None:
    block = IPv4Network("10.107.0.0/30")  # this test's own
    address = LinkAddress(network=block, host=block[1], sandbox=block[2])
    link = SandboxLink(tag="rtnltest", sandbox_id="sb_RTNL")
    try:
        asyncio.run(link.create(address))
        assert link.netns in ip("netns", "list")
        inside = [
            line.split()[1:4] for line in ip("-n", link.netns, "-4", "-o", "addr").splitlines()
        ]
        assert inside == [["lo", "inet", "127.0.0.1/8"], ["eth0", "inet", "10.107.0.2/30"]]
        assert (
            ip("-n", link.netns, "route")
            .split("\n")[0]
            .startswith("default via 10.107.0.1 dev eth0")
        )
        assert "10.107.0.1/30" in ip("-4", "-o", "addr", "show", link.host_if)
        assert "state UP" in ip("link", "show", link.host_if)
        # The two ends talk: a connect to a closed port of the host's end is refused (a
        # reset came back), not unreachable (the address is this test's own link).
        probe = "import socket; s = socket.socket(); s.settimeout(5)\n"
        probe += "print(s.connect_ex(('10.107.0.1', 9)))"
        done = subprocess.run(
            ["ip", "netns", "exec", link.netns, "python3", "-c", probe],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.stdout.strip() == "111", done.stdout + done.stderr  # ECONNREFUSED
    finally:
        asyncio.run(link.remove())
    assert link.netns not in ip("netns", "list")
    assert not link.netns_path.exists()
    assert ip("link", "show", link.host_if) == ""
    asyncio.run(link.remove())  # a missing one is fine
