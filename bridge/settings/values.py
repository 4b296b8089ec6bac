"""Setting values that are checked as they are read, so an invalid one cannot exist.

A value a pattern decides (``Name``, ``BasePath``, ``UserField``) is a string with a ``Meta``
pattern whose description is the error. The others are built from the TOML value by ``parse``
(the loader's msgspec ``dec_hook``) and raise :class:`ConfigError` without the setting's name:
msgspec adds the path, the loader the name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Annotated, Any, ClassVar, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec
from msgspec import Meta

from bridge.errors import ConfigError
from bridge.secret import Secret

T = TypeVar("T")
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
MAX_TARGET_LENGTH = 2048


def require(condition: object, message: str) -> None:
    """Refuse a setting with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def named(name: str, parse: Callable[[Any], T], value: Any) -> T:
    """Parse ``value``, naming the setting in the error (``"store.url: ..."``)."""
    try:
        return parse(value)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from exc


def either(words: Iterable[str]) -> str:
    """``a, b or c``."""
    *rest, last = words
    return f"{', '.join(rest)} or {last}" if rest else last


def local_path_or(value: str | None, default: str) -> str:
    """Return ``value`` if it is a path on this site, else ``default``.

    Refused: anything not starting with one '/', scheme-relative ``//host``, backslashes (which
    browsers read as '/'), control characters, and their percent-encoded forms.
    """
    if not value or len(value) > MAX_TARGET_LENGTH:
        return default
    for text in (value, unquote(value), unquote(unquote(value))):
        if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in text):
            return default
        if "\\" in text or not text.startswith("/") or text.startswith("//"):
            return default
        parts = urlsplit(text)
        if parts.scheme or parts.netloc:
            return default
    return value


# An avatar's, a provider's or a cookie's name.
Name = Annotated[str, Meta(pattern=r"^[\w-]*\Z", description="letters, digits, '_' and '-' only")]
# A plain path prefix like "/avatar" (or "/").
BasePath = Annotated[
    str,
    Meta(
        pattern=r"^(/|(/(?!\.\.?(/|\Z))[A-Za-z0-9._~-]+)+)\Z",
        description="must be '/' or a path like \"/avatar\": letters, digits and . _ ~ - between"
        " single '/' (no '.' or '..' segment, no '/' at the end, nothing encoded)",
    ),
]
# A claim name, or a JSON pointer (``/passport/user``) into the site's session. In a JSON
# pointer '~' starts an escape: ~0 ('~') or ~1 ('/').
UserField = Annotated[
    str,
    Meta(
        pattern=r"(?s)^([^/].*|(/([^~/]|~[01])*)+)\Z",
        description="must be a claim name or a JSON pointer like /passport/user"
        " ('~' written ~0, '/' as ~1)",
    ),
]


class Text(str):
    """A string setting that passes ``check``."""

    @classmethod
    def parse(cls, raw: Any) -> Any:
        require(isinstance(raw, str), "must be a string")
        return cls(cls.check(raw))

    @classmethod
    def check(cls, value: str) -> str:
        raise NotImplementedError


class Origin(Text):
    """``scheme://host[:port]``, lower-cased."""

    @classmethod
    def check(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"must be an http(s) URL, got {value!r}")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ConfigError("must be a plain origin (scheme://host[:port])")
        require(parts.path in ("", "/"), "must not have a path")
        return f"{parts.scheme}://{parts.netloc}".lower()


class SecureURL(Text):
    """An http(s) URL with a host, https unless it is this machine."""

    MESSAGE: ClassVar[str] = "must be the provider's https URL"
    INSECURE: ClassVar[str] = "must be https (plain http for localhost only)"

    @classmethod
    def check(cls, value: str) -> str:
        parts = urlsplit(value)
        require(parts.scheme in ("http", "https") and parts.hostname, cls.MESSAGE)
        require(parts.scheme == "https" or parts.hostname in LOOPBACK_HOSTS, cls.INSECURE)
        return value


class UpstreamURL(SecureURL):
    MESSAGE = "must be an http(s) URL"
    INSECURE = "the API key may travel over https only (or to localhost)"


class SiteURL(SecureURL):
    MESSAGE = "must be the site's http(s) 'who am I' URL"
    INSECURE = "cookies may travel over https only (or to localhost)"


class LocalPath(Text):
    """A plain path on this site: no ``//host``, no query, no fragment."""

    @classmethod
    def check(cls, value: str) -> str:
        plain = local_path_or(value, "") == value and "?" not in value and "#" not in value
        require(plain, "must be a plain path on this site starting with '/'")
        return value


class Network(Text):
    """An address or a CIDR block."""

    @classmethod
    def check(cls, value: str) -> str:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{value!r} is not an address or CIDR") from exc
        return value


class Strings(tuple[str, ...]):
    """One string or a list of them (``audience = "x"`` or ``["x", "y"]``); empty ones dropped."""

    @classmethod
    def parse(cls, raw: Any) -> Strings:
        items = [raw] if isinstance(raw, str) else raw
        ok = isinstance(items, list) and all(isinstance(v, str) for v in items)
        require(ok, "must be a string or a list of strings")
        return cls(v for v in items if v)


class Attributes(dict[str, str]):
    """HTML attributes for the component: names checked, values written as text."""

    @classmethod
    def parse(cls, raw: Any) -> Attributes:
        require(isinstance(raw, dict), "must be a table")
        attrs = cls()
        for key, value in raw.items():
            require(re.fullmatch(r"[\w-]+", key), f"{key}: not a valid attribute name")
            if isinstance(value, bool):
                value = "true" if value else "false"
            if not isinstance(value, str | int | float):
                raise ConfigError(f"{key}: must be a string, number or boolean")
            attrs[key] = str(value)
        return attrs


Listed = Annotated[tuple[str, ...], Meta(min_length=1, description="a non-empty list of strings")]
Scalar = str | int | float | bool


class AccessRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """An avatar's ``allow`` table: every rule given must hold (see :mod:`bridge.access.rules`)."""

    groups: Listed = ()
    email_verified: bool | msgspec.UnsetType = msgspec.UNSET
    email_domains: Listed = ()
    users: Listed = ()
    # Claim name -> the value it must equal, or a list of values one of which it must hold.
    claims: dict[str, Scalar | list[Scalar]] = {}

    @classmethod
    def parse(cls, raw: Any) -> AccessRules:
        """Build the rules from a TOML table (the loader builds them with the rest)."""
        try:
            return msgspec.convert(raw, cls, strict=True)
        except msgspec.ValidationError as exc:
            raise ConfigError(str(exc)) from None


class RateLimit(tuple[int, int]):
    """At most ``count`` requests per fixed window of ``window`` seconds (0 counts: no limit).

    Written ``"30/minute"``, ``"100/5 minutes"`` or ``"off"``.
    """

    UNITS: ClassVar[dict[str, int]] = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
    SHAPE: ClassVar = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day)s?\s*")

    def __new__(cls, count: int, window: int) -> RateLimit:
        return super().__new__(cls, (count, window))

    @property
    def count(self) -> int:  # type: ignore[override]  # the rate's count, not tuple.count
        return self[0]

    @property
    def window(self) -> int:
        return self[1]

    @property
    def enabled(self) -> bool:
        return self[0] > 0

    @classmethod
    def parse(cls, raw: Any) -> RateLimit:
        require(isinstance(raw, str), "must be a string")
        if raw.strip().lower() == "off":
            return cls(0, 60)
        match = cls.SHAPE.fullmatch(raw.lower())
        if not match:
            raise ConfigError('must look like "30/minute" or "100/5 minutes", or "off"')
        count, multiple, unit = int(match[1]), int(match[2] or 1), match[3]
        require(count >= 1 and multiple >= 1, 'count and window must be positive (or "off")')
        return cls(count, multiple * cls.UNITS[unit])


def parse_rate(value: str, name: str) -> RateLimit:
    """Read ``"30/minute"``, ``"100/5 minutes"`` or ``"off"`` (errors name ``name``)."""
    return named(name, RateLimit.parse, value)


# One Redis, a Sentinel-managed master, a Redis Cluster: the scheme's suffix, the default port
# and the URL's shape. Each is plain or TLS ("rediss").
TOPOLOGIES = {
    "single": ("", 6379, "redis://host:6379/0"),
    "sentinel": ("+sentinel", 26379, "redis+sentinel://host:26379,host:26379/SERVICE/0"),
    "cluster": ("+cluster", 6379, "redis+cluster://host:6379,host:6379"),
}
REDIS_SCHEMES = {
    f"redis{tls}{suffix}": (topology, tls == "s")
    for topology, (suffix, _, _) in TOPOLOGIES.items()
    for tls in ("", "s")
}


class RedisAddress(msgspec.Struct, frozen=True):
    """Where Redis is and how to reach it, parsed from a URL by :meth:`parse`.

    ``redis[s]://[[user]:password@]host[:port][/db]``,
    ``redis[s]+sentinel://[[user]:password@]host[:port][,host[:port]...]/SERVICE[/db]``,
    ``redis[s]+cluster://[[user]:password@]host[:port][,host[:port]...]``, each with an optional
    ``?ssl_ca_certs=path`` for TLS. ``nodes`` are the server for one Redis, the sentinels for
    Sentinel, the nodes to learn the slot map from for a cluster. Credentials and TLS are those
    of the data nodes.
    """

    nodes: tuple[tuple[str, int], ...]
    topology: str = "single"
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: Secret | None = None
    tls: bool = False
    ca_certs: str | None = None

    @property
    def host(self) -> str:
        return self.nodes[0][0]

    @property
    def port(self) -> int:
        return self.nodes[0][1]

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise ConfigError("not a valid redis:// URL") from exc
        schemes = either(f"{scheme}://" for scheme in REDIS_SCHEMES)
        require(parts.scheme in REDIS_SCHEMES, f"must start with {schemes}")
        topology, tls = REDIS_SCHEMES[parts.scheme]
        _, default_port, shape = TOPOLOGIES[topology]
        userinfo, _, hostlist = parts.netloc.rpartition("@")
        nodes = tuple(_node(text, default_port) for text in hostlist.split(","))
        require(all(host for host, _ in nodes), f"name the Redis host ({shape})")
        if topology == "single" and len(nodes) > 1:
            raise ConfigError("one host for redis://; several need +sentinel or +cluster")
        path = [p for p in parts.path.split("/") if p]
        service = None
        if topology == "sentinel":
            require(path, f"name the Sentinel service ({shape})")
            service = unquote(path.pop(0))
        db_text = path[0] if path else "0"
        if len(path) > 1 or not db_text.isdigit():
            raise ConfigError(f"the path must be a database number ({shape})")
        require(topology != "cluster" or db_text == "0", "a Redis Cluster has database 0 only")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"ssl_ca_certs"})
        if unknown:
            raise ConfigError(f"unknown option {unknown[0]!r}")
        ca_certs = query.get("ssl_ca_certs", [""])[-1] or None
        require(tls or not ca_certs, "ssl_ca_certs needs TLS (rediss://)")
        username, colon, password = userinfo.partition(":")
        return cls(
            nodes=nodes,
            topology=topology,
            service=service,
            db=int(db_text),
            username=unquote(username) if username else None,
            password=Secret(unquote(password)) if colon and password else None,
            tls=tls,
            ca_certs=ca_certs,
        )


def _node(text: str, default_port: int) -> tuple[str, int]:
    """Split ``host[:port]`` or ``[v6 address][:port]``."""
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        require(not rest or rest.startswith(":"), "not a valid host")
        port_text = rest[1:]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ConfigError("not a valid port")
    return host, int(port_text) if port_text else default_port


def parse_url(url: str) -> RedisAddress:
    """Parse a ``store.url`` for Redis (errors name ``store.url``)."""
    return named("store.url", RedisAddress.parse, url)


def store_address(url: str) -> RedisAddress | None:
    """Check a ``store.url``: ``memory://`` (None) or a Redis URL (its address)."""
    scheme = urlsplit(url).scheme
    schemes = either(f"{scheme}://" for scheme in ("memory", *REDIS_SCHEMES))
    require(scheme == "memory" or scheme in REDIS_SCHEMES, f"must start with {schemes}")
    return None if scheme == "memory" else RedisAddress.parse(url)
