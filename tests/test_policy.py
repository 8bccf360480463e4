"""Allow-lists as plain functions: patterns, targets as written, resolved
addresses (DNS rebinding), binds, and lists given empty on purpose."""

from __future__ import annotations

import pytest

from reactor_mux.security.policy import AllowList, PatternError, Policy, parse_pattern

pytestmark = pytest.mark.codec_independent


def allow(*patterns: str, flag: str = "--allow-connect") -> AllowList:
    return AllowList.parse(list(patterns), flag)


@pytest.mark.parametrize(
    ("text", "name_glob", "network", "ports"),
    [
        ("*:443", None, None, (443, 443)),
        ("db.internal:5432", "db.internal", None, (5432, 5432)),
        ("*.Example.COM:*", "*.example.com", None, (0, 65535)),
        ("10.0.0.0/8:*", None, "10.0.0.0/8", (0, 65535)),
        ("192.0.2.7:1000-2000", None, "192.0.2.7/32", (1000, 2000)),
        ("[2001:db8::/32]:1000-2000", None, "2001:db8::/32", (1000, 2000)),
        ("[::1]:22", None, "::1/128", (22, 22)),
    ],
)
def test_patterns(text, name_glob, network, ports):
    pattern = parse_pattern(text)
    assert pattern.name_glob == name_glob
    assert (str(pattern.network) if pattern.network else None) == network
    assert (pattern.low_port, pattern.high_port) == ports


@pytest.mark.parametrize(
    "text", ["db", ":80", "db:", "db:x", "db:70000", "db:9-1", "2001:db8::1:80", "[db]:80", "a b:1"]
)
def test_bad_patterns(text):
    with pytest.raises(PatternError):
        parse_pattern(text)


def test_no_list_allows_everything_and_an_empty_list_on_purpose_nothing():
    assert AllowList().check_target("anything", 1) is None
    assert AllowList().check_resolved("anything", "127.0.0.1", 1) is None
    nowhere = AllowList((), "allow-connect of client bob", restrictive=True)
    assert "not allowed" in (nowhere.check_target("db", 1) or "")
    assert Policy().overridden(nowhere, None).connect is nowhere


def test_targets_as_written():
    rules = allow("db.internal:5432", "*.example.com:443", "10.0.0.0/8:*", "*:80")
    assert rules.check_target("db.internal", 5432) is None
    assert rules.check_target("DB.internal", 5432) is None  # names are not case-sensitive
    assert rules.check_target("api.example.com", 443) is None
    assert rules.check_target("10.1.2.3", 22) is None
    assert rules.check_target("93.184.216.34", 80) is None  # * allows a public address
    refused = [("db.internal", 5433), ("example.com", 443), ("11.0.0.1", 22),
               ("127.0.0.1", 80), ("169.254.169.254", 80)]  # fmt: skip
    for host, port in refused:
        assert rules.check_target(host, port) == (
            f"{host}:{port} is not allowed by the server's --allow-connect"
        ), (host, port)


def test_resolved_addresses_are_checked_again():
    rules = allow("*:443", "intranet.example:80", "10.0.0.0/8:80")
    assert rules.check_resolved("example.org", "93.184.216.34", 443) is None
    assert rules.check_resolved("intranet.example", "10.0.0.5", 80) is None  # its network named
    rebinding = rules.check_resolved("evil.example.org", "127.0.0.1", 443)
    assert rebinding == (
        "evil.example.org resolves to 127.0.0.1, a non-public address that no "
        "--allow-connect network covers"
    )
    assert rules.check_resolved("evil.example.org", "169.254.169.254", 443) is not None
    assert rules.check_resolved("evil.example.org", "::ffff:127.0.0.1", 443) is not None
    assert rules.check_resolved("intranet.example", "192.168.1.1", 80) is not None


def test_binds():
    rules = allow("127.0.0.1:8000-8999", "[::1]:*", flag="--allow-bind")
    assert rules.check_bind("127.0.0.1", 8080) is None
    assert rules.check_bind("::1", 0) is None  # any port: the system may pick one
    assert rules.check_bind("127.0.0.1", 0) is not None  # a picked port may fall outside
    assert rules.check_bind("127.0.0.1", 9000) == (
        "127.0.0.1:9000 is not allowed by the server's --allow-bind"
    )
    assert rules.check_bind("0.0.0.0", 8080) is not None


def test_socket_paths_are_refused_unless_a_path_pattern_allows_them():
    """Safe by default: no list, or host patterns only, allow no Unix socket; a path
    pattern allows what it matches, ``*`` within one component only; path patterns
    leave host targets as they were."""
    assert "only where --allow-connect names them" in AllowList().check_path("/run/a.sock")
    hosts = AllowList.parse(["*:*"], "--allow-connect")
    assert "only where --allow-connect names them" in hosts.check_path("/run/a.sock")
    rules = AllowList.parse(["/run/redis/*.sock", "/tmp/r?.sock"], "--allow-connect")
    assert rules.check_path("/run/redis/main.sock") is None
    assert rules.check_path("/tmp/r1.sock") is None
    assert "not allowed" in rules.check_path("/run/redis/sub/main.sock")
    assert "not allowed" in rules.check_path("/tmp/r12.sock")
    assert "plain form" in rules.check_path("/run/redis/../../etc/x.sock")
    assert "plain form" in rules.check_path("/run/redis//main.sock")
    assert "plain form" in rules.check_path("/run/redis/./main.sock")
    # Found in review: a path is written into the log, so no control character passes.
    assert "plain form" in rules.check_path("/run/redis/x\nFORGED log line.sock")
    assert rules.check_target("10.1.2.3", 5432) is None  # no host pattern: hosts unchanged
    given = AllowList.parse(["/run/redis/*.sock"], "allow-connect of client a", restrictive=True)
    assert given.check_target("10.1.2.3", 5432) is not None  # a clients-file list is all


@pytest.mark.parametrize("text", ["/run/../x.sock", "/run//x.sock", "/", "/" + "x" * 107])
def test_bad_path_patterns(text):
    with pytest.raises(PatternError):
        parse_pattern(text)


def test_udp_patterns_allow_udp_and_only_udp():
    """Once a list names any host, TCP and UDP are each held to their own patterns;
    no list restricts neither."""
    assert AllowList().check_target("10.0.0.53", 53, udp=True) is None
    rules = AllowList.parse(["udp/10.0.0.0/8:53", "db.internal:5432"], "--allow-connect")
    assert rules.check_target("10.0.0.53", 53, udp=True) is None
    assert rules.check_resolved("dns", "10.1.2.3", 53, udp=True) is None
    assert "udp/10.0.0.53:54 is not allowed" in rules.check_target("10.0.0.53", 54, udp=True)
    assert rules.check_target("10.0.0.53", 53) is not None  # the UDP pattern allows no TCP
    assert rules.check_target("db.internal", 5432, udp=True) is not None  # nor the reverse
    tcp_only = AllowList.parse(["*:443"], "--allow-connect")
    assert tcp_only.check_target("1.1.1.1", 53, udp=True) is not None
    binds = AllowList.parse(["udp/127.0.0.1:5000-5999"], "--allow-bind")
    assert binds.check_bind("127.0.0.1", 5353, udp=True) is None
    assert binds.check_bind("127.0.0.1", 5353) is not None
    with pytest.raises(PatternError):
        parse_pattern("udp//run/x.sock")


def test_a_udp_refusal_by_a_list_of_tcp_patterns_says_why():
    """Found by a new-user trial: ``--allow-connect 127.0.0.1:53`` refused ``-L udp``
    without saying that TCP patterns allow no UDP."""
    tcp_only = AllowList.parse(["127.0.0.1:53"], "--allow-connect")
    assert "no udp/HOST:PORTS pattern" in tcp_only.check_target("127.0.0.1", 53, udp=True)
    both = AllowList.parse(["127.0.0.1:53", "udp/127.0.0.1:54"], "--allow-connect")
    assert "udp/HOST:PORTS" not in both.check_target("127.0.0.1", 53, udp=True)
    with pytest.raises(PatternError, match="a UDP pattern is udp/HOST:PORTS"):
        parse_pattern("udp:127.0.0.1:53")
    with pytest.raises(PatternError, match="'udp/\\*' is not HOST:PORTS"):
        parse_pattern("udp/*")
