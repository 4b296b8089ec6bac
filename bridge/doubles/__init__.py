"""Stand-ins for what the bridge talks to, for the demo, the tests and the benchmark: never
part of a production request's path (the CLI's ``demo`` and ``fake-sentifyd`` commands)."""
