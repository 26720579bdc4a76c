"""CreateOS egress rules (§9.1): the grammar, the deny set, and the policy the DNS side asks."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from hutch.core.egress import ALL_PORTS, MAX_RULES, DenySet, RuleKind, parse_rules
from hutch.core.errors import InvalidInput
from hutch.settings import Settings

DENY = DenySet(link_pool=IPv4Network("10.89.0.0/16"), network_pool=IPv4Network("10.42.0.0/16"))


def field_of(rules: list[str], deny: DenySet = DENY) -> tuple[str | None, str]:
    with pytest.raises(InvalidInput) as caught:
        parse_rules(rules, deny=deny)
    return caught.value.field, caught.value.message


def test_every_form_parses_to_what_it_names() -> None:
    policy = parse_rules(
        ["pypi.org", "github.com:443", "*.pythonhosted.org", "198.51.100.7",
         "198.51.100.8:53", "203.0.113.0/24", "198.18.0.0/15:8080", "*.Example.COM.:8443"],
        deny=DENY,
    )  # fmt: skip
    assert policy.restricted
    kinds = [(r.kind, r.host, r.network, r.port) for r in policy.rules]
    assert kinds == [
        (RuleKind.HOST, "pypi.org", None, None),
        (RuleKind.HOST, "github.com", None, 443),
        (RuleKind.SUBDOMAINS, "pythonhosted.org", None, None),
        (RuleKind.NETWORK, None, IPv4Network("198.51.100.7/32"), None),
        (RuleKind.NETWORK, None, IPv4Network("198.51.100.8/32"), 53),
        (RuleKind.NETWORK, None, IPv4Network("203.0.113.0/24"), None),
        (RuleKind.NETWORK, None, IPv4Network("198.18.0.0/15"), 8080),
        (RuleKind.SUBDOMAINS, "example.com", None, 8443),
    ]
    assert policy.networks == (
        (IPv4Network("198.51.100.7/32"), None),
        (IPv4Network("198.51.100.8/32"), 53),
        (IPv4Network("203.0.113.0/24"), None),
        (IPv4Network("198.18.0.0/15"), 8080),
    )


@pytest.mark.parametrize("rules", [None, [], ["*"], ["*", "pypi.org"]])
def test_empty_null_and_star_are_open(rules: list[str] | None) -> None:
    policy = parse_rules(rules, deny=DENY)
    assert not policy.restricted
    assert policy.ports_for("anything.test") == {ALL_PORTS}


def test_the_closed_default_applies_only_to_no_rules() -> None:
    assert parse_rules([], deny=DENY, default_closed=True).restricted
    assert parse_rules(None, deny=DENY, default_closed=True).ports_for("pypi.org") is None
    assert not parse_rules(["*"], deny=DENY, default_closed=True).restricted


def test_domain_matching_for_the_dns_server() -> None:
    policy = parse_rules(
        ["pypi.org", "github.com:443", "github.com:22", "*.pythonhosted.org", "*.mixed.test:80",
         "mixed.test", "198.51.100.7"],
        deny=DENY,
    )  # fmt: skip
    assert policy.ports_for("pypi.org") == {ALL_PORTS}
    assert policy.ports_for("PyPI.org.") == {ALL_PORTS}
    assert policy.ports_for("www.pypi.org") is None, "a host rule is that name only"
    assert policy.ports_for("github.com") == {443, 22}
    assert policy.ports_for("files.pythonhosted.org") == {ALL_PORTS}
    assert policy.ports_for("a.b.pythonhosted.org") == {ALL_PORTS}
    assert policy.ports_for("pythonhosted.org") is None, "*.host is not the apex"
    assert policy.ports_for("evilpythonhosted.org") is None
    assert policy.ports_for("mixed.test") == {ALL_PORTS}
    assert policy.ports_for("x.mixed.test") == {80}
    assert policy.ports_for("198.51.100.7") is None, "IP rules are not names"
    assert [r.text for r in policy.domain_rules] == [
        "pypi.org", "github.com:443", "github.com:22", "*.pythonhosted.org", "*.mixed.test:80",
        "mixed.test",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    ["", " pypi.org", "pypi.org:", "pypi.org:0", "pypi.org:65536", "pypi.org:http", "a..b",
     "-a.com", "a-.com", "**.a.com", "a.*.com", "*.", "1.2.3", "1.2.3.4.5", "256.1.1.1",
     "01.2.3.4", "10.0.0.1/8", "1.2.3.0/33", "1.2.3.4/24:80", "x" * 64 + ".com", "a_b.com",
     "http://pypi.org", "pypi.org/simple", "a.123", "x" * 300],
)  # fmt: skip
def test_a_malformed_rule_is_named_by_its_index(bad: str) -> None:
    field, message = field_of(["pypi.org", "1.1.1.1", "*.ok.test", bad])
    assert field == "egress[3]", (bad, message)


@pytest.mark.parametrize("ipv6", ["::1", "2001:db8::1", "[2001:db8::1]:443", "2001:db8::/32",
                                  "2001:db8::/32:443", "fe80::1"])  # fmt: skip
def test_ipv6_rules_are_refused_for_now(ipv6: str) -> None:
    field, message = field_of(["pypi.org", ipv6])
    assert field == "egress[1]" and "no IPv6" in message


@pytest.mark.parametrize(
    ("rule", "why"),
    [("10.1.2.3", "RFC 1918"), ("192.168.1.0/24", "RFC 1918"), ("172.20.0.0/16:443", "RFC 1918"),
     ("169.254.170.1", "link-local"), ("100.64.0.1", "shared"), ("127.0.0.1:8700", "loopback"),
     ("10.89.0.6", "sandbox links"), ("224.0.0.1", "multicast"), ("255.255.255.255", "broadcast"),
     ("0.0.0.0", "this network"), ("198.18.0.1:25", "port 25"), ("pypi.org:25", "port 25")],
)  # fmt: skip
def test_a_rule_inside_the_deny_set_says_so(rule: str, why: str) -> None:
    field, message = field_of(["pypi.org", rule])
    assert field == "egress[1]"
    assert "deny set" in message and why in message, message


def test_a_rule_overlapping_the_deny_set_is_allowed_and_the_set_still_applies() -> None:
    policy = parse_rules(["0.0.0.0/0", "8.0.0.0/7"], deny=DENY)
    assert policy.restricted and len(policy.networks) == 2


def test_at_most_256_rules() -> None:
    parse_rules([f"198.51.100.{i % 250}" for i in range(MAX_RULES)], deny=DENY)
    field, message = field_of([f"198.51.100.{i % 250}" for i in range(MAX_RULES + 1)])
    assert field == "egress" and "256" in message


def test_non_strings_are_named_too() -> None:
    field, _ = field_of(["pypi.org", 7])  # type: ignore[list-item]
    assert field == "egress[1]"


def test_operators_extend_and_carve_the_deny_set() -> None:
    settings = Settings(egress_deny="198.51.100.0/24, 203.0.113.8/29",
                        egress_allow_private="10.20.0.0/16")  # fmt: skip
    deny = settings.deny_set
    assert parse_rules(["10.20.1.2:443"], deny=deny).restricted
    assert field_of(["10.21.0.1"], deny)[0] == "egress[0]"
    assert "operator" in field_of(["198.51.100.9"], deny)[1]
    assert "operator" in field_of(["203.0.113.9"], deny)[1]
    networks = deny.networks
    assert IPv4Network("10.20.0.0/16") not in networks
    assert not any(IPv4Network("10.20.5.0/24").subnet_of(n) for n in networks)
    assert any(IPv4Network("10.89.0.0/16").subnet_of(n) for n in networks), "pools stay denied"
    # Merged without overlaps, as an nftables interval set needs.
    assert all(not a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1 :])


def test_the_pools_are_never_carved_out() -> None:
    deny = Settings(egress_allow_private="10.0.0.0/8").deny_set
    assert field_of(["10.89.0.2"], deny)[1].count("sandbox links") == 1
    assert field_of(["10.42.0.2"], deny)[0] == "egress[0]"
    assert parse_rules(["10.1.0.0/16"], deny=deny).restricted


@pytest.mark.parametrize(
    ("env", "value"),
    [("egress_deny", "nope"), ("egress_deny", "10.0.0.1/8"), ("egress_allow_private", "8.8.8.0/24"),
     ("egress_allow_private", "10.0.0.0/7")],
)  # fmt: skip
def test_bad_egress_settings_stop_the_start(env: str, value: str) -> None:
    with pytest.raises(ValueError, match=env):
        Settings(**{env: value})
