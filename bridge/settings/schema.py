"""The settings, declared once: each section a frozen msgspec Struct shaped like the TOML file.

Each default and constraint is written here once: in the field (type, ``Meta`` bounds, default;
a ``Meta`` description is what an error about the field adds) or, for a rule across fields, in
the section's ``__post_init__``, which names the field it refuses (``"idle_timeout: ..."``; the
loader adds the section). A field named ``env:...`` is not a TOML key: the loader fills it from
the environment (secrets) or from another section.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, field
from msgspec.structs import force_setattr, replace

from bridge.errors import ConfigError
from bridge.secret import Secret
from bridge.settings.values import (
    LOOPBACK_HOSTS,
    AccessRules,
    Attributes,
    BasePath,
    LocalPath,
    Name,
    Network,
    Origin,
    RateLimit,
    RedisAddress,
    SecureURL,
    SiteURL,
    Strings,
    UpstreamURL,
    UserField,
    named,
    require,
    store_address,
)

Seconds = Annotated[float, Meta(gt=0)]
Count = Annotated[int, Meta(ge=0)]
AtMost300 = Annotated[int, Meta(ge=0, le=300)]
NO_SECRET = Secret("")
# Signature algorithms a JWKS (public keys) can verify; never "none", never HMAC.
PublicKeyAlgorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]


def _env(name: str, default: Any = None) -> Any:
    return field(default=default, name=f"env:{name}")


def _set(why: str | None = None) -> Meta:
    """A required text or list must not be empty: ``"login_url: not set (why)"``."""
    return Meta(min_length=1, description=why)


Path = Annotated[str, Meta(pattern="^/", description="must start with '/'")]


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class ServerSettings(Section, frozen=True):
    host: str = "127.0.0.1"
    port: Count = 8000
    public_url: Origin = Origin("http://127.0.0.1:8000")
    allowed_origins: tuple[Origin, ...] = ()
    trusted_proxies: tuple[Network, ...] = ()
    base_path: BasePath = "/"
    # The ASGI server `serve` runs the bridge under (docs: README, "Serving"). granian is the one
    # that enforces every limit below; uvicorn and hypercorn each lack one.
    asgi_server: Literal["granian", "uvicorn", "hypercorn"] = "granian"
    # Seconds a connection may take to send a request head (also how long an idle keep-alive
    # connection is kept): a silent or trickling client is closed after it.
    head_timeout: Annotated[float, Meta(gt=0, le=300)] = 20.0
    # Bytes of a request head (request line and headers); a bigger one is answered 431. A
    # browser's head, cookies included, stays well under 16 KiB. granian's minimum is 8 KiB.
    max_head_bytes: Annotated[int, Meta(ge=8192, le=1024 * 1024)] = 16 * 1024
    # Connections served at once; more wait in the listen backlog until one closes.
    max_connections: Annotated[int, Meta(ge=1)] = 2048
    # The token endpoint's GETs answered by bridge.web.fastpath in front of Quart (same answers).
    token_fast_path: bool = True

    def __post_init__(self) -> None:
        local = self.is_https or urlsplit(self.public_url).hostname in LOOPBACK_HOSTS
        require(local, "public_url: plain http is allowed for localhost only; use https")

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


class SessionSettings(Section, frozen=True):
    cookie_secure: bool = True
    cookie_name: Name = "sentifyd_bridge"
    idle_timeout: Annotated[int, Meta(ge=60)] = 1800
    absolute_timeout: Annotated[int, Meta(ge=60)] = 43200
    refresh_grace: Count = 10
    max_chains: Annotated[int, Meta(ge=1)] = 64
    cookie_path: str = _env("cookie_path", "/")  # always server.base_path

    def __post_init__(self) -> None:
        longest = self.idle_timeout <= self.absolute_timeout
        require(longest, "idle_timeout: must not exceed session.absolute_timeout")

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


class StoreSettings(Section, frozen=True):
    url: str = "memory://"
    # A hash tag in the prefix would put every key in one Redis Cluster slot.
    prefix: Annotated[str, Meta(pattern=r"^[^{}]*$", description="must not contain '{' or '}'")] = (
        "sbridge"
    )
    timeout: Seconds = 2.0
    lock_wait: Seconds = 30.0
    lock_lease: Seconds = 10.0

    def __post_init__(self) -> None:
        # A renewal is tried every third of the lease and may take a whole timeout.
        lasts = self.address is None or self.lock_lease >= 3 * self.timeout
        require(lasts, "lock_lease: must be at least three times store.timeout")

    @property
    def address(self) -> RedisAddress | None:
        """The Redis ``url`` names (None for ``memory://``); checked at start-up."""
        return named("url", store_address, self.url)


class SentifydSettings(Section, frozen=True):
    backend: UpstreamURL = UpstreamURL("https://serve.sentifyd.io")
    login_path: Path = "/api/v1/chatbot/login"
    refresh_path: Annotated[str, Meta(pattern="^(/|$)", description="must start with '/'")] = ""
    timeout: Seconds = 10.0
    retries: Count = 2
    retry_backoff: Seconds = 0.2
    default_expires_in: Annotated[int, Meta(ge=1)] = 55
    refresh_margin: Count = 30
    max_response_bytes: Annotated[int, Meta(ge=1024)] = 1_000_000

    def __post_init__(self) -> None:
        force_setattr(self, "backend", self.backend.rstrip("/"))


class ComponentSettings(Section, frozen=True):
    script: str = "https://frontend.sentifyd.io/sentifyd-bot/main.js"
    script_type: Literal["module", "defer"] = "module"
    element: Literal["sentifyd-bot", "sentifyd-realtime"] = "sentifyd-bot"
    attributes: Attributes = field(default_factory=Attributes)


class AvatarSettings(Section, frozen=True):
    name: Name = ""  # the first avatar is "default" unless named
    avatar_id: str = ""
    api_key_env: str = "AVATAR_API_KEY"
    api_key: Secret = _env("api_key", NO_SECRET)
    title: str = ""
    allow: AccessRules = AccessRules()
    attributes: Attributes = field(default_factory=Attributes)


class SiteCookieSettings(Section, frozen=True, kw_only=True, tag_field="format"):
    """The site's own login cookie (``[login.cookie]``): one struct per ``format``, each with its
    own defaults and only the settings that format reads (any other key is refused)."""

    name: Annotated[str, _set()]
    secret_key_env: str = "SITE_SECRET_KEY"  # noqa: S105 - a variable's name
    secret_keys: tuple[Secret, ...] = _env("secret_keys", ())
    user_field: UserField = "user_id"
    login_url: Annotated[str, _set("where a logged-out visitor signs in")]
    claim_fields: tuple[str, ...] = ()
    logout_url: str = ""

    @property
    def format(self) -> str:
        return str(self.__struct_config__.tag)


class FlaskCookie(SiteCookieSettings, frozen=True, tag="flask"):
    name: Annotated[str, _set()] = "session"
    salt: str = "cookie-session"
    max_age: Annotated[int, Meta(ge=1)] = 1209600


class ItsdangerousCookie(FlaskCookie, frozen=True, tag="itsdangerous"):
    salt: str = ""

    def __post_init__(self) -> None:
        # With the library's default salt, any other token the site signs with this key (an
        # e-mail confirmation carrying user_id) would pass as a login.
        require(
            self.salt,
            "salt: required for format 'itsdangerous' (the salt the site's login cookie, "
            "and nothing else it signs, uses)",
        )


class DjangoCookie(SiteCookieSettings, frozen=True, tag="django"):
    name: Annotated[str, _set()] = "sessionid"
    user_field: UserField = "_auth_user_id"
    max_age: Annotated[int, Meta(ge=1)] = 1209600


class RailsCookie(SiteCookieSettings, frozen=True, tag="rails"):
    name: Annotated[str, _set("format 'rails' has no default name")]
    key_digest: Literal["sha256", "sha1"] = "sha256"  # PBKDF2's (sha1 before Rails 7)


class ExpressCookie(SiteCookieSettings, frozen=True, kw_only=True, tag="express"):
    name: Annotated[str, _set()] = "connect.sid"
    user_field: UserField = "/passport/user"
    store_url: Annotated[str, _set("the site's Redis, redis://...")]  # where connect-redis keeps
    store_prefix: str = "sess:"
    store_timeout: Seconds = 2.0

    def __post_init__(self) -> None:
        one = named("store_url", RedisAddress.parse, self.store_url).topology == "single"
        require(one, "store_url: must be redis:// or rediss:// (one Redis)")


class AuthJSCookie(SiteCookieSettings, frozen=True, tag="authjs"):
    # Over https the loader prefixes "__Secure-", as the library does.
    name: Annotated[str, _set()] = "authjs.session-token"
    user_field: UserField = "sub"


class NextAuthV4Cookie(AuthJSCookie, frozen=True, tag="next-auth-v4"):
    name: Annotated[str, _set()] = "next-auth.session-token"


class ReactRouterCookie(SiteCookieSettings, frozen=True, tag="react-router"):
    name: Annotated[str, _set()] = "__session"
    user_field: UserField = "userId"


SiteCookie = (
    FlaskCookie | ItsdangerousCookie | DjangoCookie | RailsCookie | ExpressCookie | AuthJSCookie
    | NextAuthV4Cookie | ReactRouterCookie
)  # fmt: skip


class JWTLoginSettings(Section, frozen=True, kw_only=True):
    """A site whose login is a JWT signed by its identity provider (``[login.jwt]``)."""

    jwks_url: SecureURL
    issuer: Annotated[str, _set("the iss every token must carry")]
    audience: Strings
    algorithms: Annotated[tuple[PublicKeyAlgorithm, ...], _set('e.g. ["RS256"]')]
    login_url: Annotated[str, _set("where a visitor signs in")]
    cookie: str = ""
    header: str = ""
    user_field: UserField = "sub"
    claim_fields: tuple[str, ...] = ()
    leeway: AtMost300 = 30
    timeout: Seconds = 5.0

    def __post_init__(self) -> None:
        require(self.audience, "audience: not set (the aud meant for this site)")
        one = bool(self.cookie) != bool(self.header)
        require(one, 'set exactly one of cookie = "NAME" or header = "Authorization"')
        bearer = self.header.lower() in ("", "authorization")
        require(bearer, 'header: only "Authorization" (a Bearer token) is supported')
        if self.header:
            force_setattr(self, "header", "Authorization")


_RESERVED_PATHS = {
    "/", "/login", "/logout", "/session", "/backchannel-logout", "/request_tokens",
    "/healthz", "/readyz", "/metrics",
}  # fmt: skip
_RESERVED_PREFIXES = ("/avatars/", "/static/", "/request_tokens/", "/admin")


class OIDCProviderSettings(Section, frozen=True, kw_only=True):
    """One OpenID provider the bridge signs visitors in with (``[login.oidc]``)."""

    name: str = _env("name", "default")  # the table's name under [login.oidc.<name>]
    issuer: SecureURL
    client_id: Annotated[str, _set()]
    client_secret_env: str = "OIDC_CLIENT_SECRET"  # noqa: S105 - a variable's name
    client_secret: Secret = _env("client_secret", NO_SECRET)
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    redirect_path: LocalPath = LocalPath("/callback")
    post_logout_redirect_path: LocalPath = LocalPath("/")
    # True: every userinfo claim; a list: only these; empty: the ID token's claims alone.
    claims_from_userinfo: bool | tuple[str, ...] = False
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] = (
        "client_secret_basic"  # noqa: S105 - a method name
    )
    title: str = ""
    leeway: AtMost300 = 60
    max_session_age: Count = 0
    timeout: Seconds = 5.0  # one deadline per call to the provider, its answer included

    def __post_init__(self) -> None:
        parts = urlsplit(self.issuer)
        plain = not (parts.query or parts.fragment or parts.username or parts.password)
        require(plain, "issuer: must not have a query, fragment or userinfo")
        require("openid" in self.scopes, "scopes: must include 'openid'")
        path = self.redirect_path
        ours = path in _RESERVED_PATHS or path.startswith(_RESERVED_PREFIXES)
        require(not ours, f"redirect_path: {path!r} is a bridge route")


class SessionCheckSettings(Section, frozen=True, kw_only=True):
    """The site's own "who am I" URL, for cookies the bridge cannot verify itself."""

    url: SiteURL
    cookies: Annotated[tuple[str, ...], _set("name the cookie(s) to forward")]
    login_url: Annotated[str, _set("where a visitor signs in")]
    user_field: Annotated[str, _set()] = "user_id"
    claim_fields: tuple[str, ...] = ()
    timeout: Seconds = 2.0
    cache_ttl: AtMost300 = 10


class LoginSettings(Section, frozen=True):
    cookie: SiteCookie | None = None
    jwt: JWTLoginSettings | None = None
    oidc: tuple[OIDCProviderSettings, ...] = ()  # [login.oidc] or [login.oidc.<name>]...
    session_check: SessionCheckSettings | None = None


class LoggingSettings(Section, frozen=True):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class LifecycleSettings(Section, frozen=True):
    retention: Annotated[int, Meta(ge=60)] = 7 * 86400
    max_events: Annotated[int, Meta(ge=1)] = 200
    record_client: bool = False


class LimitsSettings(Section, frozen=True):
    """What costs is guarded; cached answers to signed-in visitors are not (README, limits)."""

    # A backstop on one session's requests of any kind: each one writes its record.
    per_session: RateLimit = RateLimit(120, 60)
    # First requests (new handle chains) of one session.
    new_chains_per_session: RateLimit = RateLimit(30, 60)
    # New stored sessions (each one a Sentifyd login) of one user, and how many may live.
    new_sessions_per_user: RateLimit = RateLimit(10, 60)
    sessions_per_user: Count = 10
    # Anonymous work per client address: refusals (401/403) and identity checks they cause.
    per_ip: RateLimit = RateLimit(120, 60)
    # Each SSO login start stores a short-lived state record: anonymous, so held per IP.
    login_per_ip: RateLimit = RateLimit(20, 60)
    # The avatar's Sentifyd quota, across every instance (off unless set).
    upstream_logins_per_avatar: RateLimit = RateLimit(0, 60)


class MetricsSettings(Section, frozen=True):
    enabled: bool = True
    require_token: bool = True


class AdminSettings(Section, frozen=True):
    revoke_block: Count = 3600
    # The audit trail: one capped list in the store, like a user's lifecycle events.
    audit_retention: Annotated[int, Meta(ge=60)] = 90 * 86400
    audit_max_entries: Annotated[int, Meta(ge=1)] = 10_000
    # The operator console at {base}/admin/ (only where the admin API is on).
    console: bool = True
    console_session_ttl: Annotated[int, Meta(ge=60, le=7 * 86400)] = 8 * 3600


class OperatorToken(msgspec.Struct, frozen=True):
    """One named admin token, held as the SHA-256 of the token (hex), never as the token.

    Admin tokens are random strings of 32+ characters, so a fast hash is as good as a slow
    one: nobody guesses their way to a preimage.
    """

    name: str
    digest: str

    @staticmethod
    def digest_of(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()

    @classmethod
    def of(cls, name: str, token: Secret) -> OperatorToken:
        return cls(name, cls.digest_of(token.reveal()))

    def __repr__(self) -> str:
        return f"OperatorToken({self.name!r})"


class Settings(Section, frozen=True):
    """Everything the bridge reads at start-up; built by :func:`bridge.settings.load_settings`."""

    demo: bool = False
    server: ServerSettings = ServerSettings()
    session: SessionSettings = SessionSettings()
    store: StoreSettings = StoreSettings()
    sentifyd: SentifydSettings = SentifydSettings()
    component: ComponentSettings = ComponentSettings()
    avatars: tuple[AvatarSettings, ...] = ()
    login: LoginSettings = LoginSettings()
    logging: LoggingSettings = LoggingSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    limits: LimitsSettings = LimitsSettings()
    metrics: MetricsSettings = MetricsSettings()
    admin: AdminSettings = AdminSettings()
    secret_keys: tuple[Secret, ...] = _env("secret_keys", ())
    # BRIDGE_ADMIN_TOKEN ("admin"), BRIDGE_ADMIN_TOKENS, BRIDGE_ADMIN_TOKENS_FILE: hashes only.
    admin_tokens: tuple[OperatorToken, ...] = _env("admin_tokens", ())
    metrics_token: Secret | None = _env("metrics_token")
    source: str = _env("source", "")

    def __post_init__(self) -> None:
        force_setattr(self, "session", replace(self.session, cookie_path=self.server.base_path))
        secure = self.session.cookie_secure or not self.server.is_https
        require(secure, "session.cookie_secure: must be true when server.public_url is https")
        avatars = self.avatars or (AvatarSettings(),)
        if not avatars[0].name:
            avatars = (replace(avatars[0], name="default"), *avatars[1:])
        force_setattr(self, "avatars", avatars)
        seen: set[str] = set()
        for index, avatar in enumerate(avatars):
            where = f"avatars[{index}]"
            require(avatar.name, f"{where}.name: letters, digits, '_' and '-' only")
            require(avatar.name not in seen, f"{where}.name: {avatar.name!r} is configured twice")
            seen.add(avatar.name)
            require(avatar.avatar_id, f"{where}.avatar_id: not set (or AVATAR_ID)")
        login = self.login
        if not (login.cookie or login.jwt or login.oidc or login.session_check):
            raise ConfigError(
                "login: configure at least one way in ([login.cookie], [login.jwt], "
                "[login.oidc] or [login.session_check])"
            )

    @property
    def site_cookie(self) -> SiteCookie | None:
        return self.login.cookie

    @property
    def jwt(self) -> JWTLoginSettings | None:
        return self.login.jwt

    @property
    def oidc(self) -> tuple[OIDCProviderSettings, ...]:
        return self.login.oidc

    @property
    def session_check(self) -> SessionCheckSettings | None:
        return self.login.session_check

    @property
    def log_level(self) -> str:
        return self.logging.level

    def avatar(self, name: str | None) -> AvatarSettings | None:
        if name is None:
            return self.avatars[0]
        return next((avatar for avatar in self.avatars if avatar.name == name), None)
