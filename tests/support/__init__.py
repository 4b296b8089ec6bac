"""What the tests share that is not a fixture: the test settings and secrets (``config``), an
app's helpers (``app``), live servers (``live``), the leak guard (``leaks``) and the stand-ins
the live tests start (``redis``, ``oidc``, ``peers``, ``traffic``, ...).

``pyproject.toml`` puts ``tests/`` on ``sys.path`` (``pythonpath``), so ``import support.x``
works in every pytest import mode, and in a subprocess given ``PYTHONPATH=tests``."""
