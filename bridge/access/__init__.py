"""May they, and how much: the per-avatar rules over an identity's claims (``rules``) and the
limits that guard what costs (``limits``)."""
