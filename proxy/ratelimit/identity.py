"""Who a client is, for rate limiting: a known API key, otherwise an IP address.

A request becomes a :class:`Client` whose ``id`` names its token bucket. Pure: nothing here
performs I/O except :func:`api_keys_from_env` reading ``RATE_LIMIT_KEYS_FILE`` at start-up.

Decisions:

- **A known ``X-API-Key`` wins** over the address: the client is ``key:<id>`` with the key's own
  limit. An unknown or empty key is ignored (the client is its address, with the default limit),
  so guessing keys gains nothing and a wrong key is not an error here.
- **The raw key never leaves this module**: its id is ``key:`` and the first 16 hex digits
  (64 bits) of its SHA-256, and that id is what appears in Redis keys, logs and metrics.
  Configuration errors name the line, never its text. The lookup is a plain dict lookup: a
  string's comparison only runs when its (per-process randomised, 64-bit) hash matches a
  stored key's, so timing tells an attacker nothing about a key's characters.
- **Otherwise the client is its address**, ``ip:<address>``: IPv6 compressed (``2001:db8::1``),
  an IPv4-mapped IPv6 address as its IPv4 (``::ffff:192.0.2.1`` is ``192.0.2.1``), a zone
  (``%eth0``) dropped.
- **IPv6 clients are grouped by network** (``RATE_LIMIT_IPV6_PREFIX``, default 64): a host is
  usually assigned a whole /64 and can rotate its source address within it at will, so per
  address it would get a fresh budget with every request (and evict others from the per-worker
  state). The client is then ``ip:2001:db8:1:2::/64``; the hosts of one /64 share a bucket.
  128 keeps one bucket per address (``ip:2001:db8::1``). IPv4 is never grouped.
- **``X-Forwarded-For`` is believed only from a trusted peer** (``TRUSTED_PROXIES``). Anyone can
  write the header, so from any other peer it is ignored and the client is the peer itself.
- **From a trusted peer, the right-most untrusted address is the client.** Each proxy appends
  the address it saw, so the entries are read right to left (all header values joined in
  order, split on commas, trimmed, empty entries skipped), skipping trusted addresses; the
  first untrusted one is the client. Anything further left was written by the client and is
  never read, so inventing entries cannot change the identity.
- **An entry that is not an address stops the walk** (``unknown``, an obfuscated ``_hidden``,
  junk): nothing left of it is believed, and the client is the last trusted hop examined (the
  peer, when the right-most entry is junk). Ports are tolerated, as some proxies append them:
  ``192.0.2.1:5678``, ``[2001:db8::1]:443`` and ``[2001:db8::1]`` are the address alone;
  ``2001:db8::1:443`` is an IPv6 address (unbracketed IPv6 takes no port).
- **If every entry is trusted**, the client is the left-most one (a request from inside).
- **Bounded work**: at most :data:`MAX_FORWARDED_HOPS` entries are read from the right (a chain
  of trusted hops longer than that stops the walk as junk does), and an entry longer than
  :data:`MAX_ENTRY_CHARS` is junk, so a megabyte of header costs no more than a few entries.
- **No address at all** (no peer, or one that is not an IP address): the shared ``ip:unknown``.
- Only ``X-Forwarded-For`` is read, not the RFC 7239 ``Forwarded`` header.

API keys and their limits come from configuration (:func:`api_keys_from_env`):

- ``RATE_LIMIT_KEYS_FILE``: a path to a UTF-8 file of entries;
- ``RATE_LIMIT_KEYS``: the same entries inline.

One format for both. An entry is ``<key> <max> <ttl_ms>`` separated by whitespace: ``max``
tokens, refilled over ``ttl_ms`` milliseconds (as ``RATE_LIMIT_MAX`` and ``RATE_LIMIT_TTL`` are
for everyone else), each an integer from 1 to 10^12. Entries are separated by newlines or
commas; ``#`` starts a comment to the end of the line; blank lines and empty entries are
ignored. A key is 16 to 200 printable ASCII characters without spaces, ``#`` or ``,``. For
example, a file::

    # storefront server-side rendering: 1000 requests a minute
    3f9c2a7be1d04c6a8e5b   1000  60000
    partner-acme-7Hq2xLp9Vw  50   1000   # partner: 50 a second

or inline: ``RATE_LIMIT_KEYS="3f9c2a7be1d04c6a8e5b 1000 60000, partner-acme-7Hq2xLp9Vw 50 1000"``.
Both may be set; they are merged, and a key given twice must have the same limit both times.
A mistake raises ``ConfigError`` naming the variable (and the file) and the line — and the
entry within the line, when a line holds several — never the text, which holds a secret.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from catalog.config import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

UNKNOWN_CLIENT_ID: Final = "ip:unknown"
DEFAULT_IPV6_PREFIX: Final = 64
# Wider than any network a single host is assigned; narrower than the whole address.
MIN_IPV6_PREFIX: Final = 32
MAX_IPV6_PREFIX: Final = 128
# Real chains are a CDN, a load balancer and an ingress or two; anything longer is junk.
MAX_FORWARDED_HOPS: Final = 16
# "[ffff:...:ffff%zone]:65535" fits with room for a zone name; longer is not an address.
MAX_ENTRY_CHARS: Final = 64
KEY_ID_HEX_CHARS: Final = 16
MIN_KEY_CHARS: Final = 16
MAX_KEY_CHARS: Final = 200
MAX_LIMIT_VALUE: Final = 10**12

_PORT = re.compile(r"[0-9]{1,5}")
_LIMIT_DIGITS = re.compile(r"[0-9]{1,13}")
_FORMAT: Final = "<key> <max> <ttl_ms>"


@dataclass(frozen=True, slots=True)
class KeyLimit:
    """An API key's own bucket: ``max`` tokens, refilled over ``ttl_ms`` milliseconds."""

    max: int
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class Client:
    """Who a request is from: ``id`` names the bucket; ``limit`` is None for the default limit."""

    id: str
    limit: KeyLimit | None


# --- addresses -------------------------------------------------------------------------------


# Parsed addresses and trust, remembered for a bounded number of texts (attacker-chosen: the bound
# is what keeps them harmless): every cold client's identity parsed the trusted peer's address and
# checked it against TRUSTED_PROXIES again, half of the ipaddress work of a first decision
# (cProfile of 10,000 cold decisions, issue 24).
_REMEMBERED_ADDRESSES: Final = 1024


@functools.lru_cache(maxsize=_REMEMBERED_ADDRESSES)
def _address(text: str) -> IPAddress | None:
    """A bare IP address, normalised (IPv4-mapped IPv6 as IPv4, no zone); None if it is not one."""
    try:
        # Dotted-quad IPv4 first, in C: inet_pton reads exactly what ipaddress reads (four decimal
        # octets, no leading zeros). ipaddress's parse was ~20 of a cold client's ~140 calls
        # (counted, benchmarks.ratelimit); building from the 4 bytes parses nothing.
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):  # not an IPv4 address (ValueError: an embedded NUL)
        pass
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(int(address))
    return address


def _valid_port(text: str) -> bool:
    return bool(_PORT.fullmatch(text)) and int(text) <= 65535


def _forwarded_address(entry: str) -> IPAddress | None:
    """One ``X-Forwarded-For`` entry: an address, ``ipv4:port``, ``[ipv6]`` or ``[ipv6]:port``."""
    if entry.startswith("["):
        inside, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and _valid_port(rest[1:]))):
            return None
        address = _address(inside)
        # Brackets are IPv6 syntax; a mapped address inside is still IPv6 as written.
        return address if address is not None and ":" in inside else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        address = _address(host)
        return address if isinstance(address, ipaddress.IPv4Address) and _valid_port(port) else None
    return _address(entry)


@functools.lru_cache(maxsize=_REMEMBERED_ADDRESSES)
def _trusted(address: IPAddress, trusted: tuple[Network, ...]) -> bool:
    # A network of the other IP version never contains the address (no error, just False).
    return any(address in network for network in trusted)


def _client_address(peer: str | None, forwarded_for: list[str], trusted: tuple[Network, ...]) -> IPAddress | None:
    if peer is None:
        return None
    hop = _address(peer)
    if hop is None:
        return None
    if not forwarded_for or not _trusted(hop, trusted):
        return hop
    # rsplit from the right: entries beyond the hop limit are never even split apart.
    entries = ",".join(forwarded_for).rsplit(",", MAX_FORWARDED_HOPS)
    if len(entries) > MAX_FORWARDED_HOPS:
        del entries[0]  # the unread rest: the walk stops before it, as at junk
    for raw in reversed(entries):
        entry = raw.strip()
        if not entry:
            continue
        address = _forwarded_address(entry) if len(entry) <= MAX_ENTRY_CHARS else None
        if address is None:
            break  # junk: nothing further left is believed; the last trusted hop is the client
        if not _trusted(address, trusted):
            return address
        hop = address
    return hop


def client_address(peer: str | None, forwarded_for: list[str], trusted: tuple[Network, ...]) -> str | None:
    """The client's normalised address, or None when the peer is missing or not an IP address.

    ``peer`` is the direct peer (aiohttp's ``request.remote``); ``forwarded_for`` is every
    ``X-Forwarded-For`` value, in order (``request.headers.getall(..., [])``); ``trusted`` is
    ``TRUSTED_PROXIES``. See the module docstring for the rules.
    """
    address = _client_address(peer, forwarded_for, trusted)
    return None if address is None else str(address)


def address_id(address: IPAddress, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """The bucket id of an address: ``ip:<IPv4>``, or ``ip:<IPv6 network>/<prefix>`` (the
    address itself at 128)."""
    if isinstance(address, ipaddress.IPv4Address) or ipv6_prefix >= MAX_IPV6_PREFIX:
        return f"ip:{address}"
    return f"ip:{ipaddress.IPv6Network((address, ipv6_prefix), strict=False)}"


# --- identities ------------------------------------------------------------------------------


def key_id(api_key: str) -> str:
    """The bucket id of an API key: safe to store, log and export; the key cannot be recovered."""
    return "key:" + hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:KEY_ID_HEX_CHARS]


def identify(
    peer: str | None,
    forwarded_for: list[str],
    api_key: str | None,
    trusted: tuple[Network, ...],
    keys: Mapping[str, KeyLimit],
    ipv6_prefix: int = DEFAULT_IPV6_PREFIX,
) -> Client:
    """The client a request counts against: a known API key, else its address (IPv6 by its
    ``ipv6_prefix`` network), else ``ip:unknown``."""
    if api_key:
        limit = keys.get(api_key)
        if limit is not None:
            return Client(key_id(api_key), limit)
    address = _client_address(peer, forwarded_for, trusted)
    return Client(UNKNOWN_CLIENT_ID if address is None else address_id(address, ipv6_prefix), None)


# --- configuration ---------------------------------------------------------------------------


def _limit_value(text: str, name: str) -> int | str:
    """The integer, or the reason it is not one (the text itself is never part of the reason)."""
    if not _LIMIT_DIGITS.fullmatch(text) or not 1 <= int(text) <= MAX_LIMIT_VALUE:
        return f"{name} must be an integer from 1 to {MAX_LIMIT_VALUE}"
    return int(text)


def _entry(fields: list[str]) -> tuple[str, KeyLimit] | str:
    """A parsed entry, or the reason it is malformed."""
    if len(fields) != 3:
        return f"expected {_FORMAT} separated by spaces, found {len(fields)} field(s)"
    key, raw_max, raw_ttl = fields
    if not MIN_KEY_CHARS <= len(key) <= MAX_KEY_CHARS:
        return f"the key must be {MIN_KEY_CHARS} to {MAX_KEY_CHARS} characters"
    if not all("!" <= char <= "~" for char in key):
        return "the key must be printable ASCII without spaces, '#' or ','"
    tokens = _limit_value(raw_max, "max")
    if isinstance(tokens, str):
        return tokens
    ttl_ms = _limit_value(raw_ttl, "ttl_ms")
    if isinstance(ttl_ms, str):
        return ttl_ms
    return key, KeyLimit(max=tokens, ttl_ms=ttl_ms)


def _entries(text: str, source: str) -> Iterator[tuple[str, KeyLimit, str]]:
    """(key, limit, where) for each entry; ``where`` names the source and line, never the key."""
    # Lines are counted at "\n" only, as editors do (str.splitlines also breaks at \x0c, \x1c...).
    for number, line in enumerate(text.split("\n"), start=1):
        parts = line.partition("#")[0].split(",")
        for index, part in enumerate(parts, start=1):
            fields = part.split()
            if not fields:
                continue
            where = f"{source}: line {number}" + (f", entry {index}" if len(parts) > 1 else "")
            parsed = _entry(fields)
            if isinstance(parsed, str):
                raise ConfigError(f"{where}: {parsed}")
            yield (*parsed, where)


def _merge(into: dict[str, KeyLimit], origins: dict[str, str], entries: Iterator[tuple[str, KeyLimit, str]]) -> None:
    for key, limit, where in entries:
        known = into.get(key)
        if known is not None and known != limit:
            raise ConfigError(f"{where}: this key is already defined with a different limit ({origins[key]})")
        into[key] = limit
        origins.setdefault(key, where)


def parse_api_keys(text: str, source: str) -> dict[str, KeyLimit]:
    """API keys and their limits from ``text`` (see the module docstring for the format).

    ``source`` begins every error message, e.g. ``RATE_LIMIT_KEYS`` or
    ``RATE_LIMIT_KEYS_FILE: /etc/hos/keys``. A key repeated with the same limit is accepted.
    """
    keys: dict[str, KeyLimit] = {}
    _merge(keys, {}, _entries(text, source))
    return keys


def api_keys_from_env(env: Mapping[str, str]) -> dict[str, KeyLimit]:
    """The keys of ``RATE_LIMIT_KEYS_FILE`` and ``RATE_LIMIT_KEYS``, merged; {} when neither is set."""
    keys: dict[str, KeyLimit] = {}
    origins: dict[str, str] = {}
    raw_path = env.get("RATE_LIMIT_KEYS_FILE", "").strip()
    if raw_path:
        path = Path(raw_path)
        try:
            # utf-8-sig: a byte-order mark left by an editor is not part of the first key.
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise ConfigError(f"RATE_LIMIT_KEYS_FILE: cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            line = exc.object[: exc.start].count(b"\n") + 1
            raise ConfigError(f"RATE_LIMIT_KEYS_FILE: {path}: line {line}: not UTF-8 text") from None
        _merge(keys, origins, _entries(text, f"RATE_LIMIT_KEYS_FILE: {path}"))
    _merge(keys, origins, _entries(env.get("RATE_LIMIT_KEYS", ""), "RATE_LIMIT_KEYS"))
    return keys
