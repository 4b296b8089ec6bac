"""What the tests share that is not a fixture (the fixtures and hooks stay in ``conftest.py``).

- ``config``: the test secrets, ``make_settings``, ``serve_config`` and ``write_bridge_toml``,
  the one writer of the bridge's TOML file for tests;
- ``app``: a clock moved by hand, a recording transport, the site's login cookie;
- ``live``: free ports and ASGI apps served in a thread (``LiveServer``);
- ``leaks``: the leak guard every test runs in;
- ``redis``: Redis, Sentinel and Cluster processes, ``BridgeProcess`` (``sentifyd-bridge
  serve`` as the tests start it) and its visitors;
- ``serve``: a bare serve process, for the tests of the server itself;
- ``oidc``, ``browser``, ``cookie_formats``, ``deploy``, ``ops``, ``peers``, ``traffic``: the
  OpenID providers, Chromium, other sites' cookies, nginx, operator helpers, hostile peers and
  the multi-instance stacks.

``pyproject.toml`` puts ``tests/`` on ``sys.path`` (pytest's ``pythonpath``), so ``import
support.x`` works in every pytest import mode, and in a subprocess given ``PYTHONPATH=tests``.
"""
