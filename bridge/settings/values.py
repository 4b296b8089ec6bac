"""Setting values that parse and check themselves, so an invalid one cannot exist.

Each is built from the TOML value by ``parse`` (the loader's msgspec ``dec_hook``) and raises
:class:`ConfigError` without the setting's name: msgspec adds the path, the loader the name.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec

from bridge.errors import ConfigError
from bridge.secret import Secret

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
MAX_TARGET_LENGTH = 2048


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


def masked_url(url: str) -> str:
    """Mask the password of a URL such as ``redis://:password@host:6379/0``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username or ''}:********@{host}").geturl()


class Text(str):
    """A string setting that checks itself; subclasses override ``check``."""

    @classmethod
    def parse(cls, raw: Any) -> Any:
        if not isinstance(raw, str):
            raise ConfigError("must be a string")
        return cls(cls.check(raw))

    @classmethod
    def check(cls, value: str) -> str:
        return value


class Origin(Text):
    """``scheme://host[:port]``, lower-cased."""

    @classmethod
    def check(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"must be an http(s) URL, got {value!r}")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ConfigError("must be a plain origin (scheme://host[:port])")
        if parts.path not in ("", "/"):
            raise ConfigError("must not have a path")
        return f"{parts.scheme}://{parts.netloc}".lower()


class SecureURL(Text):
    """An http(s) URL with a host, https unless it is this machine."""

    WHAT: ClassVar[str] = "must be the provider's https URL"
    INSECURE: ClassVar[str] = "must be https (plain http for localhost only)"

    @classmethod
    def check(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(cls.WHAT)
        if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
            raise ConfigError(cls.INSECURE)
        return value


class UpstreamURL(SecureURL):
    WHAT = "must be an http(s) URL"
    INSECURE = "the API key may travel over https only (or to localhost)"


class SiteURL(SecureURL):
    WHAT = "must be the site's http(s) 'who am I' URL"
    INSECURE = "cookies may travel over https only (or to localhost)"


class BasePath(Text):
    """A plain path prefix like "/avatar" (or "/")."""

    _SEGMENT = re.compile(r"^[A-Za-z0-9._~-]+$")

    @classmethod
    def check(cls, value: str) -> str:
        if value == "/":
            return value
        if not value.startswith("/") or value.endswith("/"):
            raise ConfigError("must start with '/' and not end with one, e.g. \"/avatar\"")
        for segment in value[1:].split("/"):
            if segment in ("", ".", ".."):
                raise ConfigError("no empty, '.' or '..' segments")
            if not cls._SEGMENT.match(segment):
                raise ConfigError("letters, digits and . _ ~ - only (nothing encoded, no spaces)")
        return value


class LocalPath(Text):
    """A plain path on this site: no ``//host``, no query, no fragment."""

    @classmethod
    def check(cls, value: str) -> str:
        if local_path_or(value, "") != value or "?" in value or "#" in value:
            raise ConfigError("must be a plain path on this site starting with '/'")
        return value


class Name(Text):
    """Letters, digits, '_' and '-' (an avatar, a provider, a cookie)."""

    @classmethod
    def check(cls, value: str) -> str:
        if value and not value.replace("_", "").replace("-", "").isalnum():
            raise ConfigError("letters, digits, '_' and '-' only")
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


class UserField(Text):
    """A claim name, or a JSON pointer (``/passport/user``) into the site's session."""

    @classmethod
    def check(cls, value: str) -> str:
        if not value:
            raise ConfigError("must not be empty")
        if value.startswith("/") and any(
            "~" in t.replace("~0", "").replace("~1", "") for t in value[1:].split("/")
        ):
            raise ConfigError("'~' in a JSON pointer must be written ~0 (and '/' as ~1)")
        return value


class Strings(tuple[str, ...]):
    """One string or a list of them (``audience = "x"`` or ``["x", "y"]``); empty ones dropped."""

    @classmethod
    def parse(cls, raw: Any) -> Strings:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ConfigError("must be a string or a list of strings")
        return cls(v for v in items if v)


class Attributes(dict[str, str]):
    """HTML attributes for the component: names checked, values written as text."""

    @classmethod
    def parse(cls, raw: Any) -> Attributes:
        if not isinstance(raw, dict):
            raise ConfigError("must be a table")
        attrs = cls()
        for key, value in raw.items():
            if not key.replace("-", "").replace("_", "").isalnum():
                raise ConfigError(f"{key}: not a valid attribute name")
            if isinstance(value, bool):
                attrs[key] = "true" if value else "false"
            elif isinstance(value, str | int | float):
                attrs[key] = str(value)
            else:
                raise ConfigError(f"{key}: must be a string, number or boolean")
        return attrs


class AccessRules(dict[str, Any]):
    """An avatar's ``allow`` table: every rule must hold (see :mod:`bridge.access`)."""

    KNOWN: ClassVar[tuple[str, ...]] = (
        "groups", "email_verified", "email_domains", "users", "claims",
    )  # fmt: skip

    @classmethod
    def parse(cls, raw: Any) -> AccessRules:
        if not isinstance(raw, dict):
            raise ConfigError("must be a table")
        for key, value in raw.items():
            if key not in cls.KNOWN:
                raise ConfigError(f"{key}: unknown rule (known: {', '.join(cls.KNOWN)})")
            strings = isinstance(value, list) and all(isinstance(v, str) for v in value)
            if key in ("groups", "email_domains", "users") and not (strings and value):
                raise ConfigError(f"{key}: must be a non-empty list of strings")
            if key == "email_verified" and not isinstance(value, bool):
                raise ConfigError(f"{key}: must be true or false")
            if key == "claims" and not isinstance(value, dict):
                raise ConfigError(f"{key}: must be a table")
        return cls(raw)


class RateLimit:
    """At most ``count`` requests per fixed window of ``window`` seconds (0 counts: no limit).

    Written ``"30/minute"``, ``"100/5 minutes"`` or ``"off"``.
    """

    __slots__ = ("count", "window")
    _UNITS: ClassVar[dict[str, int]] = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
    _RE: ClassVar[re.Pattern[str]] = re.compile(
        r"^\s*(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day)s?\s*$"
    )

    def __init__(self, count: int, window: int) -> None:
        self.count = count
        self.window = window

    @classmethod
    def parse(cls, raw: Any) -> RateLimit:
        if not isinstance(raw, str):
            raise ConfigError("must be a string")
        if raw.strip().lower() == "off":
            return cls(0, 60)
        match = cls._RE.match(raw.lower())
        if not match:
            raise ConfigError('must look like "30/minute" or "100/5 minutes", or "off"')
        count, multiple, unit = int(match[1]), int(match[2] or 1), match[3]
        if count < 1 or multiple < 1:
            raise ConfigError('count and window must be positive (or "off")')
        return cls(count, multiple * cls._UNITS[unit])

    @property
    def enabled(self) -> bool:
        return self.count > 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RateLimit):
            return NotImplemented
        return (self.count, self.window) == (other.count, other.window)

    def __hash__(self) -> int:
        return hash((self.count, self.window))

    def __repr__(self) -> str:
        return f"RateLimit(count={self.count}, window={self.window})"


# One Redis, a Sentinel-managed master, a Redis Cluster; each plain or TLS.
REDIS_SCHEMES = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
_DEFAULT_PORT = {"single": 6379, "sentinel": 26379, "cluster": 6379}
_SHAPES = {
    "single": "redis://host:6379/0",
    "sentinel": "redis+sentinel://host:26379,host:26379/SERVICE/0",
    "cluster": "redis+cluster://host:6379,host:6379",
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
        if parts.scheme not in REDIS_SCHEMES:
            raise ConfigError(
                "must start with redis://, rediss://, redis+sentinel://, "
                "rediss+sentinel://, redis+cluster:// or rediss+cluster://"
            )
        topology, tls = REDIS_SCHEMES[parts.scheme]
        shape = _SHAPES[topology]
        userinfo, _, hostlist = parts.netloc.rpartition("@")
        nodes = tuple(_node(text, _DEFAULT_PORT[topology]) for text in hostlist.split(","))
        if not all(host for host, _ in nodes):
            raise ConfigError(f"name the Redis host ({shape})")
        if topology == "single" and len(nodes) > 1:
            raise ConfigError("one host for redis://; several need +sentinel or +cluster")
        path = [p for p in parts.path.split("/") if p]
        service = None
        if topology == "sentinel":
            if not path:
                raise ConfigError(f"name the Sentinel service ({shape})")
            service = unquote(path.pop(0))
        db_text = path[0] if path else "0"
        if len(path) > 1 or not db_text.isdigit():
            raise ConfigError(f"the path must be a database number ({shape})")
        if topology == "cluster" and db_text != "0":
            raise ConfigError("a Redis Cluster has database 0 only")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = set(query) - {"ssl_ca_certs"}
        if unknown:
            raise ConfigError(f"unknown option {sorted(unknown)[0]!r}")
        ca_certs = query.get("ssl_ca_certs", [""])[-1] or None
        if ca_certs and not tls:
            raise ConfigError("ssl_ca_certs needs TLS (rediss://)")
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
        if rest and not rest.startswith(":"):
            raise ConfigError("not a valid host")
        port_text = rest[1:]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ConfigError("not a valid port")
    return host, int(port_text) if port_text else default_port


def parse_url(url: str) -> RedisAddress:
    """Parse a ``store.url`` for Redis (errors name ``store.url``)."""
    try:
        return RedisAddress.parse(url)
    except ConfigError as exc:
        raise ConfigError(f"store.url: {exc}") from exc


class StoreURL(Text):
    """``memory://`` or a Redis URL; ``address`` is the parsed Redis address (None: memory)."""

    address: RedisAddress | None

    def __init__(self, value: str) -> None:
        super().__init__()
        self.address = self._address(value)

    @staticmethod
    def _address(value: str) -> RedisAddress | None:
        if urlsplit(value).scheme == "memory":
            return None
        if urlsplit(value).scheme not in REDIS_SCHEMES:
            raise ConfigError(
                "must start with memory://, redis://, rediss://, redis+sentinel://, "
                "rediss+sentinel://, redis+cluster:// or rediss+cluster://"
            )
        return RedisAddress.parse(value)
