"""The coarse device label a session keeps for "my devices", from the browser's user agent."""

from __future__ import annotations

import pytest

from bridge.sessions.devices import MAX_LABEL, device_label


@pytest.mark.parametrize(
    ("agent", "label"),
    [
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like "
            "Gecko) Chrome/126.0.0.0 Safari/537.36",
            "Chrome on macOS",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
            "like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
            "Safari on iPhone",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "Firefox on Windows",
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0.0.0 Mobile Safari/537.36",
            "Chrome on Android",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0",
            "Edge on Windows",
        ),
        ("curl/8.5.0", "curl on an unknown system"),
    ],
)
def test_label_names_browser_and_system(agent: str, label: str) -> None:
    assert device_label(agent) == label


@pytest.mark.parametrize("agent", [None, "", "python-httpx/0.27.0", "\x00\x01"])
def test_nothing_recognisable_is_an_unknown_device(agent: str | None) -> None:
    assert device_label(agent) == "Unknown device"


def test_label_is_short_and_one_plain_line_whatever_the_agent() -> None:
    agent = "Mozilla/5.0 (X11; Linux x86_64) " + "A" * 100_000 + "\n\r\t Firefox/1.0"
    label = device_label(agent)
    assert len(label) <= MAX_LABEL and label.isprintable()
