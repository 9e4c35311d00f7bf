"""Who a client is for rate limiting: X-Forwarded-For from trusted proxies only, API keys."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog.config import ConfigError
from proxy.ratelimit.identity import (
    MAX_FORWARDED_HOPS,
    Client,
    KeyLimit,
    address_id,
    api_keys_from_env,
    client_address,
    identify,
    key_id,
    parse_api_keys,
)

TRUSTED = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("fd00::/8"),
)
KEY = "storefront-ssr-3f9c2a7be1d04c6a"
OTHER_KEY = "partner-acme-7Hq2xLp9VwZk"
KEYS = {KEY: KeyLimit(max=1000, ttl_ms=60_000)}


def address(peer: str | None, *forwarded_for: str) -> str | None:
    return client_address(peer, list(forwarded_for), TRUSTED)


# --- X-Forwarded-For ---------------------------------------------------------------------------


def test_without_a_header_the_client_is_the_peer() -> None:
    assert address("203.0.113.7") == "203.0.113.7"
    assert address("10.0.0.1") == "10.0.0.1"
    assert address("10.0.0.1", "") == "10.0.0.1"
    assert address("10.0.0.1", " , ,") == "10.0.0.1"


def test_a_forged_header_from_an_untrusted_peer_is_ignored() -> None:
    assert address("203.0.113.7", "198.51.100.1") == "203.0.113.7"
    assert address("203.0.113.7", "10.0.0.1") == "203.0.113.7"
    assert address("203.0.113.7", "198.51.100.1, 10.0.0.2", "198.51.100.3") == "203.0.113.7"


def test_a_trusted_peer_forwards_the_right_most_address() -> None:
    assert address("10.0.0.1", "203.0.113.7") == "203.0.113.7"


def test_two_trusted_hops_are_skipped() -> None:
    # client -> CDN edge (192.168.1.1) -> load balancer (10.0.0.1) -> us
    assert address("10.0.0.1", "203.0.113.7, 192.168.1.1") == "203.0.113.7"


def test_entries_the_client_invents_on_the_left_are_ignored() -> None:
    forged = "1.1.1.1, 10.0.0.9, garbage, 198.51.100.99"
    assert address("10.0.0.1", f"{forged}, 203.0.113.7, 192.168.1.1") == "203.0.113.7"


def test_several_header_values_are_joined_in_order() -> None:
    assert address("10.0.0.1", "198.51.100.1", "203.0.113.7, 192.168.1.1") == "203.0.113.7"
    assert address("10.0.0.1", "198.51.100.1, 203.0.113.7", "192.168.1.1") == "203.0.113.7"
    assert address("10.0.0.1", "203.0.113.7", "192.168.1.1", "") == "203.0.113.7"


@pytest.mark.parametrize("junk", ["unknown", "_hidden", "not an address", "1.2.3", "256.1.1.1", "01.2.3.4"])
def test_junk_stops_the_walk_at_the_last_trusted_hop(junk: str) -> None:
    assert address("10.0.0.1", f"203.0.113.7, {junk}, 192.168.1.1") == "192.168.1.1"
    assert address("10.0.0.1", f"203.0.113.7, {junk}") == "10.0.0.1"


def test_an_all_trusted_chain_is_its_left_most_address() -> None:
    assert address("10.0.0.1", "192.168.5.5, 10.1.2.3") == "192.168.5.5"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("203.0.113.7:5678", "203.0.113.7"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[::ffff:203.0.113.7]:80", "203.0.113.7"),
        ("2001:db8::1:443", "2001:db8::1:443"),  # unbracketed IPv6 takes no port
        ("fe80::1%eth0", "fe80::1"),
    ],
)
def test_ports_brackets_and_zones(entry: str, expected: str) -> None:
    assert address("10.0.0.1", entry) == expected


@pytest.mark.parametrize(
    "entry", ["203.0.113.7:", "203.0.113.7:65536", "203.0.113.7:x", "[203.0.113.7]", "[2001:db8::1", "[::1]80"]
)
def test_malformed_ports_and_brackets_are_junk(entry: str) -> None:
    assert address("10.0.0.1", f"198.51.100.1, {entry}") == "10.0.0.1"


def test_ipv6_is_compressed_and_ipv4_mapped_is_ipv4() -> None:
    assert address("2001:0DB8:0000:0000:0000:0000:0000:0001") == "2001:db8::1"
    assert address("::ffff:203.0.113.7") == "203.0.113.7"
    assert address("::ffff:10.0.0.1", "203.0.113.7") == "203.0.113.7"  # the mapped peer is trusted
    assert address("fd00::1", "2001:0db8::0:1, ::ffff:c0a8:0101") == "2001:db8::1"  # mapped 192.168.1.1


@pytest.mark.parametrize("peer", [None, "", "unix:/run/hos.sock", "203.0.113.7:5678"])
def test_a_missing_or_invalid_peer_has_no_address(peer: str | None) -> None:
    assert address(peer, "203.0.113.7") is None


def test_nothing_is_trusted_by_default() -> None:
    assert client_address("10.0.0.1", ["203.0.113.7"], ()) == "10.0.0.1"


# --- identify ----------------------------------------------------------------------------------


def test_a_known_api_key_wins_over_the_address() -> None:
    client = identify("10.0.0.1", ["203.0.113.7"], KEY, TRUSTED, KEYS)
    assert client == Client(id=key_id(KEY), limit=KEYS[KEY])


@pytest.mark.parametrize("api_key", [None, "", OTHER_KEY, KEY.upper(), KEY + " "])
def test_an_unknown_or_empty_key_is_ignored(api_key: str | None) -> None:
    assert identify("10.0.0.1", ["203.0.113.7"], api_key, TRUSTED, KEYS) == Client("ip:203.0.113.7", None)


def test_the_key_id_is_a_hash_and_never_contains_the_key() -> None:
    client_id = identify("203.0.113.7", [], KEY, TRUSTED, KEYS).id
    assert client_id == "key:" + hashlib.sha256(KEY.encode()).hexdigest()[:16]
    assert KEY not in client_id
    assert not any(KEY[i : i + 8] in client_id for i in range(len(KEY) - 7))
    assert key_id(OTHER_KEY) != client_id


def test_no_address_is_the_shared_unknown_client() -> None:
    assert identify(None, ["203.0.113.7"], None, TRUSTED, KEYS) == Client("ip:unknown", None)
    assert identify("garbage", [], OTHER_KEY, TRUSTED, KEYS) == Client("ip:unknown", None)
    assert identify(None, [], KEY, TRUSTED, KEYS).id == key_id(KEY)


def test_an_ipv6_client_is_its_network_by_default() -> None:
    assert identify("2001:db8:0:1::7", [], None, TRUSTED, KEYS).id == "ip:2001:db8:0:1::/64"


def test_at_prefix_128_an_ipv6_client_is_its_compressed_address() -> None:
    assert identify("2001:db8:0::7", [], None, TRUSTED, KEYS, ipv6_prefix=128).id == "ip:2001:db8::7"


def test_addresses_of_one_network_behind_a_trusted_proxy_share_one_client() -> None:
    ids = {identify("10.0.0.1", [f"2001:db8:5:6:{n:x}::{n:x}"], None, TRUSTED, KEYS).id for n in range(1, 500)}
    assert ids == {"ip:2001:db8:5:6::/64"}
    assert identify("10.0.0.1", ["2001:db8:5:7::1"], None, TRUSTED, KEYS).id == "ip:2001:db8:5:7::/64"
    assert identify("10.0.0.1", ["2001:db8:5:7::1"], None, TRUSTED, KEYS, ipv6_prefix=48).id == "ip:2001:db8:5::/48"


def test_an_ipv4_mapped_client_is_its_ipv4_address_not_a_network() -> None:
    assert identify("10.0.0.1", ["::ffff:203.0.113.9"], None, TRUSTED, KEYS).id == "ip:203.0.113.9"
    assert identify("::ffff:203.0.113.9", [], None, TRUSTED, KEYS).id == "ip:203.0.113.9"


def test_a_long_chain_of_trusted_hops_is_read_only_to_the_hop_limit() -> None:
    chain = ["203.0.113.7", *["10.0.0.2"] * (MAX_FORWARDED_HOPS + 5)]
    # The client far left is past the limit: the walk stops at the last trusted hop it read.
    assert address("10.0.0.1", ", ".join(chain)) == "10.0.0.2"
    within = ["203.0.113.8", *["10.0.0.2"] * (MAX_FORWARDED_HOPS - 1)]
    assert address("10.0.0.1", ", ".join(within)) == "203.0.113.8"


def test_an_overlong_entry_is_junk() -> None:
    assert address("10.0.0.1", "203.0.113.7, " + "1" * 10_000) == "10.0.0.1"


# --- properties --------------------------------------------------------------------------------


def _normalised(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _untrusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not any(_normalised(ip) in network for network in TRUSTED)


headers = st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=60), max_size=5)
forged_entries = st.lists(
    st.one_of(st.ip_addresses().map(str), st.sampled_from(["unknown", "10.0.0.9", "", " ", "[::1]:1"]), st.text()),
    max_size=6,
).map(", ".join)


@given(peer=st.ip_addresses().filter(_untrusted), forwarded_for=headers)
def test_an_untrusted_peer_is_itself_whatever_it_sends(
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address, forwarded_for: list[str]
) -> None:
    expected = address_id(_normalised(peer))
    assert identify(str(peer), forwarded_for, None, TRUSTED, KEYS).id == expected
    assert identify(str(peer), forwarded_for, OTHER_KEY, TRUSTED, KEYS).id == expected


@given(
    proxy=st.sampled_from(["10.0.0.1", "192.168.3.4", "fd00::5", "::ffff:10.9.9.9"]),
    client=st.ip_addresses().filter(_untrusted),
    forged=st.lists(st.one_of(forged_entries, st.text()), max_size=3),
    separate_header=st.booleans(),
)
def test_behind_one_trusted_proxy_the_client_is_what_the_proxy_appended(
    proxy: str,
    client: ipaddress.IPv4Address | ipaddress.IPv6Address,
    forged: list[str],
    separate_header: bool,
) -> None:
    # The proxy appends the address it saw, to the client's last header value or as a header of its own.
    if separate_header or not forged:
        forwarded_for = [*forged, str(client)]
    else:
        forwarded_for = [*forged[:-1], f"{forged[-1]}, {client}"]
    assert identify(proxy, forwarded_for, None, TRUSTED, KEYS).id == address_id(_normalised(client))


# --- configuration -----------------------------------------------------------------------------


def config_error(text: str, source: str = "RATE_LIMIT_KEYS") -> str:
    with pytest.raises(ConfigError) as caught:
        parse_api_keys(text, source)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_file_with_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(
        "# storefront server-side rendering\n"
        "\n"
        f"{KEY}   1000  60000\n"
        "   # an indented comment\n"
        f"\t{OTHER_KEY} 50 1000   # partner: 50 a second\r\n"
        "\n",
        encoding="utf-8",
    )
    assert api_keys_from_env({"RATE_LIMIT_KEYS_FILE": str(path)}) == {
        KEY: KeyLimit(max=1000, ttl_ms=60_000),
        OTHER_KEY: KeyLimit(max=50, ttl_ms=1000),
    }


def test_the_inline_form_separates_entries_by_commas_or_newlines() -> None:
    env = {"RATE_LIMIT_KEYS": f" {KEY} 1000 60000 ,\n{OTHER_KEY} 50 1000, "}
    assert api_keys_from_env(env) == {KEY: KeyLimit(1000, 60_000), OTHER_KEY: KeyLimit(50, 1000)}


def test_no_keys_configured() -> None:
    assert api_keys_from_env({}) == {}
    assert api_keys_from_env({"RATE_LIMIT_KEYS": " ", "RATE_LIMIT_KEYS_FILE": " "}) == {}


def test_a_byte_order_mark_is_not_part_of_the_first_key(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_bytes(b"\xef\xbb\xbf" + f"{KEY} 1 1\n".encode())
    assert api_keys_from_env({"RATE_LIMIT_KEYS_FILE": str(path)}) == {KEY: KeyLimit(1, 1)}


SECRET = "s3cr3t-do-not-log-0123456789"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (f"{SECRET} 100", "expected <key> <max> <ttl_ms>"),
        (f"{SECRET} 100 60000 extra", "found 4 field(s)"),
        (f"{SECRET} 0 60000", "max must be an integer from 1 to"),
        (f"{SECRET} -5 60000", "max must be an integer from 1 to"),
        (f"{SECRET} ten 60000", "max must be an integer from 1 to"),
        (f"{SECRET} 1.5 60000", "max must be an integer from 1 to"),
        (f"{SECRET} 1000000000001 60000", "max must be an integer from 1 to"),
        (f"{SECRET} 100 0", "ttl_ms must be an integer from 1 to"),
        (f"{SECRET} 100 60s", "ttl_ms must be an integer from 1 to"),
        ("short-s3cr3t 100 60000", "the key must be 16 to 200 characters"),
        ("s" * 201 + " 100 60000", "the key must be 16 to 200 characters"),
        (f"{SECRET}é 100 60000", "printable ASCII"),
        (f"100 60000 {SECRET}", "the key must be 16 to 200 characters"),
    ],
)
def test_a_malformed_line_names_the_line_and_not_the_key(line: str, reason: str) -> None:
    message = config_error(f"# comment\n{KEY} 1 1\n{line}\n", "RATE_LIMIT_KEYS_FILE: /etc/hos/keys")
    assert message.startswith("RATE_LIMIT_KEYS_FILE: /etc/hos/keys: line 3: ")
    assert reason in message
    for secret in (SECRET, "short-s3cr3t", "s" * 20):
        assert secret not in message


def test_an_inline_mistake_names_the_entry() -> None:
    message = config_error(f"{KEY} 1 1, {SECRET} 0 1")
    assert message == "RATE_LIMIT_KEYS: line 1, entry 2: max must be an integer from 1 to 1000000000000"
    assert config_error(f"{KEY} 1 1\n{SECRET} x 1").startswith("RATE_LIMIT_KEYS: line 2: max ")


def test_a_key_repeated_with_another_limit_is_an_error() -> None:
    message = config_error(f"{KEY} 100 60000\n{OTHER_KEY} 1 1\n{KEY} 100 1000")
    assert message == (
        "RATE_LIMIT_KEYS: line 3: this key is already defined with a different limit (RATE_LIMIT_KEYS: line 1)"
    )
    assert KEY not in message


def test_a_key_repeated_with_the_same_limit_is_accepted() -> None:
    assert parse_api_keys(f"{KEY} 100 60000, {KEY} 100 60000", "RATE_LIMIT_KEYS") == {KEY: KeyLimit(100, 60_000)}


def test_the_file_and_the_variable_are_merged(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"{KEY} 1000 60000\n", encoding="utf-8")
    env = {"RATE_LIMIT_KEYS_FILE": str(path), "RATE_LIMIT_KEYS": f"{OTHER_KEY} 50 1000, {KEY} 1000 60000"}
    assert api_keys_from_env(env) == {KEY: KeyLimit(1000, 60_000), OTHER_KEY: KeyLimit(50, 1000)}


def test_a_conflict_between_the_file_and_the_variable_names_both(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"\n{KEY} 1000 60000\n", encoding="utf-8")
    env = {"RATE_LIMIT_KEYS_FILE": str(path), "RATE_LIMIT_KEYS": f"{KEY} 10 60000"}
    with pytest.raises(ConfigError) as caught:
        api_keys_from_env(env)
    assert str(caught.value) == (
        "RATE_LIMIT_KEYS: line 1: this key is already defined with a different limit"
        f" (RATE_LIMIT_KEYS_FILE: {path}: line 2)"
    )


def test_a_mistake_in_the_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"{KEY} 1000\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^RATE_LIMIT_KEYS_FILE: .*keys: line 1: expected"):
        api_keys_from_env({"RATE_LIMIT_KEYS_FILE": str(path)})


def test_an_unreadable_file_names_the_variable_and_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        api_keys_from_env({"RATE_LIMIT_KEYS_FILE": str(tmp_path / "missing")})
    assert str(caught.value) == f"RATE_LIMIT_KEYS_FILE: cannot read {tmp_path / 'missing'}: No such file or directory"
    with pytest.raises(ConfigError, match=r"^RATE_LIMIT_KEYS_FILE: cannot read .*: Is a directory$"):
        api_keys_from_env({"RATE_LIMIT_KEYS_FILE": str(tmp_path)})


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_bytes(f"{KEY} 1 1\n".encode() + b"\xff\xfe-secret 1 1\n")
    with pytest.raises(ConfigError) as caught:
        api_keys_from_env({"RATE_LIMIT_KEYS_FILE": str(path)})
    assert str(caught.value) == f"RATE_LIMIT_KEYS_FILE: {path}: line 2: not UTF-8 text"


def _read_by_ipaddress(text: str) -> str | None:
    """The address as ipaddress alone reads it: the model of the peer parse."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if address.scope_id is not None:
            return str(ipaddress.IPv6Address(int(address)))
    return str(address)


octet_like = st.text(alphabet="0123456789", min_size=1, max_size=4)
ipv4_like = st.lists(octet_like, min_size=3, max_size=5).map(".".join)


@given(
    st.one_of(
        ipv4_like,
        ipv4_like.map(lambda text: f" {text}"),
        st.ip_addresses().map(str),
        st.text(alphabet="0123456789.:abcdefx%[] \x00", max_size=24),
    )
)
def test_an_address_reads_as_ipaddress_reads_it(text: str) -> None:
    """The peer's address: IPv4 is read by inet_pton first (fewer calls for a cold client), which
    must accept and refuse exactly what ipaddress does: leading zeros, octets over 255, three or
    five parts, spaces."""
    assert client_address(text, [], ()) == _read_by_ipaddress(text)
