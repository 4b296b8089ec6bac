"""sentifyd-bridge: a session-bound Sentifyd token endpoint for a site's logged-in users."""

from bridge.app import create_app
from bridge.settings.loader import load_settings
from bridge.settings.schema import Settings

__all__ = ["Settings", "create_app", "load_settings"]
__version__ = "0.1.0"
