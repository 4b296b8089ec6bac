"""Load the settings: the TOML file, then the environment, then the secrets, validated once.

The order is decided here, once: a TOML file (``path`` or ``BRIDGE_CONFIG``) and a test's
``overrides``; then the environment's ``BRIDGE_STORE_URL``, ``SENTIFYD_BACKEND`` and
``AVATAR_ID``; then ``msgspec.convert`` into :class:`Settings`; then the secrets, which only
ever come from the environment. Every failure is one ``ConfigError("dotted.name: ...")``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any

import msgspec
import msgspec.inspect
from msgspec.structs import replace

from bridge.errors import ConfigError
from bridge.secret import Secret
from bridge.settings.schema import COOKIE_FORMAT_ONLY, COOKIE_FORMATS, Settings
from bridge.settings.values import require

MIN_SECRET_KEY_LENGTH = 32


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
    data, where = _from_environment(_shaped(data), env)
    try:
        settings = msgspec.convert(data, Settings, strict=True, dec_hook=_parse)
    except msgspec.ValidationError as exc:
        raise ConfigError(_dotted(str(exc), where)) from None
    return _with_secrets(settings, env, where, source=str(path or ""))


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse(kind: type, raw: Any) -> Any:
    """msgspec's hook for the value types: each parses and checks itself."""
    if kind is Secret:
        raise ConfigError("secrets come from the environment only")
    parse = getattr(kind, "parse", None)
    if parse is None:
        raise NotImplementedError(kind)
    return parse(raw)


def _shaped(data: dict[str, Any]) -> dict[str, Any]:
    """Fill what the file leaves to the format (cookie defaults) and name the OIDC providers."""
    login = data.get("login")
    if not isinstance(login, Mapping):
        return data
    login = dict(login)
    cookie = login.get("cookie")
    if isinstance(cookie, Mapping) and isinstance(cookie.get("format", "flask"), str):
        login["cookie"] = _cookie_defaults(dict(cookie), data)
    if "oidc" in login:
        login["oidc"] = _providers(login["oidc"])
    return {**data, "login": login}


def _cookie_defaults(cookie: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    fmt = cookie.get("format", "flask")
    if fmt not in COOKIE_FORMATS:
        return cookie  # the schema names the formats
    name, user_field, extra = COOKIE_FORMATS[fmt]
    misplaced = sorted(set(cookie) & COOKIE_FORMAT_ONLY - set(extra))
    if misplaced:
        raise ConfigError(f"login.cookie.{misplaced[0]}: not a setting of format {fmt!r}")
    # With the library's default salt, any other token the site signs with this key (an
    # e-mail confirmation carrying user_id) would pass as a login.
    salted = fmt != "itsdangerous" or cookie.get("salt")
    require(
        salted,
        "login.cookie.salt: required for format 'itsdangerous' (the salt the site's "
        "login cookie, and nothing else it signs, uses)",
    )
    server = data.get("server")
    public_url = server.get("public_url", "") if isinstance(server, Mapping) else ""
    if fmt in ("authjs", "next-auth-v4") and str(public_url).lower().startswith("https://"):
        name = "__Secure-" + name  # what both libraries call it over https
    return {"name": name, "user_field": user_field, **cookie}


def _providers(raw: Any) -> Any:
    """``[login.oidc]`` is one provider ("default"); ``[login.oidc.<name>]`` tables are many."""
    table = isinstance(raw, Mapping) and raw
    require(table, "login.oidc: must be a table ([login.oidc] or [login.oidc.<name>])")
    if not all(isinstance(table, Mapping) for table in raw.values()):
        return [dict(raw)]
    providers = []
    for name, table in raw.items():
        ok = re.fullmatch(r"[\w-]+", name)
        require(ok, f"login.oidc.{name}: letters, digits, '_' and '-' only")
        providers.append({**table, "env:name": name})
    return providers


def _from_environment(
    data: dict[str, Any], env: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Apply the environment's overrides; return the data and the OIDC providers' TOML names."""
    for variable, section, key in (
        ("BRIDGE_STORE_URL", "store", "url"),
        ("SENTIFYD_BACKEND", "sentifyd", "backend"),
    ):
        if env.get(variable):
            data = _deep_merge(data, {section: {key: env[variable]}})
    avatars = data.get("avatars", [])
    if isinstance(avatars, list):
        avatars = [dict(a) if isinstance(a, Mapping) else a for a in avatars] or [{}]
        if env.get("AVATAR_ID") and isinstance(avatars[0], dict):
            avatars[0]["avatar_id"] = env["AVATAR_ID"]
        data = {**data, "avatars": avatars}
    if isinstance(data.get("logging"), Mapping) and isinstance(data["logging"].get("level"), str):
        data = _deep_merge(data, {"logging": {"level": data["logging"]["level"].upper()}})
    where: dict[str, str] = {}
    login = data.get("login")
    providers = login.get("oidc") if isinstance(login, Mapping) else None
    for index, provider in enumerate(providers if isinstance(providers, list) else []):
        name = provider.get("env:name")
        where[f"login.oidc[{index}]"] = f"login.oidc.{name}" if name else "login.oidc"
    return data, where


_PATH = re.compile(r"(?P<message>.*) - at `\$(?P<path>[^`]*)`", re.S)
_KINDS = {
    "int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
    "array": "a list", "object": "a table", "null": "unset",
}  # fmt: skip
_RULES = {  # msgspec's words, ours
    r"Expected `[a-z]+` >= (\S+)": "must be at least {0}",
    r"Expected `[a-z]+` > (\S+)": "must be greater than {0}",
    r"Expected `[a-z]+` <= (\S+)": "at most {0}",
    r"Object missing required field `(.+)`": "{0}: not set",
    r"Invalid enum value (.+)": "{0} is not allowed (one of {choices})",
    r"Expected `([^`]+)`, got `[^`]+`": "must be {kinds}",
}


def _dotted(error: str, where: Mapping[str, str]) -> str:
    """Turn msgspec's "Expected `int`, got `str` - at `$.a.b`" into "a.b: must be an integer"."""
    match = _PATH.fullmatch(error)
    message, path = (match["message"], match["path"]) if match else (error, "")
    unknown = re.fullmatch(r"Object contains unknown field `(.+)`", message)
    for pattern, text in _RULES.items():
        if rule := re.fullmatch(pattern, message):
            kinds = (_KINDS.get(kind.strip(), kind.strip()) for kind in rule[1].split("|"))
            choices = _choices(path) if "{choices}" in text else ()
            message = text.format(
                *rule.groups(), kinds=" or ".join(kinds), choices=", ".join(choices)
            )
    path = path.lstrip(".")
    for index_path, name in where.items():
        if path == index_path or path.startswith(index_path + "."):
            path = name + path[len(index_path) :]
    if unknown:
        return f"{path or 'config'}.{unknown[1]}: unknown setting"
    if not path:
        return message  # a rule across sections names its settings itself
    if re.match(r"[A-Za-z0-9_-]+(\[\d+\])?[.:]", message):
        return f"{path}.{message}"  # a section's rule names its field
    return f"{path}: {message}"


def _choices(path: str) -> list[str]:
    """The values a ``Literal`` setting takes, found by walking the schema along ``path``."""
    info: Any = msgspec.inspect.type_info(Settings)
    for step in re.findall(r"\.([^.\[]+)|\[\d+\]", path):
        while isinstance(info, msgspec.inspect.UnionType):
            info = next(t for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
        if step:
            info = next(f.type for f in info.fields if f.encode_name == step)
        else:
            info = info.item_type
    return [str(value) for value in getattr(info, "values", ())]


def _with_secrets(
    settings: Settings, env: Mapping[str, str], where: Mapping[str, str], *, source: str
) -> Settings:
    """Fill each secret from the environment variable its setting names."""
    secret_keys = _secrets(env, "BRIDGE_SECRET_KEY", "the bridge's own signing key, 32+ characters")
    short = any(len(secret) < MIN_SECRET_KEY_LENGTH for secret in secret_keys)
    require(
        not short,
        f"BRIDGE_SECRET_KEY: each key must be at least {MIN_SECRET_KEY_LENGTH} characters",
    )
    avatars = tuple(
        replace(a, api_key=_secret(env, a.api_key_env, f"the API key of avatar {a.name!r}"))
        for a in settings.avatars
    )
    login = settings.login
    if login.cookie is not None:
        what = "the site's cookie signing key, login.cookie.secret_key_env"
        keys = _secrets(env, login.cookie.secret_key_env, what)
        login = replace(login, cookie=replace(login.cookie, secret_keys=keys))
    providers = tuple(
        replace(
            p,
            client_secret=_secret(
                env,
                p.client_secret_env,
                f"the OIDC client secret, {where[f'login.oidc[{index}]']}.client_secret_env",
            ),
        )
        for index, p in enumerate(login.oidc)
    )
    return replace(
        settings,
        avatars=avatars,
        login=replace(login, oidc=providers),
        secret_keys=secret_keys,
        admin_token=_operator_token(env, "BRIDGE_ADMIN_TOKEN"),
        metrics_token=_operator_token(env, "BRIDGE_METRICS_TOKEN"),
        source=source,
    )


def _secret(env: Mapping[str, str], variable: str, what: str) -> Secret:
    require(env.get(variable), f"{variable}: not set ({what})")
    return Secret(env[variable])


def _secrets(env: Mapping[str, str], variable: str, what: str) -> tuple[Secret, ...]:
    """A comma-separated list of keys, the newest first (the others still verify)."""
    keys = tuple(Secret(part.strip()) for part in env.get(variable, "").split(",") if part.strip())
    require(keys, f"{variable}: not set ({what})")
    return keys


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
