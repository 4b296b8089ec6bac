"""Typed settings: one TOML file plus environment variables, validated once at start-up.

Secrets only ever come from the environment and are held as :class:`bridge.secret.Secret`.
Every wrong or unsafe setting stops start-up with a :class:`ConfigError` naming it.
"""

from __future__ import annotations

import builtins
import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bridge.errors import ConfigError
from bridge.secret import Secret

DEFAULT_COMPONENT_SCRIPT = "https://frontend.sentifyd.io/sentifyd-bot/main.js"
MIN_SECRET_KEY_LENGTH = 32
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
ASGI_SERVERS = ("hypercorn", "uvicorn")
# One Redis, a Sentinel-managed master, a Redis Cluster; each plain or TLS.
REDIS_SCHEMES = (
    "redis",
    "rediss",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
)


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = "http://127.0.0.1:8000"
    allowed_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    base_path: str = "/"
    asgi_server: str = "uvicorn"

    @property
    def public_origin(self) -> str:
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}".lower()

    @property
    def is_https(self) -> bool:
        return self.public_url.lower().startswith("https://")

    @property
    def prefix(self) -> str:
        """Return ``base_path`` without its trailing '/': "" at the root, else e.g. "/avatar"."""
        return "" if self.base_path == "/" else self.base_path

    def path_for(self, path: str) -> str:
        """Return the browser-visible path of the bridge's ``path`` (which starts with '/')."""
        if not path.startswith("/"):
            raise ValueError("path_for: the path must start with '/'")
        return self.prefix + path

    def url_for(self, path: str) -> str:
        """Return the absolute URL of the bridge's ``path``, from ``public_url``, never a header."""
        return self.public_origin + self.path_for(path)


@dataclass(frozen=True)
class SessionSettings:
    cookie_secure: bool = True
    cookie_name: str = "sentifyd_bridge"
    idle_timeout: int = 1800
    absolute_timeout: int = 43200
    refresh_grace: int = 10
    max_chains: int = 64
    cookie_path: str = "/"  # not a TOML key: always server.base_path

    @property
    def effective_cookie_name(self) -> str:
        # The __Host- prefix makes the browser refuse the cookie unless it is Secure, host-only
        # and Path=/, which is exactly the scope we want at the root. Under a base path, Path=/
        # would send the cookie to every page of the site, so it gets Path=base_path and the
        # __Secure- prefix (Secure enforced by the browser; host-only because no Domain is set).
        if not self.cookie_secure:
            return self.cookie_name
        prefix = "__Host-" if self.cookie_path == "/" else "__Secure-"
        return prefix + self.cookie_name


@dataclass(frozen=True)
class StoreSettings:
    url: str = "memory://"
    prefix: str = "sbridge"
    timeout: float = 2.0
    lock_wait: float = 30.0
    lock_lease: float = 10.0


@dataclass(frozen=True)
class SentifydSettings:
    backend: str = "https://serve.sentifyd.io"
    login_path: str = "/api/v1/chatbot/login"
    refresh_path: str = ""
    timeout: float = 10.0
    retries: int = 2
    retry_backoff: float = 0.2
    default_expires_in: int = 55
    refresh_margin: int = 30
    max_response_bytes: int = 1_000_000


@dataclass(frozen=True)
class ComponentSettings:
    script: str = DEFAULT_COMPONENT_SCRIPT
    script_type: str = "module"
    element: str = "sentifyd-bot"
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AvatarSettings:
    name: str
    avatar_id: str
    api_key_env: str
    api_key: Secret
    title: str = ""
    allow: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SiteCookieSettings:
    name: str
    format: str
    secret_key_env: str
    secret_keys: tuple[Secret, ...]
    salt: str
    max_age: int
    user_field: str
    login_url: str
    claim_fields: tuple[str, ...] = ()
    logout_url: str = ""
    key_digest: str = "sha256"  # rails: PBKDF2's digest (sha256 since Rails 7.0, sha1 before)
    store_url: str = ""  # express: the site's own Redis, where connect-redis keeps sessions
    store_prefix: str = "sess:"
    store_timeout: float = 2.0

    def masked_store_url(self) -> str:
        return _masked_url(self.store_url) if self.store_url else ""


@dataclass(frozen=True)
class JWTLoginSettings:
    """A site whose login is a JWT signed by its identity provider (``[login.jwt]``)."""

    jwks_url: str
    issuer: str
    audience: tuple[str, ...]
    algorithms: tuple[str, ...]
    login_url: str
    cookie: str = ""
    header: str = ""
    user_field: str = "sub"
    claim_fields: tuple[str, ...] = ()
    leeway: int = 30
    timeout: float = 5.0


@dataclass(frozen=True)
class LifecycleSettings:
    retention: int = 7 * 86400
    max_events: int = 200
    record_client: bool = False


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` requests per fixed window of ``window`` seconds (0 counts: no limit)."""

    count: int
    window: int

    @property
    def enabled(self) -> bool:
        return self.count > 0


@dataclass(frozen=True)
class LimitsSettings:
    """What costs is guarded; cached answers to signed-in visitors are not (README, limits)."""

    # A backstop on one session's requests of any kind: each one writes its record.
    per_session: RateLimit = RateLimit(120, 60)
    # First requests (new handle chains) of one session.
    new_chains_per_session: RateLimit = RateLimit(30, 60)
    # New stored sessions (each one a Sentifyd login) of one user, and how many may live.
    new_sessions_per_user: RateLimit = RateLimit(10, 60)
    sessions_per_user: int = 10
    # Anonymous work per client address: refusals (401/403) and identity checks they cause.
    per_ip: RateLimit = RateLimit(120, 60)
    # Each SSO login start stores a short-lived state record: anonymous, so held per IP.
    login_per_ip: RateLimit = RateLimit(20, 60)
    # The avatar's Sentifyd quota, across every instance (off unless set).
    upstream_logins_per_avatar: RateLimit = RateLimit(0, 60)


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = True
    require_token: bool = True


@dataclass(frozen=True)
class AdminSettings:
    revoke_block: int = 3600


@dataclass(frozen=True)
class OIDCProviderSettings:
    """One OpenID provider the bridge signs visitors in with (``[login.oidc]``)."""

    name: str
    issuer: str
    client_id: str
    client_secret_env: str
    client_secret: Secret
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    redirect_path: str = "/callback"
    post_logout_redirect_path: str = "/"
    # True: every userinfo claim; a list: only these; empty: the ID token's claims alone.
    claims_from_userinfo: bool | tuple[str, ...] = False
    token_endpoint_auth_method: str = "client_secret_basic"  # noqa: S105 - a method name
    title: str = ""
    leeway: int = 60
    max_session_age: int = 0
    timeout: float = 5.0  # one deadline per call to the provider, its answer included


@dataclass(frozen=True)
class SessionCheckSettings:
    """The site's own "who am I" URL, for cookies the bridge cannot verify itself."""

    url: str
    cookies: tuple[str, ...]
    login_url: str
    user_field: str = "user_id"
    claim_fields: tuple[str, ...] = ()
    timeout: float = 2.0
    cache_ttl: int = 10


@dataclass(frozen=True)
class Settings:
    secret_keys: tuple[Secret, ...]
    avatars: tuple[AvatarSettings, ...]
    server: ServerSettings = ServerSettings()
    session: SessionSettings = SessionSettings()
    store: StoreSettings = StoreSettings()
    sentifyd: SentifydSettings = SentifydSettings()
    component: ComponentSettings = ComponentSettings()
    site_cookie: SiteCookieSettings | None = None
    log_level: str = "INFO"
    demo: bool = False
    source: str = ""
    lifecycle: LifecycleSettings = LifecycleSettings()
    limits: LimitsSettings = LimitsSettings()
    metrics: MetricsSettings = MetricsSettings()
    admin: AdminSettings = AdminSettings()
    admin_token: Secret | None = None
    metrics_token: Secret | None = None
    oidc: tuple[OIDCProviderSettings, ...] = ()
    session_check: SessionCheckSettings | None = None
    jwt: JWTLoginSettings | None = None

    def avatar(self, name: str | None) -> AvatarSettings | None:
        if name is None:
            return self.avatars[0]
        for avatar in self.avatars:
            if avatar.name == name:
                return avatar
        return None

    def masked(self) -> dict[str, Any]:
        """Return the effective settings as plain data, every secret masked."""
        masked: dict[str, Any] = _masked(dataclasses.asdict(self))
        masked["store"]["url"] = _masked_url(self.store.url)
        if masked.get("site_cookie") and self.site_cookie is not None:
            cookie, fmt = masked["site_cookie"], self.site_cookie.format
            cookie["store_url"] = self.site_cookie.masked_store_url()
            for key in _COOKIE_FORMAT_ONLY - set(COOKIE_FORMATS[fmt][2]):
                cookie.pop(key, None)  # a setting this format does not read
            cookie["verified_as"] = COOKIE_FORMAT_NOTES[fmt]
        if masked.get("jwt"):
            masked["jwt"]["verified_as"] = JWT_NOTE
        return masked


def _masked(value: Any) -> Any:
    if isinstance(value, Secret):
        return "********" if value else ""
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value


def _masked_url(url: str) -> str:
    """Mask the password of a URL such as ``redis://:password@host:6379/0``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{user}:********@{host}").geturl()


# --- loading -------------------------------------------------------------------------------


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings from a TOML file (``path`` or ``BRIDGE_CONFIG``), the environment and
    ``overrides`` (a nested mapping shaped like the TOML, used by tests and the demo)."""
    env = os.environ if env is None else env
    path = path or env.get("BRIDGE_CONFIG") or None
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    if overrides:
        data = _deep_merge(data, overrides)
    return _build(data, env, source=str(path or ""))


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _Section:
    """Typed reads from one TOML table, with the setting's dotted name in every error."""

    def __init__(self, name: builtins.str, data: Any) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{name}: must be a table")
        self.name = name
        self.data = data
        self.used: set[builtins.str] = set()

    def _get(self, key: builtins.str, default: Any) -> Any:
        self.used.add(key)
        return self.data.get(key, default)

    def str(self, key: builtins.str, default: builtins.str = "") -> builtins.str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise ConfigError(f"{self.name}.{key}: must be a string")
        return value

    def int(
        self, key: builtins.str, default: builtins.int, *, minimum: builtins.int = 0
    ) -> builtins.int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.name}.{key}: must be an integer")
        if value < minimum:
            raise ConfigError(f"{self.name}.{key}: must be at least {minimum}")
        return value

    def float(
        self, key: builtins.str, default: builtins.float, *, minimum: builtins.float = 0.0
    ) -> builtins.float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self.name}.{key}: must be a number")
        if value <= minimum:
            raise ConfigError(f"{self.name}.{key}: must be greater than {minimum}")
        return float(value)

    def bool(self, key: builtins.str, default: builtins.bool) -> builtins.bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self.name}.{key}: must be true or false")
        return value

    def str_list(self, key: builtins.str) -> tuple[builtins.str, ...]:
        value = self._get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self.name}.{key}: must be a list of strings")
        return tuple(value)

    def table(self, key: builtins.str) -> dict[builtins.str, Any]:
        value = self._get(key, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"{self.name}.{key}: must be a table")
        return dict(value)

    def check_unknown(self, *also_allowed: builtins.str) -> None:
        unknown = set(self.data) - self.used - set(also_allowed)
        if unknown:
            raise ConfigError(f"{self.name}.{sorted(unknown)[0]}: unknown setting")


def _env_or(env: Mapping[str, str], name: str, configured: str) -> str:
    return env.get(name) or configured


def _secret_list(raw: str) -> tuple[Secret, ...]:
    return tuple(Secret(part.strip()) for part in raw.split(",") if part.strip())


def _origin(value: str, name: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}: must be an http(s) URL, got {value!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(f"{name}: must be a plain origin (scheme://host[:port])")
    if parts.path not in ("", "/"):
        raise ConfigError(f"{name}: must not have a path")
    return f"{parts.scheme}://{parts.netloc}".lower()


_BASE_SEGMENT = re.compile(r"^[A-Za-z0-9._~-]+$")


def _base_path(value: str) -> str:
    """Return ``value`` if it is a plain path prefix like "/avatar", else stop start-up."""
    name = "server.base_path"
    if value == "/":
        return value
    if not value.startswith("/") or value.endswith("/"):
        raise ConfigError(f"{name}: must start with '/' and not end with one, e.g. \"/avatar\"")
    for segment in value[1:].split("/"):
        if segment in ("", ".", ".."):
            raise ConfigError(f"{name}: no empty, '.' or '..' segments")
        if not _BASE_SEGMENT.match(segment):
            raise ConfigError(
                f"{name}: letters, digits and . _ ~ - only (nothing encoded, no spaces)"
            )
    return value


def _build(data: Mapping[str, Any], env: Mapping[str, str], source: str) -> Settings:
    root = _Section("config", data)
    demo = root.bool("demo", False)

    srv = _Section("server", root.table("server"))
    public_url = _origin(srv.str("public_url", "http://127.0.0.1:8000"), "server.public_url")
    server = ServerSettings(
        host=srv.str("host", "127.0.0.1"),
        port=srv.int("port", 8000, minimum=0),
        public_url=public_url,
        allowed_origins=tuple(
            _origin(o, "server.allowed_origins") for o in srv.str_list("allowed_origins")
        ),
        trusted_proxies=srv.str_list("trusted_proxies"),
        base_path=_base_path(srv.str("base_path", "/")),
        asgi_server=srv.str("asgi_server", "uvicorn"),
    )
    if server.asgi_server not in ASGI_SERVERS:
        raise ConfigError(f"server.asgi_server: must be one of {', '.join(ASGI_SERVERS)}")
    for proxy in server.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError as exc:
            raise ConfigError(
                f"server.trusted_proxies: {proxy!r} is not an address or CIDR"
            ) from exc
    public_host = urlsplit(public_url).hostname or ""
    if not server.is_https and public_host not in LOOPBACK_HOSTS:
        raise ConfigError("server.public_url: plain http is allowed for localhost only; use https")
    srv.check_unknown()

    ses = _Section("session", root.table("session"))
    session = SessionSettings(
        cookie_secure=ses.bool("cookie_secure", True),
        cookie_name=ses.str("cookie_name", "sentifyd_bridge"),
        idle_timeout=ses.int("idle_timeout", 1800, minimum=60),
        absolute_timeout=ses.int("absolute_timeout", 43200, minimum=60),
        refresh_grace=ses.int("refresh_grace", 10, minimum=0),
        max_chains=ses.int("max_chains", 64, minimum=1),
        cookie_path=server.base_path,
    )
    if session.idle_timeout > session.absolute_timeout:
        raise ConfigError("session.idle_timeout: must not exceed session.absolute_timeout")
    if not session.cookie_secure and server.is_https:
        raise ConfigError("session.cookie_secure: must be true when server.public_url is https")
    if not session.cookie_name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError("session.cookie_name: letters, digits, '_' and '-' only")
    ses.check_unknown()

    sto = _Section("store", root.table("store"))
    store = StoreSettings(
        url=_env_or(env, "BRIDGE_STORE_URL", sto.str("url", "memory://")),
        prefix=sto.str("prefix", "sbridge"),
        timeout=sto.float("timeout", 2.0),
        lock_wait=sto.float("lock_wait", 30.0),
        lock_lease=sto.float("lock_lease", 10.0),
    )
    scheme = urlsplit(store.url).scheme
    if scheme not in ("memory", *REDIS_SCHEMES):
        raise ConfigError(
            "store.url: must start with memory://, redis://, rediss://, redis+sentinel://, "
            "rediss+sentinel://, redis+cluster:// or rediss+cluster://"
        )
    if "{" in store.prefix or "}" in store.prefix:
        # A hash tag in the prefix would put every key in one Redis Cluster slot.
        raise ConfigError("store.prefix: must not contain '{' or '}'")
    if scheme in REDIS_SCHEMES:
        from bridge.store.redis import parse_url  # here to keep settings free of import cycles

        parse_url(store.url)
        if store.lock_lease < 3 * store.timeout:
            # A renewal is tried every third of the lease and may take a whole timeout.
            raise ConfigError("store.lock_lease: must be at least three times store.timeout")
    sto.check_unknown()

    sen = _Section("sentifyd", root.table("sentifyd"))
    backend = _env_or(env, "SENTIFYD_BACKEND", sen.str("backend", "https://serve.sentifyd.io"))
    backend = backend.rstrip("/")
    b_parts = urlsplit(backend)
    if b_parts.scheme not in ("http", "https") or not b_parts.hostname:
        raise ConfigError("sentifyd.backend: must be an http(s) URL")
    if b_parts.scheme == "http" and b_parts.hostname not in LOOPBACK_HOSTS:
        raise ConfigError(
            "sentifyd.backend: the API key may travel over https only (or to localhost)"
        )
    sentifyd = SentifydSettings(
        backend=backend,
        login_path=sen.str("login_path", "/api/v1/chatbot/login"),
        refresh_path=sen.str("refresh_path", ""),
        timeout=sen.float("timeout", 10.0),
        retries=sen.int("retries", 2, minimum=0),
        retry_backoff=sen.float("retry_backoff", 0.2),
        default_expires_in=sen.int("default_expires_in", 55, minimum=1),
        refresh_margin=sen.int("refresh_margin", 30, minimum=0),
        max_response_bytes=sen.int("max_response_bytes", 1_000_000, minimum=1024),
    )
    for key in ("login_path", "refresh_path"):
        value = getattr(sentifyd, key)
        if value and not value.startswith("/"):
            raise ConfigError(f"sentifyd.{key}: must start with '/'")
    if not sentifyd.login_path:
        raise ConfigError("sentifyd.login_path: must not be empty")
    sen.check_unknown()

    com = _Section("component", root.table("component"))
    component = ComponentSettings(
        script=com.str("script", DEFAULT_COMPONENT_SCRIPT),
        script_type=com.str("script_type", "module"),
        element=com.str("element", "sentifyd-bot"),
        attributes=_attributes(com.table("attributes"), "component.attributes"),
    )
    if component.script_type not in ("module", "defer"):
        raise ConfigError("component.script_type: must be 'module' or 'defer'")
    if component.element not in ("sentifyd-bot", "sentifyd-realtime"):
        raise ConfigError("component.element: must be 'sentifyd-bot' or 'sentifyd-realtime'")
    com.check_unknown()

    avatars = _avatars(root._get("avatars", []), env)

    login = _Section("login", root.table("login"))
    site_cookie = (
        _site_cookie(login.table("cookie"), env, https=server.is_https)
        if "cookie" in login.data
        else None
    )
    jwt_login = _jwt_login(login.table("jwt")) if "jwt" in login.data else None
    login.check_unknown("oidc", "session_check")
    oidc = _oidc(login.data.get("oidc"), env) if "oidc" in login.data else ()
    session_check = (
        _session_check(login.data["session_check"]) if "session_check" in login.data else None
    )

    secret_keys = _secret_list(env.get("BRIDGE_SECRET_KEY", ""))
    if not secret_keys:
        raise ConfigError(
            "BRIDGE_SECRET_KEY: not set (the bridge's own signing key, 32+ characters)"
        )
    for secret in secret_keys:
        if len(secret) < MIN_SECRET_KEY_LENGTH:
            raise ConfigError(
                f"BRIDGE_SECRET_KEY: each key must be at least {MIN_SECRET_KEY_LENGTH} characters"
            )

    log = _Section("logging", root.table("logging"))
    log_level = log.str("level", "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("logging.level: must be DEBUG, INFO, WARNING or ERROR")
    log.check_unknown()

    lifecycle, limits, metrics, admin = _operations(root)
    admin_token = _operator_token(env, "BRIDGE_ADMIN_TOKEN")
    metrics_token = _operator_token(env, "BRIDGE_METRICS_TOKEN")

    root.check_unknown(
        "lifecycle",
        "metrics",
        "server",
        "session",
        "store",
        "sentifyd",
        "component",
        "avatars",
        "login",
        "logging",
        "limits",
        "admin",
    )
    if (
        site_cookie is None
        and jwt_login is None
        and not login.data.get("oidc")
        and not login.data.get("session_check")
    ):
        raise ConfigError(
            "login: configure at least one way in ([login.cookie], [login.jwt], [login.oidc] or "
            "[login.session_check])"
        )

    return Settings(
        secret_keys=secret_keys,
        avatars=avatars,
        server=server,
        session=session,
        store=store,
        sentifyd=sentifyd,
        component=component,
        site_cookie=site_cookie,
        log_level=log_level,
        demo=demo,
        source=source,
        lifecycle=lifecycle,
        limits=limits,
        metrics=metrics,
        admin=admin,
        admin_token=admin_token,
        metrics_token=metrics_token,
        oidc=oidc,
        session_check=session_check,
        jwt=jwt_login,
    )


_RATE_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day)s?\s*$")


def parse_rate(value: str, name: str) -> RateLimit:
    """Read ``"30/minute"``, ``"100/5 minutes"`` or ``"off"``."""
    if value.strip().lower() == "off":
        return RateLimit(0, 60)
    match = _RATE_RE.match(value.lower())
    if not match:
        raise ConfigError(f"{name}: must look like \"30/minute\" or \"100/5 minutes\", or \"off\"")
    count, multiple, unit = int(match[1]), int(match[2] or 1), match[3]
    if count < 1 or multiple < 1:
        raise ConfigError(f"{name}: count and window must be positive (or \"off\")")
    return RateLimit(count, multiple * _RATE_UNITS[unit])


def _operations(
    root: _Section,
) -> tuple[LifecycleSettings, LimitsSettings, MetricsSettings, AdminSettings]:
    lif = _Section("lifecycle", root.table("lifecycle"))
    lifecycle = LifecycleSettings(
        retention=lif.int("retention", 7 * 86400, minimum=60),
        max_events=lif.int("max_events", 200, minimum=1),
        record_client=lif.bool("record_client", False),
    )
    lif.check_unknown()

    lim = _Section("limits", root.table("limits"))
    limits = LimitsSettings(
        per_session=parse_rate(lim.str("per_session", "120/minute"), "limits.per_session"),
        new_chains_per_session=parse_rate(
            lim.str("new_chains_per_session", "30/minute"), "limits.new_chains_per_session"
        ),
        new_sessions_per_user=parse_rate(
            lim.str("new_sessions_per_user", "10/minute"), "limits.new_sessions_per_user"
        ),
        sessions_per_user=lim.int("sessions_per_user", 10, minimum=0),
        per_ip=parse_rate(lim.str("per_ip", "120/minute"), "limits.per_ip"),
        login_per_ip=parse_rate(lim.str("login_per_ip", "20/minute"), "limits.login_per_ip"),
        upstream_logins_per_avatar=parse_rate(
            lim.str("upstream_logins_per_avatar", "off"), "limits.upstream_logins_per_avatar"
        ),
    )
    lim.check_unknown()

    met = _Section("metrics", root.table("metrics"))
    metrics = MetricsSettings(
        enabled=met.bool("enabled", True), require_token=met.bool("require_token", True)
    )
    met.check_unknown()

    adm = _Section("admin", root.table("admin"))
    admin = AdminSettings(revoke_block=adm.int("revoke_block", 3600, minimum=0))
    adm.check_unknown()
    return lifecycle, limits, metrics, admin


def _operator_token(env: Mapping[str, str], name: str) -> Secret | None:
    raw = env.get(name, "")
    if not raw:
        return None
    if len(raw) < MIN_SECRET_KEY_LENGTH or raw != raw.strip():
        raise ConfigError(
            f"{name}: must be at least {MIN_SECRET_KEY_LENGTH} characters, without spaces"
            " around it (e.g. `openssl rand -base64 32`)"
        )
    return Secret(raw)


def _attributes(raw: Mapping[str, Any], name: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for key, value in raw.items():
        if not key.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{name}.{key}: not a valid attribute name")
        if isinstance(value, bool):
            attrs[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            attrs[key] = str(value)
        else:
            raise ConfigError(f"{name}.{key}: must be a string, number or boolean")
    return attrs


def _avatars(raw: Any, env: Mapping[str, str]) -> tuple[AvatarSettings, ...]:
    if not isinstance(raw, list):
        raise ConfigError("avatars: must be an array of tables ([[avatars]])")
    if not raw:
        # A config with no [[avatars]] still works from the environment alone.
        raw = [{"name": "default"}]
    avatars: list[AvatarSettings] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        sec = _Section(f"avatars[{index}]", item)
        name = sec.str("name", "default" if index == 0 else "")
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"avatars[{index}].name: letters, digits, '_' and '-' only")
        if name in seen:
            raise ConfigError(f"avatars[{index}].name: {name!r} is configured twice")
        seen.add(name)
        avatar_id = sec.str("avatar_id", "")
        if index == 0 and env.get("AVATAR_ID"):
            avatar_id = env["AVATAR_ID"]
        if not avatar_id:
            raise ConfigError(f"avatars[{index}].avatar_id: not set (or AVATAR_ID)")
        api_key_env = sec.str("api_key_env", "AVATAR_API_KEY")
        api_key = env.get(api_key_env, "")
        if not api_key:
            raise ConfigError(f"{api_key_env}: not set (the API key of avatar {name!r})")
        allow = sec.table("allow")
        from bridge.access import validate_rules  # here to keep settings free of import cycles

        validate_rules(allow, f"avatars[{index}].allow")
        avatars.append(
            AvatarSettings(
                name=name,
                avatar_id=avatar_id,
                api_key_env=api_key_env,
                api_key=Secret(api_key),
                title=sec.str("title", ""),
                allow=allow,
                attributes=_attributes(sec.table("attributes"), f"avatars[{index}].attributes"),
            )
        )
        sec.check_unknown()
    return tuple(avatars)


# Per format: the default cookie name and user field, and the settings it takes beyond the
# common ones (name, secret_key_env, user_field, claim_fields, login_url, logout_url).
COOKIE_FORMATS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "flask": ("session", "user_id", ("salt", "max_age")),
    "itsdangerous": ("session", "user_id", ("salt", "max_age")),
    "django": ("sessionid", "_auth_user_id", ("max_age",)),
    "rails": ("", "user_id", ("key_digest",)),
    "express": ("connect.sid", "/passport/user", ("store_url", "store_prefix", "store_timeout")),
    "authjs": ("authjs.session-token", "sub", ()),
    "next-auth-v4": ("next-auth.session-token", "sub", ()),
    "react-router": ("__session", "userId", ()),
}
# What check-config says each format checks (and which settings it reads).
COOKIE_FORMAT_NOTES = {
    "flask": "Flask's session cookie: itsdangerous, salt, HMAC-SHA1, tagged JSON; max_age",
    "itsdangerous": "an itsdangerous URLSafeTimedSerializer token: salt, max_age",
    "django": "Django's signed_cookies session: TimestampSigner HMAC-SHA256 under SECRET_KEY and "
    "its fallbacks, salt django.contrib.sessions.backends.signed_cookies, max_age "
    "(SESSION_COOKIE_AGE)",
    "rails": "Rails' encrypted cookie: AES-256-GCM, key by PBKDF2 of secret_key_base (salt "
    "'authenticated encrypted cookie', 1000 iterations, key_digest), purpose cookie.<name>, exp",
    "express": "express-session's signed id (HMAC-SHA256, cookie-signature) and the session "
    "connect-redis keeps at store_prefix + id in store_url; missing there means signed out",
    "authjs": "Auth.js v5's JWE (dir + A256CBC-HS512, HKDF key from AUTH_SECRET salted with the "
    "cookie name), chunked cookies joined, exp with 15 s tolerance",
    "next-auth-v4": "NextAuth v4's JWE (dir + A256GCM, HKDF key from NEXTAUTH_SECRET), chunked "
    "cookies joined, exp with 15 s tolerance",
    "react-router": "React Router / Remix createCookieSessionStorage: base64 JSON signed with "
    "HMAC-SHA256 under any of the secrets",
}
JWT_NOTE = (
    "a JWT from the cookie or the Bearer header, signed with a key from jwks_url (cached; an "
    "unknown kid refetched at most every 10 s) in one of algorithms; iss, aud and exp required"
)
_COOKIE_FORMAT_ONLY = {
    "salt",
    "max_age",
    "key_digest",
    "store_url",
    "store_prefix",
    "store_timeout",
}
_COOKIE_COMMON = {
    "format", "name", "secret_key_env", "user_field", "claim_fields", "login_url", "logout_url",
}  # fmt: skip


def _site_cookie(
    raw: Mapping[str, Any], env: Mapping[str, str], *, https: bool = False
) -> SiteCookieSettings:
    sec = _Section("login.cookie", raw)
    fmt = sec.str("format", "flask")
    if fmt not in COOKIE_FORMATS:
        raise ConfigError(f"login.cookie.format: must be one of {', '.join(COOKIE_FORMATS)}")
    default_name, default_user_field, extra = COOKIE_FORMATS[fmt]
    misplaced = sorted(set(raw) - _COOKIE_COMMON - set(extra))
    if misplaced:
        raise ConfigError(f"login.cookie.{misplaced[0]}: not a setting of format {fmt!r}")
    if https and fmt in ("authjs", "next-auth-v4"):
        default_name = "__Secure-" + default_name  # what both libraries call it over https
    key_env = sec.str("secret_key_env", "SITE_SECRET_KEY")
    keys = _secret_list(env.get(key_env, ""))
    if not keys:
        raise ConfigError(
            f"{key_env}: not set (the site's cookie signing key, login.cookie.secret_key_env)"
        )
    login_url = sec.str("login_url", "")
    if not login_url:
        raise ConfigError("login.cookie.login_url: not set (where a logged-out visitor signs in)")
    if fmt == "itsdangerous" and not sec.str("salt", ""):
        # With the library's default salt, any other token the site signs with this key (an
        # e-mail confirmation carrying user_id) would pass as a login.
        raise ConfigError(
            "login.cookie.salt: required for format 'itsdangerous' (the salt the site's login "
            "cookie, and nothing else it signs, uses)"
        )
    name = sec.str("name", default_name)
    if not name:
        raise ConfigError(f"login.cookie.name: not set (format {fmt!r} has no default name)")
    store_url = sec.str("store_url", "")
    if fmt == "express":
        if not store_url:
            raise ConfigError("login.cookie.store_url: not set (the site's Redis, redis://...)")
        from bridge.store.redis import parse_url  # here to keep settings free of import cycles

        try:
            site_redis = parse_url(store_url)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("store.url", "login.cookie.store_url")) from exc
        if site_redis.topology != "single":
            raise ConfigError("login.cookie.store_url: must be redis:// or rediss:// (one Redis)")
    settings = SiteCookieSettings(
        name=name,
        format=fmt,
        secret_key_env=key_env,
        secret_keys=keys,
        salt=sec.str("salt", "cookie-session"),
        max_age=sec.int("max_age", 1209600, minimum=1),
        user_field=sec.str("user_field", default_user_field),
        login_url=login_url,
        claim_fields=sec.str_list("claim_fields"),
        logout_url=sec.str("logout_url", ""),
        key_digest=sec.str("key_digest", "sha256"),
        store_url=store_url,
        store_prefix=sec.str("store_prefix", "sess:"),
        store_timeout=sec.float("store_timeout", 2.0),
    )
    if not settings.user_field:
        raise ConfigError("login.cookie.user_field: must not be empty")
    _check_user_field(settings.user_field, "login.cookie.user_field")
    if settings.key_digest not in ("sha256", "sha1"):
        raise ConfigError("login.cookie.key_digest: must be 'sha256' (Rails 7+) or 'sha1'")
    sec.check_unknown()
    return settings


def _check_user_field(value: str, name: str) -> None:
    if value.startswith("/") and any(
        "~" in t.replace("~0", "").replace("~1", "") for t in value[1:].split("/")
    ):
        raise ConfigError(f"{name}: '~' in a JSON pointer must be written ~0 (and '/' as ~1)")


# Signature algorithms a JWKS (public keys) can verify; never "none", never HMAC.
JWT_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip


def _jwt_login(raw: Mapping[str, Any]) -> JWTLoginSettings:
    where = "login.jwt"
    sec = _Section(where, raw)
    jwks_url = sec.str("jwks_url", "")
    parts = urlsplit(jwks_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}.jwks_url: must be the provider's https JWKS URL")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ConfigError(f"{where}.jwks_url: must be https (plain http for localhost only)")
    issuer = sec.str("issuer", "")
    if not issuer:
        raise ConfigError(f"{where}.issuer: not set (the iss every token must carry)")
    audience_raw = sec._get("audience", "")
    if isinstance(audience_raw, str):
        audience: tuple[str, ...] = (audience_raw,) if audience_raw else ()
    elif isinstance(audience_raw, list) and all(isinstance(a, str) and a for a in audience_raw):
        audience = tuple(audience_raw)
    else:
        raise ConfigError(f"{where}.audience: must be a string or a list of strings")
    if not audience:
        raise ConfigError(f"{where}.audience: not set (the aud meant for this site)")
    algorithms = sec.str_list("algorithms")
    if not algorithms:
        raise ConfigError(f'{where}.algorithms: not set (e.g. ["RS256"])')
    for alg in algorithms:
        if alg not in JWT_ALGORITHMS:
            raise ConfigError(
                f"{where}.algorithms: {alg!r} is not allowed; public-key algorithms only "
                f"({', '.join(JWT_ALGORITHMS)})"
            )
    cookie = sec.str("cookie", "")
    header = sec.str("header", "")
    if bool(cookie) == bool(header):
        raise ConfigError(
            f'{where}: set exactly one of cookie = "NAME" or header = "Authorization"'
        )
    if header and header.lower() != "authorization":
        raise ConfigError(f'{where}.header: only "Authorization" (a Bearer token) is supported')
    login_url = sec.str("login_url", "")
    if not login_url:
        raise ConfigError(f"{where}.login_url: not set (where a visitor signs in)")
    settings = JWTLoginSettings(
        jwks_url=jwks_url,
        issuer=issuer,
        audience=audience,
        algorithms=tuple(algorithms),
        login_url=login_url,
        cookie=cookie,
        header="Authorization" if header else "",
        user_field=sec.str("user_field", "sub"),
        claim_fields=sec.str_list("claim_fields"),
        leeway=sec.int("leeway", 30, minimum=0),
        timeout=sec.float("timeout", 5.0),
    )
    if not settings.user_field:
        raise ConfigError(f"{where}.user_field: must not be empty")
    _check_user_field(settings.user_field, f"{where}.user_field")
    if settings.leeway > 300:
        raise ConfigError(f"{where}.leeway: at most 300 seconds")
    sec.check_unknown()
    return settings


OIDC_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
_RESERVED_PATHS = {
    "/", "/login", "/logout", "/session", "/backchannel-logout", "/request_tokens",
    "/healthz", "/readyz", "/metrics",
}  # fmt: skip
_OIDC_KEYS = {
    "issuer",
    "client_id",
    "client_secret_env",
    "scopes",
    "redirect_path",
    "post_logout_redirect_path",
    "claims_from_userinfo",
    "token_endpoint_auth_method",
    "title",
    "leeway",
    "max_session_age",
    "timeout",
}


def _local_path(value: str, name: str) -> str:
    from bridge.redirects import safe_next  # here to keep settings free of import cycles

    if safe_next(value, "") != value or "?" in value or "#" in value:
        raise ConfigError(f"{name}: must be a plain path on this site starting with '/'")
    return value


def _oidc(raw: Any, env: Mapping[str, str]) -> tuple[OIDCProviderSettings, ...]:
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError("login.oidc: must be a table ([login.oidc] or [login.oidc.<name>])")
    if set(raw) & _OIDC_KEYS:
        # One provider, written as [login.oidc]; it is named "default".
        return (_oidc_provider("default", "login.oidc", raw, env),)
    providers = []
    for name, table in raw.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"login.oidc.{name}: unknown setting")
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"login.oidc.{name}: letters, digits, '_' and '-' only")
        providers.append(_oidc_provider(name, f"login.oidc.{name}", table, env))
    return tuple(providers)


def _oidc_provider(
    name: str, where: str, raw: Mapping[str, Any], env: Mapping[str, str]
) -> OIDCProviderSettings:
    sec = _Section(where, raw)
    issuer = sec.str("issuer", "")
    parts = urlsplit(issuer)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}.issuer: must be the provider's https URL")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ConfigError(f"{where}.issuer: must be https (plain http for localhost only)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{where}.issuer: must not have a query, fragment or userinfo")
    client_id = sec.str("client_id", "")
    if not client_id:
        raise ConfigError(f"{where}.client_id: not set")
    secret_env = sec.str("client_secret_env", "OIDC_CLIENT_SECRET")
    secret = env.get(secret_env, "")
    if not secret:
        raise ConfigError(
            f"{secret_env}: not set (the OIDC client secret, {where}.client_secret_env)"
        )
    scopes = sec.str_list("scopes") if "scopes" in raw else ("openid", "email", "profile")
    if "openid" not in scopes:
        raise ConfigError(f"{where}.scopes: must include 'openid'")
    userinfo_raw = sec._get("claims_from_userinfo", False)
    userinfo: bool | tuple[str, ...]
    if isinstance(userinfo_raw, bool):
        userinfo = userinfo_raw
    elif isinstance(userinfo_raw, list) and all(isinstance(v, str) for v in userinfo_raw):
        userinfo = tuple(userinfo_raw)
    else:
        raise ConfigError(f"{where}.claims_from_userinfo: must be true, false or a list of claims")
    method = sec.str("token_endpoint_auth_method", "client_secret_basic")
    if method not in OIDC_AUTH_METHODS:
        raise ConfigError(
            f"{where}.token_endpoint_auth_method: must be one of {', '.join(OIDC_AUTH_METHODS)}"
        )
    settings = OIDCProviderSettings(
        name=name,
        issuer=issuer,
        client_id=client_id,
        client_secret_env=secret_env,
        client_secret=Secret(secret),
        scopes=tuple(scopes),
        redirect_path=_local_path(sec.str("redirect_path", "/callback"), f"{where}.redirect_path"),
        post_logout_redirect_path=_local_path(
            sec.str("post_logout_redirect_path", "/"), f"{where}.post_logout_redirect_path"
        ),
        claims_from_userinfo=userinfo,
        token_endpoint_auth_method=method,
        title=sec.str("title", ""),
        leeway=sec.int("leeway", 60, minimum=0),
        max_session_age=sec.int("max_session_age", 0, minimum=0),
        timeout=sec.float("timeout", 5.0),
    )
    if settings.leeway > 300:
        raise ConfigError(f"{where}.leeway: at most 300 seconds")
    if settings.redirect_path in _RESERVED_PATHS or settings.redirect_path.startswith(
        ("/avatars/", "/static/", "/request_tokens/", "/admin")
    ):
        raise ConfigError(f"{where}.redirect_path: {settings.redirect_path!r} is a bridge route")
    sec.check_unknown()
    return settings


def _session_check(raw: Any) -> SessionCheckSettings:
    sec = _Section("login.session_check", raw)
    url = sec.str("url", "")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("login.session_check.url: must be the site's http(s) 'who am I' URL")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ConfigError(
            "login.session_check.url: cookies may travel over https only (or to localhost)"
        )
    cookies = sec.str_list("cookies")
    if not cookies:
        raise ConfigError("login.session_check.cookies: name the cookie(s) to forward")
    login_url = sec.str("login_url", "")
    if not login_url:
        raise ConfigError("login.session_check.login_url: not set (where a visitor signs in)")
    settings = SessionCheckSettings(
        url=url,
        cookies=cookies,
        login_url=login_url,
        user_field=sec.str("user_field", "user_id"),
        claim_fields=sec.str_list("claim_fields"),
        timeout=sec.float("timeout", 2.0),
        cache_ttl=sec.int("cache_ttl", 10, minimum=0),
    )
    if not settings.user_field:
        raise ConfigError("login.session_check.user_field: must not be empty")
    if settings.cache_ttl > 300:
        raise ConfigError("login.session_check.cache_ttl: at most 300 seconds")
    sec.check_unknown()
    return settings


def example_config_path() -> Path:
    return Path(__file__).resolve().parent.parent / "config" / "bridge.example.toml"
