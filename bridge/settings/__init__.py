"""Typed settings: one TOML file plus environment variables, validated once at start-up.

The bottom layer: these modules import only :mod:`bridge.errors` and :mod:`bridge.secret`.
``values`` holds the value types that parse themselves, ``schema`` the sections as frozen
msgspec Structs, ``loader`` the sources and their order. Secrets only ever come from the
environment and are held as :class:`bridge.secret.Secret`. The front door, re-exported here,
is :func:`load_settings` and the :class:`Settings` it returns; the rest is imported from its
module.
"""

from bridge.settings.loader import load_settings
from bridge.settings.schema import Settings

__all__ = ["Settings", "load_settings"]
