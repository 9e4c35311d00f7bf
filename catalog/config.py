"""Reading settings from the environment, with one clear line per mistake.

Each service reads its environment once, at start-up, into a frozen dataclass (see
``proxy.settings`` and ``indexer.settings``); these helpers are the shared parsing rules, and
:func:`setting` declares a field's variable, default and bounds once, for the dataclass and for
:func:`read_settings` alike (the settings both services read are :class:`SharedSettings`). A bad
value raises :class:`ConfigError` naming the variable; entry points print it and exit 2.
Nothing here reads ``os.environ`` by itself: callers pass the mapping in.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final
from urllib.parse import urlsplit

from catalog.errors import CatalogError

DEFAULT_DATABASE_URL = "postgresql://postgres@localhost:5432/hos_search"
DEFAULT_REDIS_URL = "redis://localhost:6379"
DEFAULT_ELASTICSEARCH_NODE = "http://localhost:9200"
DEFAULT_SEARCH_INDEX = "products"
DEFAULT_REDIS_KEY_PREFIX = "hos:"


class ConfigError(CatalogError):
    """A setting is missing or malformed; the message names the variable."""


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def env_int(
    env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} is below the minimum of {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value} is above the maximum of {maximum}")
    return value


def env_float(
    env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0, maximum: float | None = None
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not value >= minimum or value == float("inf"):
        raise ConfigError(f"{name}={raw!r} must be a finite number of at least {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value:g} is above the maximum of {maximum:g}")
    return value


_INTERVAL = re.compile(r"^([1-9][0-9]*)(ms|s|m)$")
_INTERVAL_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0}
NEVER = "-1"


def interval_seconds(value: str) -> float | None:
    """The seconds of an engine time value such as ``1s``, ``500ms`` or ``2m``; None for ``-1``
    (never) or anything that is not such a value."""
    match = _INTERVAL.match(value.strip())
    return None if match is None else int(match[1]) * _INTERVAL_UNIT_S[match[2]]


def env_interval(env: Mapping[str, str], name: str, default: str) -> str:
    """An engine time value such as ``1s`` or ``500ms`` (``-1``: never), as the engine takes it."""
    raw = env_str(env, name, default)
    if raw != NEVER and interval_seconds(raw) is None:
        raise ConfigError(f"{name}={raw!r} is not an interval like 1s, 500ms or 2m (or -1 for never)")
    return raw


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


_PASSWORD_PARAMETER = re.compile(r"((?:^|[?&;\s])password=)[^&;\s]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` fit for a log line or an error message: its password, if any, is ``***``.

    Covers ``scheme://user:password@host`` (up to the last ``@``, so a password with an ``@``
    in it is covered too) and a ``password=`` parameter (libpq's query form); a comma-separated
    list of URLs (``ELASTICSEARCH_NODE``) is redacted URL by URL.
    """
    if url.count("://") > 1:
        return ",".join(redact_url(part) for part in url.split(","))
    scheme_end = url.find("://")
    at = url.rfind("@")
    if scheme_end >= 0 and at > scheme_end:
        start = scheme_end + 3
        user, colon, _ = url[start:at].partition(":")
        url = url[:start] + user + (":***" if colon else "") + url[at:]
    return _PASSWORD_PARAMETER.sub(r"\1***", url)


def env_url(env: Mapping[str, str], name: str, default: str, *, schemes: tuple[str, ...]) -> str:
    """A URL whose scheme is one of ``schemes`` and that names a host.

    Errors show the URL without its password (:func:`redact_url`).
    """
    raw = env_str(env, name, default)
    shown = redact_url(raw)
    try:
        parts = urlsplit(raw)
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        # Not the parser's reason: it quotes parts of the URL as written, a password among them.
        raise ConfigError(f"{name}={shown!r} is not a valid URL (its host or port is malformed)") from None
    if parts.scheme not in schemes:
        raise ConfigError(f"{name}={shown!r} must start with {' or '.join(s + '://' for s in schemes)}")
    if not parts.hostname and not (parts.scheme.startswith("postgres") and "host=" in parts.query):
        raise ConfigError(f"{name}={shown!r} names no host")
    del port
    return raw


def env_networks(env: Mapping[str, str], name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A comma-separated list of CIDRs (or single addresses)."""
    raw = env.get(name, "").strip()
    networks = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an IP address or CIDR") from None
    return tuple(networks)


def database_url(env: Mapping[str, str]) -> str:
    return env_url(env, "DATABASE_URL", DEFAULT_DATABASE_URL, schemes=("postgresql", "postgres"))


def redis_url(env: Mapping[str, str]) -> str:
    """One URL, or (for a Redis Cluster) several comma-separated: each is checked."""
    raw = env_str(env, "REDIS_URL", DEFAULT_REDIS_URL)
    for part in raw.split(","):
        env_url({"REDIS_URL": part}, "REDIS_URL", DEFAULT_REDIS_URL, schemes=("redis", "rediss", "unix"))
    return raw


# A node list longer than this is a pasted mistake; a client needs a few seeds, not the cluster.
MAX_ENGINE_NODES = 32


def engine_nodes(value: str) -> list[str]:
    """The node URLs of an ``ELASTICSEARCH_NODE`` value (one URL, or several comma-separated)."""
    return [part.strip() for part in value.split(",") if part.strip()]


def elasticsearch_node(env: Mapping[str, str]) -> str:
    """One engine URL, or a comma-separated list of a cluster's nodes; each is checked on its own."""
    nodes = engine_nodes(env_str(env, "ELASTICSEARCH_NODE", DEFAULT_ELASTICSEARCH_NODE))
    if not nodes:
        raise ConfigError("ELASTICSEARCH_NODE names no node")
    if len(nodes) > MAX_ENGINE_NODES:
        raise ConfigError(f"ELASTICSEARCH_NODE lists {len(nodes)} nodes; at most {MAX_ENGINE_NODES} (a few seeds do)")
    for node in nodes:
        env_url({"ELASTICSEARCH_NODE": node}, "ELASTICSEARCH_NODE", node, schemes=("http", "https"))
    return ",".join(nodes)


@dataclass(frozen=True)
class EngineAccess:
    """How to reach and sign in to a (secured) engine, besides its URLs; secrets stay out of ``repr``.

    Certificate verification is always on: ``ca_certs`` only adds the CA to trust.
    """

    api_key: str = field(default="", repr=False)
    username: str = ""
    password: str = field(default="", repr=False)
    ca_certs: str = ""  # a PEM file
    cloud_id: str = ""
    sniff: bool = False

    @property
    def credential_setting(self) -> str:
        """The setting(s) to blame when the engine refuses us."""
        if self.api_key:
            return "ELASTICSEARCH_API_KEY"
        if self.username:
            return "ELASTICSEARCH_USERNAME/ELASTICSEARCH_PASSWORD"
        return "ELASTICSEARCH_API_KEY (or ELASTICSEARCH_USERNAME/ELASTICSEARCH_PASSWORD)"


def _check_ca_file(path: str) -> None:
    try:
        ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        raise ConfigError(f"ELASTICSEARCH_CA_CERTS={path!r}: no such file") from None
    except ssl.SSLError:  # before OSError: it is one
        raise ConfigError(f"ELASTICSEARCH_CA_CERTS={path!r} holds no PEM certificate") from None
    except OSError as exc:
        raise ConfigError(f"ELASTICSEARCH_CA_CERTS={path!r}: cannot read it ({exc.strerror})") from None


def _check_cloud_id(cloud_id: str) -> None:
    # "<deployment name>:<base64 of host$es-uuid$kibana-uuid>", as Elastic Cloud shows it.
    encoded = cloud_id.rpartition(":")[2]
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    if decoded.count("$") < 1:
        raise ConfigError("ELASTICSEARCH_CLOUD_ID is not a Cloud ID (name:base64 from the Elastic Cloud console)")


def engine_access(env: Mapping[str, str]) -> EngineAccess:
    """The engine's credentials, CA, Cloud ID and sniffing; contradictions fail naming the settings."""
    access = EngineAccess(
        api_key=env.get("ELASTICSEARCH_API_KEY", "").strip(),
        username=env.get("ELASTICSEARCH_USERNAME", "").strip(),
        password=env.get("ELASTICSEARCH_PASSWORD", ""),
        ca_certs=env.get("ELASTICSEARCH_CA_CERTS", "").strip(),
        cloud_id=env.get("ELASTICSEARCH_CLOUD_ID", "").strip(),
        sniff=env_bool(env, "ELASTICSEARCH_SNIFF", False),
    )
    if access.api_key and (access.username or access.password):
        raise ConfigError("ELASTICSEARCH_API_KEY and ELASTICSEARCH_USERNAME/PASSWORD: set one way to sign in, not both")
    if bool(access.username) != bool(access.password):
        missing = "ELASTICSEARCH_PASSWORD" if access.username else "ELASTICSEARCH_USERNAME"
        raise ConfigError(f"{missing} is missing: ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD go together")
    if access.ca_certs:
        _check_ca_file(access.ca_certs)
    if access.cloud_id:
        _check_cloud_id(access.cloud_id)
        if env.get("ELASTICSEARCH_NODE", "").strip():
            raise ConfigError("ELASTICSEARCH_CLOUD_ID and ELASTICSEARCH_NODE: set one of them, not both")
        if access.sniff:
            raise ConfigError("ELASTICSEARCH_SNIFF cannot be used with ELASTICSEARCH_CLOUD_ID (Cloud routes for you)")
    return access


def search_index(env: Mapping[str, str]) -> str:
    value = env_str(env, "SEARCH_INDEX", DEFAULT_SEARCH_INDEX)
    # Elasticsearch index-name rules: lowercase, no spaces or special characters.
    if value != value.lower() or not value.replace("_", "").replace("-", "").isalnum() or value.startswith(("_", "-")):
        raise ConfigError(f"SEARCH_INDEX={value!r} must be a lowercase name of letters, digits, _ and -")
    return value


# --- settings declared once: name, default and bounds in one place ------------------------------

_ENV: Final = "env"


@dataclass(frozen=True, slots=True)
class EnvVar:
    """Where a settings field comes from: its variable and bounds. ``read`` parses kinds other
    than bool, int, float and str (``read(env, name, default)``, raising ConfigError)."""

    name: str
    minimum: float | None = None
    maximum: float | None = None
    read: Callable[[Mapping[str, str], str, Any], Any] | None = None

    def value(self, env: Mapping[str, str], default: Any) -> Any:
        if self.read is not None:
            return self.read(env, self.name, default)
        if isinstance(default, bool):
            return env_bool(env, self.name, default)
        if isinstance(default, int):
            low, high = self.minimum, self.maximum
            return env_int(
                env,
                self.name,
                default,
                minimum=None if low is None else int(low),
                maximum=None if high is None else int(high),
            )
        if isinstance(default, float):
            return env_float(env, self.name, default, minimum=self.minimum or 0.0, maximum=self.maximum)
        return env_str(env, self.name, default)


def setting(
    name: str,
    default: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    read: Callable[[Mapping[str, str], str, Any], Any] | None = None,
) -> Any:
    """A settings dataclass field read from the variable ``name``: its default and bounds are
    written here once, for the dataclass and :func:`read_settings` alike."""
    return field(default=default, metadata={_ENV: EnvVar(name, minimum, maximum, read)})


def read_settings(cls: type[Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Every field of ``cls`` declared with :func:`setting`, read from ``env`` (its default when
    the variable is unset or empty); fields declared otherwise are the caller's to fill."""
    return {f.name: f.metadata[_ENV].value(env, f.default) for f in fields(cls) if _ENV in f.metadata}


class Seconds:
    """A duration read as seconds from the millisecond field ``<name>_ms`` of a settings
    dataclass (the environment's unit): the one place where settings' ms become seconds."""

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._field = name + "_ms"

    def __get__(self, settings: object, owner: type[Any] | None = None) -> float:
        return float(getattr(settings, self._field)) / 1000


def _reader(read: Callable[[Mapping[str, str]], Any]) -> Callable[[Mapping[str, str], str, Any], Any]:
    """A field reader from one of the functions above that read a whole shared setting."""
    return lambda env, name, default: read(env)


_DATABASE_URL, _REDIS_URL, _ELASTICSEARCH_NODE, _SEARCH_INDEX = (
    database_url,
    redis_url,
    elasticsearch_node,
    search_index,
)


@dataclass(frozen=True)
class SharedSettings:
    """What the proxy and the indexer both read: the three servers, the alias, the Redis prefix.

    Both services' settings dataclasses extend it, so each shared default is written once.
    """

    database_url: str = setting("DATABASE_URL", DEFAULT_DATABASE_URL, read=_reader(_DATABASE_URL))
    redis_url: str = setting("REDIS_URL", DEFAULT_REDIS_URL, read=_reader(_REDIS_URL))
    # REDIS_URL names nodes of a Redis Cluster (never guessed from the server; catalog.redis_client).
    redis_cluster: bool = setting("REDIS_CLUSTER", False)
    redis_key_prefix: str = setting("REDIS_KEY_PREFIX", DEFAULT_REDIS_KEY_PREFIX)
    # How to sign in to the engine and trust its certificate: ELASTICSEARCH_API_KEY, or
    # ELASTICSEARCH_USERNAME/PASSWORD; ELASTICSEARCH_CA_CERTS, ELASTICSEARCH_CLOUD_ID and
    # ELASTICSEARCH_SNIFF too, read together by engine_access() (they constrain one another).
    engine_access: EngineAccess = setting("ELASTICSEARCH_API_KEY", EngineAccess(), read=_reader(engine_access))
    elasticsearch_node: str = setting(
        "ELASTICSEARCH_NODE", DEFAULT_ELASTICSEARCH_NODE, read=_reader(_ELASTICSEARCH_NODE)
    )
    search_index: str = setting("SEARCH_INDEX", DEFAULT_SEARCH_INDEX, read=_reader(_SEARCH_INDEX))
