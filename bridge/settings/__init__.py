"""Typed settings: one TOML file plus environment variables, validated once at start-up.

The bottom layer: these modules import only :mod:`bridge.errors` and :mod:`bridge.secret`.
``values`` holds the value types that parse themselves, ``schema`` the sections as frozen
msgspec Structs, ``loader`` the sources and their order. Secrets only ever come from the
environment and are held as :class:`bridge.secret.Secret`.
"""

from bridge.settings.loader import _deep_merge, load_settings, parse_rate
from bridge.settings.schema import (
    AdminSettings,
    AvatarSettings,
    ComponentSettings,
    JWTLoginSettings,
    LifecycleSettings,
    LimitsSettings,
    LoginSettings,
    MetricsSettings,
    OIDCProviderSettings,
    SentifydSettings,
    ServerSettings,
    SessionCheckSettings,
    SessionSettings,
    Settings,
    SiteCookieSettings,
    StoreSettings,
)
from bridge.settings.values import (
    LOOPBACK_HOSTS,
    REDIS_SCHEMES,
    AccessRules,
    LocalPath,
    Origin,
    RateLimit,
    RedisAddress,
    StoreURL,
    local_path_or,
    parse_url,
)

__all__ = [
    "LOOPBACK_HOSTS",
    "REDIS_SCHEMES",
    "AccessRules",
    "AdminSettings",
    "AvatarSettings",
    "ComponentSettings",
    "JWTLoginSettings",
    "LifecycleSettings",
    "LimitsSettings",
    "LocalPath",
    "LoginSettings",
    "MetricsSettings",
    "OIDCProviderSettings",
    "Origin",
    "RateLimit",
    "RedisAddress",
    "SentifydSettings",
    "ServerSettings",
    "SessionCheckSettings",
    "SessionSettings",
    "Settings",
    "SiteCookieSettings",
    "StoreSettings",
    "StoreURL",
    "_deep_merge",
    "load_settings",
    "local_path_or",
    "parse_rate",
    "parse_url",
]
