"""Load the settings: the TOML file, then the environment, then the secrets, validated once.

The order is decided here, once: a TOML file (``path`` or ``BRIDGE_CONFIG``) and a test's
``overrides``; then the environment's ``BRIDGE_STORE_URL``, ``SENTIFYD_BACKEND`` and
``AVATAR_ID``; then ``msgspec.convert`` into :class:`Settings`; then the secrets, which only
ever come from the environment (a variable, or the file ``<VARIABLE>_FILE`` names). Every
failure is one ``ConfigError("dotted.name: ...")``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

import msgspec
import msgspec.inspect as mi
from msgspec.structs import replace

from bridge.errors import ConfigError
from bridge.secret import Secret
from bridge.settings.schema import AuthJSCookie, OperatorToken, Settings, SiteCookie
from bridge.settings.values import require

MIN_SECRET_KEY_LENGTH = 32
# A TOML table as read, before it is checked: any keys, any values.
Table = dict[str, Any]
# The environment's overrides of TOML settings (the first avatar's id is one too).
_FROM_ENV = {"BRIDGE_STORE_URL": ("store", "url"), "SENTIFYD_BACKEND": ("sentifyd", "backend")}


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
    data: Table = {}
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    data, names = _shaped(_deep_merge(data, overrides or {}), env)
    try:
        settings = msgspec.convert(data, Settings, strict=True, dec_hook=_parse)
    except msgspec.ValidationError as exc:
        raise ConfigError(_dotted(str(exc), names, data)) from None
    return _with_secrets(settings, env, names, source=str(path or ""))


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> Table:
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


def _shaped(data: Table, env: Mapping[str, str]) -> tuple[Table, list[str]]:
    """Apply the environment's overrides, fill what the file leaves to the cookie's format and
    name the OIDC providers; return the data and the providers' TOML names."""
    for variable, (section, key) in _FROM_ENV.items():
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
    login = data.get("login")
    if not isinstance(login, Mapping):
        return data, []
    login = dict(login)
    cookie = login.get("cookie")
    if isinstance(cookie, Mapping):
        cookie = login["cookie"] = {"format": "flask", **cookie}
        kind = _COOKIES.get(cookie["format"]) if isinstance(cookie["format"], str) else None
        server = data.get("server")
        url = str(server.get("public_url", "")) if isinstance(server, Mapping) else ""
        https = url.lower().startswith("https://")
        if kind is not None and issubclass(kind, AuthJSCookie) and https and "name" not in cookie:
            name = next(f.default for f in msgspec.structs.fields(kind) if f.name == "name")
            cookie["name"] = f"__Secure-{name}"  # what both libraries call it over https
    names: list[str] = []
    if "oidc" in login:
        login["oidc"], names = _providers(login["oidc"])
    return {**data, "login": login}, names


_COOKIES: dict[str, type[SiteCookie]] = {
    str(kind.__struct_config__.tag): kind for kind in get_args(SiteCookie)
}


def _providers(raw: Any) -> tuple[list[Table], list[str]]:
    """``[login.oidc]`` is one provider ("default"); ``[login.oidc.<name>]`` tables are many.
    Return them and the TOML name of each, which its errors use."""
    table = isinstance(raw, Mapping) and raw
    require(table, "login.oidc: must be a table ([login.oidc] or [login.oidc.<name>])")
    if not all(isinstance(table, Mapping) for table in raw.values()):
        return [dict(raw)], ["login.oidc"]
    providers = []
    for name, table in raw.items():
        ok = re.fullmatch(r"[\w-]+", name)
        require(ok, f"login.oidc.{name}: letters, digits, '_' and '-' only")
        providers.append({**table, "env:name": name})
    return providers, [f"login.oidc.{name}" for name in raw]


_PATH = re.compile(r"(?P<message>.*) - at `\$(?P<path>[^`]*)`", re.S)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_KINDS = {
    "int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
    "array": "a list", "object": "a table", "null": "unset",
}  # fmt: skip
_RULES = {  # msgspec's words, ours; {why} is the field's Meta description
    r"Expected `[a-z]+` >= (\S+)": "must be at least {0}",
    r"Expected `[a-z]+` > (\S+)": "must be greater than {0}",
    r"Expected `[a-z]+` <= (\S+)": "at most {0}",
    r"Expected `[a-z]+` of length >= 1": "not set{why}",
    r"Expected `str` matching regex .*": "{bare}",
    r"Object missing required field `(.+)`": "{0}: not set{why}",
    r"Invalid (?:enum )?value (.+)": "{0} is not allowed (one of {choices})",
    r"Expected `([^`]+)`, got `[^`]+`": "must be {kinds}",
}


def _dotted(error: str, names: list[str], data: Table) -> str:
    """Turn msgspec's "Expected `int`, got `str` - at `$.a.b`" into "a.b: must be an integer"."""
    match = _PATH.fullmatch(error)
    message, raw = (match["message"], match["path"]) if match else (error, "")
    unknown = re.fullmatch(r"Object contains unknown field `(.+)`", message)
    for pattern, text in _RULES.items():
        if rule := re.fullmatch(pattern, message):
            first = rule[1] if rule.groups() else ""
            kinds = (_KINDS.get(kind.strip(), kind.strip()) for kind in first.split("|"))
            why = _schema_at(f"{raw}.{first}" if "required" in pattern else raw, data).description
            message = text.format(
                *rule.groups(),
                kinds=" or ".join(kinds),
                choices=", ".join(_schema_at(raw, data).choices),
                why=f" ({why})" if why else "",
                bare=why or message,
            )
    # An OIDC provider by its TOML name: login.oidc[1] is login.oidc.<name>.
    path = re.sub(r"^login\.oidc\[(\d+)\]", lambda m: names[int(m[1])], raw.lstrip("."))
    if unknown:
        kind = _schema_at(raw, data).kinds.get(unknown[1])
        if kind is not None:  # a setting of another kind (another cookie format)
            return f"{path}.{unknown[1]}: not a setting of {kind}"
        return f"{path or 'config'}.{unknown[1]}: unknown setting"
    if not path:
        return message  # a rule across sections names its settings itself
    if re.match(r"[A-Za-z0-9_-]+(\[\d+\])?[.:]", message):
        return f"{path}.{message}"  # a section's rule names its field
    return f"{path}: {message}"


@dataclass
class _Said:
    """What the schema says of one setting, for its error's words."""

    description: str | None = None
    choices: tuple[str, ...] = ()
    kinds: dict[str, str] = field(default_factory=dict)  # a tagged union's settings: their kind


def _schema_at(path: str, data: Any) -> _Said:
    """What the schema says of the setting at ``path`` (``.a.b[0]``) in ``data``: look through
    ``Annotated`` and unions (a tagged one by the tag in ``data``) step by step."""
    info: Any = mi.type_info(Settings)
    steps = iter(_STEP.findall(path))
    while True:
        said = _Said()
        while isinstance(info, mi.Metadata | mi.UnionType):
            if isinstance(info, mi.Metadata):
                said.description = (info.extra_json_schema or {}).get(
                    "description", said.description
                )
                info = info.type
                continue
            kinds: list[Any] = [t for t in info.types if not isinstance(t, mi.NoneType)]
            if not all(isinstance(t, mi.StructType) for t in kinds) or len(kinds) == 1:
                info = kinds[0]
                continue
            said.choices = tuple(sorted(str(t.tag) for t in kinds))
            tag = data.get(kinds[0].tag_field) if isinstance(data, Mapping) else None
            said.kinds = {f.encode_name: f"{t.tag_field} {tag!r}" for t in kinds for f in t.fields}
            info = next((t for t in kinds if t.tag == tag), None)
        if isinstance(info, mi.LiteralType):
            said.choices = tuple(str(v) for v in info.values)
        name, index = next(steps, ("", ""))
        if name:
            info = next(
                (f.type for f in getattr(info, "fields", ()) if f.encode_name == name), None
            )
            data = data.get(name) if isinstance(data, Mapping) else None
        elif index:
            info = getattr(info, "item_type", None)
            data = data[int(index)] if isinstance(data, list) and int(index) < len(data) else None
        if info is None or not (name or index):
            return said


def _with_secrets(
    settings: Settings, env: Mapping[str, str], names: list[str], *, source: str
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
    providers = []
    for index, p in enumerate(login.oidc):
        what = f"the OIDC client secret, {names[index]}.client_secret_env"
        providers.append(replace(p, client_secret=_secret(env, p.client_secret_env, what)))
    return replace(
        settings,
        avatars=avatars,
        login=replace(login, oidc=tuple(providers)),
        secret_keys=secret_keys,
        admin_tokens=_admin_tokens(env),
        metrics_token=_operator_token(env, "BRIDGE_METRICS_TOKEN"),
        source=source,
    )


def _secret(env: Mapping[str, str], variable: str, what: str) -> Secret:
    value = _secret_value(env, variable)
    require(value, f"{variable}: not set ({what})")
    return Secret(value)


def _secrets(env: Mapping[str, str], variable: str, what: str) -> tuple[Secret, ...]:
    """A comma-separated list of keys, the newest first (the others still verify)."""
    raw = _secret_value(env, variable)
    keys = tuple(Secret(part.strip()) for part in raw.split(",") if part.strip())
    require(keys, f"{variable}: not set ({what})")
    return keys


def _secret_value(env: Mapping[str, str], variable: str) -> str:
    """``variable``'s value, or the content of the file ``<variable>_FILE`` names (a mounted
    secret, which a reload reads again: a key rotated there needs no restart)."""
    if env.get(variable) or not env.get(f"{variable}_FILE"):
        return env.get(variable, "")
    return _read(f"{variable}_FILE", env[f"{variable}_FILE"]).strip()


def _read(variable: str, path: str) -> str:
    """The text of the file ``variable`` names (never quoted in the error)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{variable}: cannot read {path}") from exc


def _operator_token(env: Mapping[str, str], name: str) -> Secret | None:
    raw = env.get(name, "")
    return _checked_token(raw, name) if raw else None


def _checked_token(raw: str, name: str) -> Secret:
    if len(raw) < MIN_SECRET_KEY_LENGTH or raw != raw.strip():
        raise ConfigError(
            f"{name}: must be at least {MIN_SECRET_KEY_LENGTH} characters, without spaces"
            " around it (e.g. `openssl rand -base64 32`)"
        )
    return Secret(raw)


_OPERATOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
TOKENS_FORMAT = "name:token pairs, comma-separated (e.g. alice:<token>,bob:<token>)"


def _admin_tokens(env: Mapping[str, str]) -> tuple[OperatorToken, ...]:
    """The named admin tokens, as digests: ``BRIDGE_ADMIN_TOKEN`` (named "admin"), the
    ``BRIDGE_ADMIN_TOKENS`` pairs and the ``BRIDGE_ADMIN_TOKENS_FILE`` lines, together.

    No message here quotes a token: an error names the variable, the operator or the line.
    """
    tokens: list[tuple[str, OperatorToken]] = []
    single = _operator_token(env, "BRIDGE_ADMIN_TOKEN")
    if single is not None:
        tokens.append(("BRIDGE_ADMIN_TOKEN", OperatorToken.of("admin", single)))
    for index, entry in enumerate(env.get("BRIDGE_ADMIN_TOKENS", "").split(",")):
        if not entry.strip():
            continue
        name, colon, raw = entry.strip().partition(":")
        where = f"BRIDGE_ADMIN_TOKENS (entry {index + 1})"
        ok = colon and raw and _OPERATOR_NAME.fullmatch(name)
        require(ok, f"{where}: must be {TOKENS_FORMAT}")
        tokens.append((where, OperatorToken.of(name, _checked_token(raw, where))))
    path = env.get("BRIDGE_ADMIN_TOKENS_FILE", "")
    # ``name sha256-hex`` per line; ``#`` comments and blank lines are skipped.
    lines = _read("BRIDGE_ADMIN_TOKENS_FILE", path).splitlines() if path else []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        where = f"BRIDGE_ADMIN_TOKENS_FILE ({path}, line {number})"
        name, digest = (*text.split(None, 1), "")[:2]
        digest = digest.strip().lower()
        ok = _OPERATOR_NAME.fullmatch(name) and _DIGEST.fullmatch(digest)
        require(
            ok,
            f"{where}: must be `name sha256-hex-of-token`"
            ' (e.g. from `printf %s "$TOKEN" | sha256sum`)',
        )
        tokens.append((where, OperatorToken(name, digest)))
    names: set[str] = set()
    digests: set[str] = set()
    for where, token in tokens:
        require(token.name not in names, f"{where}: the operator {token.name!r} is named twice")
        require(token.digest not in digests, f"{where}: the same token is given twice")
        names.add(token.name)
        digests.add(token.digest)
    return tuple(token for _, token in tokens)
