"""Typed settings: one TOML file plus environment variables, validated once at start-up.

Secrets only ever come from the environment and are held as :class:`bridge.secret.Secret`.
Every wrong or unsafe setting stops start-up with a :class:`ConfigError` naming it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
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


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = "http://127.0.0.1:8000"
    allowed_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    asgi_server: str = "uvicorn"

    @property
    def public_origin(self) -> str:
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}".lower()

    @property
    def is_https(self) -> bool:
        return self.public_url.lower().startswith("https://")


@dataclass(frozen=True)
class SessionSettings:
    cookie_secure: bool = True
    cookie_name: str = "sentifyd_bridge"
    idle_timeout: int = 1800
    absolute_timeout: int = 43200
    refresh_grace: int = 10
    max_chains: int = 8

    @property
    def effective_cookie_name(self) -> str:
        # The __Host- prefix makes the browser refuse the cookie unless it is Secure, host-only
        # and Path=/, which is exactly the scope we want.
        return f"__Host-{self.cookie_name}" if self.cookie_secure else self.cookie_name


@dataclass(frozen=True)
class StoreSettings:
    url: str = "memory://"
    prefix: str = "sbridge"
    timeout: float = 2.0
    lock_wait: float = 30.0


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

    def avatar(self, name: str | None) -> AvatarSettings | None:
        if name is None:
            return self.avatars[0]
        for avatar in self.avatars:
            if avatar.name == name:
                return avatar
        return None

    def masked(self) -> dict[str, Any]:
        """Return the effective settings as plain data, every secret masked."""
        return _masked(dataclasses.asdict(self))


def _masked(value: Any) -> Any:
    if isinstance(value, Secret):
        return "********" if value else ""
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value


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

    def __init__(self, name: str, data: Any) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{name}: must be a table")
        self.name = name
        self.data = data
        self.used: set[str] = set()

    def _get(self, key: str, default: Any) -> Any:
        self.used.add(key)
        return self.data.get(key, default)

    def str(self, key: str, default: str = "") -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise ConfigError(f"{self.name}.{key}: must be a string")
        return value

    def int(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.name}.{key}: must be an integer")
        if value < minimum:
            raise ConfigError(f"{self.name}.{key}: must be at least {minimum}")
        return value

    def float(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self.name}.{key}: must be a number")
        if value <= minimum:
            raise ConfigError(f"{self.name}.{key}: must be greater than {minimum}")
        return float(value)

    def bool(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self.name}.{key}: must be true or false")
        return value

    def str_list(self, key: str) -> tuple[str, ...]:
        value = self._get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self.name}.{key}: must be a list of strings")
        return tuple(value)

    def table(self, key: str) -> dict[str, Any]:
        value = self._get(key, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"{self.name}.{key}: must be a table")
        return dict(value)

    def check_unknown(self, *also_allowed: str) -> None:
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
        raise ConfigError(
            "server.public_url: plain http is allowed for localhost only; use https"
        )
    srv.check_unknown()

    ses = _Section("session", root.table("session"))
    session = SessionSettings(
        cookie_secure=ses.bool("cookie_secure", True),
        cookie_name=ses.str("cookie_name", "sentifyd_bridge"),
        idle_timeout=ses.int("idle_timeout", 1800, minimum=60),
        absolute_timeout=ses.int("absolute_timeout", 43200, minimum=60),
        refresh_grace=ses.int("refresh_grace", 10, minimum=0),
        max_chains=ses.int("max_chains", 8, minimum=1),
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
    )
    if urlsplit(store.url).scheme not in ("memory", "redis", "rediss"):
        raise ConfigError("store.url: must start with memory://, redis:// or rediss://")
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
    site_cookie = _site_cookie(login.table("cookie"), env) if "cookie" in login.data else None
    login.check_unknown("oidc", "session_check")

    secret_keys = _secret_list(env.get("BRIDGE_SECRET_KEY", ""))
    if not secret_keys:
        raise ConfigError(
            "BRIDGE_SECRET_KEY: not set (the bridge's own signing key, 32+ characters)"
        )
    for key in secret_keys:
        if len(key) < MIN_SECRET_KEY_LENGTH:
            raise ConfigError(
                f"BRIDGE_SECRET_KEY: each key must be at least {MIN_SECRET_KEY_LENGTH} characters"
            )

    log = _Section("logging", root.table("logging"))
    log_level = log.str("level", "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("logging.level: must be DEBUG, INFO, WARNING or ERROR")
    log.check_unknown()

    root.check_unknown(
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
    if site_cookie is None and not login.data.get("oidc") and not login.data.get("session_check"):
        raise ConfigError("login: configure at least one way in ([login.cookie])")

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
    )


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


def _site_cookie(raw: Mapping[str, Any], env: Mapping[str, str]) -> SiteCookieSettings:
    sec = _Section("login.cookie", raw)
    fmt = sec.str("format", "flask")
    if fmt not in ("flask", "itsdangerous"):
        raise ConfigError("login.cookie.format: must be 'flask' or 'itsdangerous'")
    key_env = sec.str("secret_key_env", "SITE_SECRET_KEY")
    keys = _secret_list(env.get(key_env, ""))
    if not keys:
        raise ConfigError(
            f"{key_env}: not set (the site's cookie signing key, login.cookie.secret_key_env)"
        )
    login_url = sec.str("login_url", "")
    if not login_url:
        raise ConfigError("login.cookie.login_url: not set (where a logged-out visitor signs in)")
    settings = SiteCookieSettings(
        name=sec.str("name", "session"),
        format=fmt,
        secret_key_env=key_env,
        secret_keys=keys,
        salt=sec.str("salt", "cookie-session" if fmt == "flask" else "itsdangerous"),
        max_age=sec.int("max_age", 1209600, minimum=1),
        user_field=sec.str("user_field", "user_id"),
        login_url=login_url,
        claim_fields=sec.str_list("claim_fields"),
        logout_url=sec.str("logout_url", ""),
    )
    if not settings.user_field:
        raise ConfigError("login.cookie.user_field: must not be empty")
    sec.check_unknown()
    return settings


def example_config_path() -> Path:
    return Path(__file__).resolve().parent.parent / "config" / "bridge.example.toml"
