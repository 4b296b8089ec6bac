"""A session's coarse device label ("Chrome on macOS"), for the visitor's "my devices" page.

The label is made once, when a session starts, from the request's ``User-Agent`` by a kept
parser (ua-parser, with its Rust matcher), and stored as that label only: never the raw user
agent, which can fingerprint a browser and is not needed to tell "my phone" from "my laptop".
"""

from __future__ import annotations

from ua_parser import parse

MAX_USER_AGENT = 1024  # the parser's cost grows with the text; real ones are a few hundred
MAX_LABEL = 60
UNKNOWN = "Unknown device"

# The parser's family names, where a customer knows another one.
_BROWSERS = {
    "Mobile Safari": "Safari",
    "Mobile Safari UI/WKWebView": "Safari",
    "Chrome Mobile": "Chrome",
    "Chrome Mobile iOS": "Chrome",
    "Chrome Mobile WebView": "Chrome",
    "HeadlessChrome": "Headless Chrome",
    "Firefox Mobile": "Firefox",
    "Firefox iOS": "Firefox",
    "Edge Mobile": "Edge",
    "Samsung Internet": "Samsung Internet",
}
_SYSTEMS = {"Mac OS X": "macOS", "Windows": "Windows", "Chrome OS": "ChromeOS"}
# On iOS the device says more than the system: "Safari on iPhone", "Safari on iPad".
_APPLE_DEVICES = ("iPhone", "iPad")


def device_label(user_agent: str | None) -> str:
    """Return "<browser> on <system>" for ``user_agent``, or "Unknown device"."""
    if not user_agent:
        return UNKNOWN
    result = parse(user_agent[:MAX_USER_AGENT])
    browser = result.user_agent.family if result.user_agent else "Other"
    system = result.os.family if result.os else "Other"
    device = result.device.family if result.device else "Other"
    if browser == "Other" and system == "Other":
        return UNKNOWN
    browser = _BROWSERS.get(browser, browser) if browser != "Other" else "Unknown browser"
    if device in _APPLE_DEVICES:
        system = device
    elif system == "Other":
        system = "an unknown system"
    else:
        system = _SYSTEMS.get(system, system)
    return _printable(f"{browser} on {system}")[:MAX_LABEL]


def _printable(text: str) -> str:
    # Families come from the user agent's own text: keep a label one plain line.
    return "".join(ch if ch.isprintable() else " " for ch in text).strip() or UNKNOWN
