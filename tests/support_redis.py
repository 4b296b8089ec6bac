"""The Redis setups under their old name, for ``bench/topologies.py`` (outside tests/), which puts
tests/ on ``sys.path`` and imports them from here; the tests themselves use ``support.redis``.
Remove once bench/topologies.py imports ``support.redis``."""

from support.redis import ClusterSetup, RedisServer, SentinelSetup

__all__ = ["ClusterSetup", "RedisServer", "SentinelSetup"]
