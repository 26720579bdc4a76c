"""The nftables side of egress, loaded into a throwaway network namespace's kernel: the
firewall's table, a sandbox's policy and meter, DNS-resolved addresses, and removal that
leaves nothing. (Packets through real sandboxes: tests/e2e/test_egress_kernel_runc.py.)"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from ipaddress import IPv4Network

import pytest

from hutch.host.egress import EgressSpec
from hutch.host.egress_rules import Resolved, apply_script, remove_script
from hutch.host.firewall import Firewall
from hutch.host.proc import CommandFailed
from hutch.settings import Settings

IF = "hvtest12345678"


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"hutch-egress-unit-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def nft(netns: str, script: str) -> None:
    done = subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=script.encode(),
                          capture_output=True)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode() + "\n" + script


def listing(netns: str, *what: str) -> list[dict[str, object]]:
    out = subprocess.run(["ip", "netns", "exec", netns, "nft", "-j", "list", *what],
                         capture_output=True, check=True).stdout  # fmt: skip
    items: list[dict[str, object]] = json.loads(out)["nftables"]
    return items


def shown(netns: str, *what: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, "nft", "list", *what],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip


ALLOW_RESOLVED = """
import asyncio, json, sys
from hutch.host.egress_rules import resolved_elements
from hutch.host.nfnetlink import add_timed_elements
table, ifname, addresses, port, ttl, name = json.loads(sys.argv[1])
set_name, keys = resolved_elements(ifname, addresses, port)
asyncio.run(add_timed_elements(table, set_name, keys, ttl * 1000, name))
"""


def allow_resolved(
    netns: str, table: str, addresses: list[str], port: int | None, ttl: int, name: str
) -> None:
    """What the egress layer does for a DNS answer, over netlink, in ``netns``."""
    argument = json.dumps([table, IF, addresses, port, ttl, name])
    done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", ALLOW_RESOLVED,
                           argument], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr


def firewall() -> Firewall:
    settings = Settings(link_pool=IPv4Network("10.93.0.0/22"), egress_deny="198.51.100.0/24")
    wall = Firewall(tag="e9unit")
    wall.dns_port = 5353
    wall.link_pool = settings.link_pool
    wall.egress_deny = settings.deny_set.networks
    return wall


SPEC = EgressSpec(
    sandbox_id="sb_x",
    ip="10.93.0.2",
    restricted=True,
    networks=[(IPv4Network("198.18.0.0/24"), None), (IPv4Network("198.18.1.5/32"), 8080)],
    quota_bytes=10_000,
    used_bytes=1_234,
    ingress_bytes=5_678,
)


def test_the_firewall_denies_the_platform_set_and_dispatches_per_link(netns: str) -> None:
    wall = firewall()
    nft(netns, wall.ruleset())
    (deny,) = [i["set"] for i in listing(netns, "set", "inet", wall.table, "egress_deny")
               if "set" in i]  # fmt: skip
    blocks = {f"{e['prefix']['addr']}/{e['prefix']['len']}" for e in deny["elem"]  # type: ignore[index]
              if isinstance(e, dict) and "prefix" in e}  # fmt: skip
    assert {"10.0.0.0/8", "169.254.0.0/16", "198.51.100.0/24", "127.0.0.0/8"} <= blocks
    text = shown(netns, "table", "inet", wall.table)
    assert "iifname vmap @egress_links" in text
    assert "tcp dport 25 goto refuse" in text
    assert "ip saddr 10.93.0.0/22 oifname != {" in text and "masquerade" in text
    assert "reject with tcp reset" in text and "admin-prohibited" in text


def test_a_policy_is_installed_replaced_and_removed_in_one_transaction_each(netns: str) -> None:
    wall = firewall()
    nft(netns, wall.ruleset())
    nft(netns, apply_script(wall.table, IF, SPEC, used_now=1_234, seed_sent=1_234,
                            seed_received=5_678))  # fmt: skip
    text = shown(netns, "table", "inet", wall.table)
    assert f'"{IF}" : goto e_{IF}' in text
    assert f"quota q_{IF} {{\n\t\tover 10000 bytes used 1234 bytes" in text
    assert f'quota name "q_{IF}" goto refuse' in text
    assert "ip saddr != 10.93.0.2 drop" in text, "no forged sources"
    assert "198.18.1.5 . 8080" in text and "198.18.0.0/24 . 0-255" in text
    counters = {i["counter"]["name"]: i["counter"]["bytes"]  # type: ignore[index]
                for i in listing(netns, "counters", "table", "inet", wall.table)
                if "counter" in i}  # fmt: skip
    assert counters == {f"tx_{IF}": 1_234, f"rx_{IF}": 5_678}, "seeded from the store"

    # DNS-resolved addresses, with the rule's port or every port, refreshed when re-added.
    for _ in range(2):
        allow_resolved(netns, wall.table, ["198.18.2.9"], 443, 60, "pypi.test")
        allow_resolved(netns, wall.table, ["198.18.2.10", "198.18.2.11"], None, 300, "files.test")
    text = shown(netns, "set", "inet", wall.table, f"dp_{IF}")
    assert "198.18.2.9 . 443 timeout 1m" in text and 'comment "pypi.test"' in text
    text = shown(netns, "set", "inet", wall.table, f"d_{IF}")
    assert "198.18.2.11 timeout 5m" in text and 'comment "files.test"' in text
    with pytest.raises(AssertionError, match="No such file"):
        allow_resolved(netns, f"{wall.table}-gone", ["198.18.2.12"], None, 60, "gone.test")

    # Replaced: open now, another quota; the counters keep counting from where they were.
    opened = EgressSpec(sandbox_id="sb_x", ip="10.93.0.2", restricted=False, quota_bytes=-1)
    nft(netns, apply_script(wall.table, IF, opened, used_now=1_300, seed_sent=0, seed_received=0,
                            prune=[Resolved(f"dp_{IF}", "198.18.2.9", 443)]))  # fmt: skip
    text = shown(netns, "table", "inet", wall.table)
    assert "quota" not in text and "198.18.1.5 . 8080" not in text
    assert "198.18.2.9 . 443" not in text and "198.18.2.10" in text
    counters = {i["counter"]["name"]: i["counter"]["bytes"]  # type: ignore[index]
                for i in listing(netns, "counters", "table", "inet", wall.table)
                if "counter" in i}  # fmt: skip
    assert counters[f"tx_{IF}"] == 1_234

    nft(netns, remove_script(wall.table, IF))
    text = shown(netns, "table", "inet", wall.table)
    assert IF not in text, text


def test_a_bad_script_changes_nothing(netns: str) -> None:
    wall = firewall()
    nft(netns, wall.ruleset())
    broken = apply_script(wall.table, IF, SPEC, used_now=0, seed_sent=0, seed_received=0)
    broken += "add rule inet nope nope accept\n"
    done = subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=broken.encode(),
                          capture_output=True)  # fmt: skip
    assert done.returncode != 0
    text = shown(netns, "table", "inet", wall.table)
    assert IF not in text


def test_libnftables_in_process_runs_a_whole_transaction_or_nothing() -> None:
    from hutch.host import nft as nftlib

    assert nftlib._load() is not None, "libnftables1 comes with Debian's nftables"
    table = f"hutch-unit-{uuid.uuid4().hex[:8]}"
    try:
        made = f"add table inet {table}\nadd counter inet {table} c {{ packets 0 bytes 7 ; }}\n"
        asyncio.run(nftlib.nft(made))
        listed = asyncio.run(nftlib.nft_json(f"list counter inet {table} c"))
        assert listed is not None
        assert [i["counter"]["bytes"] for i in listed["nftables"] if "counter" in i] == [7]
        with pytest.raises(CommandFailed) as failed:
            asyncio.run(nftlib.nft(f"add counter inet {table} d\nadd rule inet nope nope accept\n"))
        assert failed.value.detail.startswith("Error:")
        assert asyncio.run(nftlib.nft_json(f"list counter inet {table} d")) is None
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=False)


def test_counters_and_quotas_are_read_from_the_kernel_one_object_at_a_time() -> None:
    from hutch.host import nfnetlink

    table = f"hutch-unit-{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(nftlib_run(
            f"add table inet {table}\n"
            f"add counter inet {table} c1 {{ packets 3 bytes 700 ; }}\n"
            f"add counter inet {table} c2 {{ packets 1 bytes 9 ; }}\n"
            f"add quota inet {table} left {{ over 1000 bytes used 10 bytes ; }}\n"
            f"add quota inet {table} gone {{ over 100 bytes used 100 bytes ; }}\n"
        ))  # fmt: skip
        assert asyncio.run(nfnetlink.read_counter(table, "c1")) == 700
        assert asyncio.run(nfnetlink.read_counter(table, "nope")) is None
        assert asyncio.run(nfnetlink.read_counter(f"{table}-nope", "c1")) is None
        assert asyncio.run(nfnetlink.counters(table)) == {"c1": 700, "c2": 9}
        left = asyncio.run(nfnetlink.read_quota(table, "left"))
        assert left is not None and (left.limit_bytes, left.consumed_bytes) == (1000, 10)
        assert not left.depleted
        gone = asyncio.run(nfnetlink.read_quota(table, "gone"))
        assert gone is not None and gone.depleted
        assert asyncio.run(nfnetlink.read_quota(table, "c1")) is None, "a counter is no quota"
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=False)


async def nftlib_run(script: str) -> None:
    from hutch.host import nft as nftlib

    await nftlib.nft(script)


def test_overlapping_blocks_are_merged_so_the_kernel_takes_them(netns: str) -> None:
    wall = firewall()
    nft(netns, wall.ruleset())
    blocks = [
        ("198.51.0.0/16", None),
        ("198.51.100.0/24", None),
        ("198.52.0.0/16", 443),
        ("198.52.1.0/24", 443),
        ("198.52.1.0/24", 80),
        ("198.52.2.0/23", 443),
    ]
    overlapping = [(IPv4Network(block), port) for block, port in blocks]
    spec = EgressSpec(sandbox_id="sb_x", ip="10.93.0.2", restricted=True, networks=overlapping)
    nft(netns, apply_script(wall.table, IF, spec, used_now=0, seed_sent=0, seed_received=0))
    every_port = shown(netns, "set", "inet", wall.table, f"a_{IF}")
    assert "198.51.0.0/16 . 0-255" in every_port and "198.51.100.0/24" not in every_port
    with_port = shown(netns, "set", "inet", wall.table, f"ap_{IF}")
    assert "198.52.0.0/16 . 443" in with_port and "198.52.1.0/24 . 80" in with_port
    assert "198.52.1.0/24 . 443" not in with_port


POLICY_BATCH = """
import asyncio, json, sys
from ipaddress import IPv4Network
from hutch.host.egress import EgressSpec
from hutch.host.egress_rules import Resolved, policy_batch
from hutch.host.nfnetlink import batch
table, ifname, networks, restricted, was_open, prune = json.loads(sys.argv[1])
spec = EgressSpec(sandbox_id="sb_x", ip="10.93.0.2", restricted=restricted,
                  networks=[(IPv4Network(n), p) for n, p in networks])
stale = [Resolved(*r) for r in prune]
asyncio.run(batch(policy_batch(table, ifname, spec, was_open=was_open, prune=stale)))
"""


def test_a_new_policy_is_set_elements_only_sent_over_netlink(netns: str) -> None:
    wall = firewall()
    nft(netns, wall.ruleset())
    nft(netns, apply_script(wall.table, IF, SPEC, used_now=0, seed_sent=0, seed_received=0))
    allow_resolved(netns, wall.table, ["198.18.2.9"], 443, 60, "pypi.test")
    allow_resolved(netns, wall.table, ["198.18.2.10"], None, 60, "files.test")
    chain_before = shown(netns, "chain", "inet", wall.table, f"e_{IF}")

    def put(networks: list[tuple[str, int | None]], restricted: bool, was_open: bool,
            prune: tuple[tuple[str, str, int | None], ...] = ()) -> None:  # fmt: skip
        argument = json.dumps([wall.table, IF, networks, restricted, was_open, prune])
        done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c",
                               POLICY_BATCH, argument], capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr

    put([("198.19.0.0/16", None), ("198.19.7.0/24", None), ("198.20.1.1/32", 8443)],
        restricted=True, was_open=False, prune=((f"dp_{IF}", "198.18.2.9", 443),))  # fmt: skip
    every_port = shown(netns, "set", "inet", wall.table, f"a_{IF}")
    assert "198.19.0.0/16 . 0-255" in every_port and "198.18.0.0/24" not in every_port
    with_port = shown(netns, "set", "inet", wall.table, f"ap_{IF}")
    assert "198.20.1.1 . 8443" in with_port and "198.18.1.5" not in with_port
    assert "198.18.2.9" not in shown(netns, "set", "inet", wall.table, f"dp_{IF}")
    assert "198.18.2.10" in shown(netns, "set", "inet", wall.table, f"d_{IF}")
    assert IF not in shown(netns, "set", "inet", wall.table, "egress_open")
    assert shown(netns, "chain", "inet", wall.table, f"e_{IF}") == chain_before

    put([], restricted=False, was_open=False)
    assert IF in shown(netns, "set", "inet", wall.table, "egress_open")
    assert "198.19.0.0" not in shown(netns, "set", "inet", wall.table, f"a_{IF}")
    put([("198.21.0.0/16", 22)], restricted=True, was_open=True)
    assert IF not in shown(netns, "set", "inet", wall.table, "egress_open")
    assert "198.21.0.0/16 . 22" in shown(netns, "set", "inet", wall.table, f"ap_{IF}")

    # One refused message (a stale element no longer there) and nothing changes.
    argument_before = shown(netns, "set", "inet", wall.table, f"ap_{IF}")
    with pytest.raises(AssertionError, match="No such file"):
        put([("198.22.0.0/16", None)], restricted=True, was_open=False,
            prune=((f"dp_{IF}", "198.18.2.99", 443),))  # fmt: skip
    assert shown(netns, "set", "inet", wall.table, f"ap_{IF}") == argument_before
    assert "198.22.0.0" not in shown(netns, "set", "inet", wall.table, f"a_{IF}")


EXPIRED_WHILE_LISTED = """
import asyncio, subprocess
from dataclasses import replace
from ipaddress import IPv4Network
from hutch.host.egress import EgressSpec
from hutch.host.egress_firewall import EgressFirewall
from hutch.host.egress_rules import resolved_elements
from hutch.host.nfnetlink import add_timed_elements
from tests.unit.test_egress_nft import firewall

wall = firewall()
layer = EgressFirewall(wall, tag="e9unit")
spec = EgressSpec(sandbox_id="sb_x", ip="10.93.0.2", restricted=True, domains=("old.test",))
ifname = layer.ifname("sb_x")
set_name, keys = resolved_elements(ifname, ["198.18.2.9"], None)


def keep(name: str, port: int | None) -> bool:
    # Listed as stale, then gone (its timeout ran out) before the change reaches the kernel.
    subprocess.run(["nft", "delete", "element", "inet", wall.table, set_name,
                    "{ 198.18.2.9 }"], check=True)
    return False


async def main() -> None:
    await layer.apply(spec)
    await add_timed_elements(wall.table, set_name, keys, 60_000, "old.test")
    new = replace(spec, networks=[(IPv4Network("198.19.0.0/16"), None)], domains=("new.test",))
    await layer.apply(new, keep_resolved=keep)
    print(ifname)

asyncio.run(main())
"""


def test_a_resolved_element_that_expired_after_it_was_listed_does_not_fail_the_put(
    netns: str,
) -> None:
    # The netlink batch is refused for the missing element; the script it falls back to
    # must not try to delete it again (a PUT would be a 409 "try again" for nothing).
    wall = firewall()
    nft(netns, wall.ruleset())
    done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c",
                           EXPIRED_WHILE_LISTED], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    ifname = done.stdout.strip()
    assert "198.19.0.0/16 . 0-255" in shown(netns, "set", "inet", wall.table, f"a_{ifname}")


MANY_RESOLVED = """
import asyncio
from dataclasses import replace
from hutch.host.egress import EgressSpec
from hutch.host.egress_firewall import EgressFirewall
from hutch.host.nft import nft
from tests.unit.test_egress_nft import firewall

wall = firewall()
layer = EgressFirewall(wall, tag="e9unit")
spec = EgressSpec(sandbox_id="sb_x", ip="10.93.0.2", restricted=True, domains=("old.test",))
ifname = layer.ifname("sb_x")
addresses = [f"198.18.{i // 250}.{i % 250 + 1}" for i in range(6000)]


async def main() -> None:
    await layer.apply(spec)
    elements = ", ".join(f'{a} timeout 600s comment "old.test"' for a in addresses)
    await nft(f"add element inet {wall.table} d_{ifname} {{ {elements} }}\\n")
    await layer.apply(replace(spec, domains=("new.test",)), keep_resolved=lambda n, p: False)
    print(ifname)

asyncio.run(main())
"""


def test_a_put_prunes_thousands_of_resolved_addresses(netns: str) -> None:
    # More elements than one netlink attribute holds (its length is 16 bits): the batch
    # sends them as several messages (it raised struct.error, a PUT answered 500).
    wall = firewall()
    nft(netns, wall.ruleset())
    done = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", MANY_RESOLVED],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    ifname = done.stdout.strip()
    assert "198.18." not in shown(netns, "set", "inet", wall.table, f"d_{ifname}")
