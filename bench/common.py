"""What the benchmark and the soak share: ports, child processes, the bridge's config, site
cookies, the load generator and RSS readings. Everything listens on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Self

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
RESULTS = BENCH / "results"
AVATAR_ID = "avtr_bench"
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)  # polling a real external process, bounded by the deadline
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


class Proc:
    """A child process on a port, stopped with SIGTERM (then SIGKILL) on exit."""

    def __init__(
        self,
        name: str,
        args: list[str],
        port: int,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.name, self.args, self.port = name, args, port
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=self.cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_port(self.port, self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # The whole group: gunicorn's workers too.
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])


def rss_kb(pid: int) -> int:
    """Resident set size of one process, from /proc (kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every process in a process group (a server and its workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[2]) == pgid:  # fields after "pid (comm)": state ppid pgrp ...
            total += int(fields[11]) + int(fields[12])
    return total / tick


class RedisServer(Proc):
    """A redis-server of the run's own on 127.0.0.1, no persistence."""

    def __init__(self, workdir: Path) -> None:
        port = free_port()
        super().__init__(
            "redis",
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            port,
            cwd=workdir,
        )
        self.url = f"redis://127.0.0.1:{port}/0"

    def commands(self) -> int:
        """Commands Redis ran since the last reset (those scripts run included)."""
        import redis

        with redis.Redis(host="127.0.0.1", port=self.port) as client:
            stats = client.info("commandstats")
        own = (
            "cmdstat_info",
            "cmdstat_config|resetstat",
            "cmdstat_hello",
            "cmdstat_client|setinfo",
        )
        return sum(int(v["calls"]) for k, v in stats.items() if k not in own)

    def reset(self) -> None:
        import redis

        with redis.Redis(host="127.0.0.1", port=self.port) as client:
            client.config_resetstat()


def code_commit() -> str:
    """The commit the benchmark's code is at (``-dirty`` if tracked files differ from it; the
    reports under ``bench/results/``, which a run before this one may have just written, do not
    count)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=BENCH, check=False
        )
        return done.stdout.strip()

    dirty = git(
        "status", "--porcelain", "--untracked-files=no", "--", ":/", ":(exclude,top)bench/results"
    )
    return git("rev-parse", "--short=12", "HEAD") + ("-dirty" if dirty else "")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def post_json(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


class Secrets:
    """Throw-away secrets for one run (never printed)."""

    def __init__(self) -> None:
        self.api_key = "sk-bench-" + secrets.token_urlsafe(24)
        self.bridge_key = secrets.token_urlsafe(48)
        self.site_key = secrets.token_urlsafe(32)

    def env(self) -> dict[str, str]:
        return {
            "BRIDGE_SECRET_KEY": self.bridge_key,
            "AVATAR_API_KEY": self.api_key,
            "SITE_SECRET_KEY": self.site_key,
        }


def fake_sentifyd(port: int, keys: Secrets, *, latency: float, token_ttl: int) -> Proc:
    return Proc(
        "fake-sentifyd",
        [
            str(BIN / "sentifyd-bridge"),
            "fake-sentifyd",
            "--port",
            str(port),
            "--token-ttl",
            str(token_ttl),
            "--latency",
            str(latency),
        ],
        port,
        env={"AVATAR_API_KEY": keys.api_key},
    )


# The documented Flask snippet's server: gunicorn's documented starting point, (2 x cores) + 1
# sync workers on this 2-core machine.
GUNICORN_WORKERS = 5


def snippet_process(name: str, port: int, sentifyd_url: str, api_key: str) -> Proc:
    """The documented Flask snippet (``bench/flask_snippet.py``) under gunicorn on ``port``."""
    command = [
        str(BIN / "gunicorn"),
        "--workers",
        str(GUNICORN_WORKERS),
        "--worker-class",
        "sync",
        "--bind",
        f"127.0.0.1:{port}",
        "--chdir",
        str(BENCH),
        "--log-level",
        "warning",
        "flask_snippet:app",
    ]
    env = {"SENTIFYD_BACKEND": sentifyd_url, "AVATAR_API_KEY": api_key}
    return Proc(name, command, port, env=env)


def ceiling_process(name: str, server: str, port: int) -> Proc:
    """The bare Quart JSON endpoint (``bench/apps.py ceiling``) under ``server`` on ``port``."""
    command = [PYTHON, str(BENCH / "apps.py"), "ceiling", "--server", server, "--port", str(port)]
    return Proc(name, command, port)


def bridge_process(
    name: str, server: str, port: int, config: Path, keys: Secrets, *extra: str
) -> Proc:
    """The bridge as ``bench/apps.py bridge`` runs it: under ``server``, on ``port``, with
    ``config`` and the keys' secrets in its environment (``extra``: more of apps.py's options)."""
    command = [PYTHON, str(BENCH / "apps.py"), "bridge", "--server", server, "--port", str(port)]
    return Proc(name, [*command, "--config", str(config), *extra], port, env=keys.env())


# The limits every bridge in bench/ runs with, stated in each report. The load generator drives
# each session far faster than a component does (tens of requests a second instead of one per
# token lifetime), so the per-session backstop is off; every other limit is at its default
# (new chains and new sessions per session and user, sessions per user, anonymous work per
# address, which no benchmark request is). A run with any answer but 200 is not reported.
LIMITS = {"per_session": "off"}
LIMITS_TOML = "".join(f'{key} = "{value}"\n' for key, value in LIMITS.items())
LIMITS_NOTE = (
    'limits at their defaults except per_session = "off" (each session is driven '
    "far faster than a component drives it)"
)


def write_bridge_config(
    directory: Path,
    port: int,
    fake_port: int,
    server: str,
    store_url: str = "memory://",
    extra: str = "",
) -> Path:
    """The bridge's config for a loopback run: memory store (or ``store_url``), the stand-in
    Sentifyd, the site's Flask cookie as the way in, plain http on 127.0.0.1 (so
    cookie_secure = false)."""
    path = directory / f"bridge-{server}-{port}.toml"
    path.write_text(f"""
[server]
host = "127.0.0.1"
port = {port}
public_url = "http://127.0.0.1:{port}"
asgi_server = "{server.split("-")[0]}"

[session]
cookie_secure = false

[store]
url = "{store_url}"

[sentifyd]
backend = "http://127.0.0.1:{fake_port}"

[[avatars]]
name = "default"
avatar_id = "{AVATAR_ID}"
api_key_env = "AVATAR_API_KEY"

[login.cookie]
name = "session"
format = "flask"
secret_key_env = "SITE_SECRET_KEY"
max_age = 86400
user_field = "user_id"
login_url = "http://127.0.0.1:{port}/login?next={{next}}"

[limits]
{LIMITS_TOML}
[logging]
level = "INFO"
{extra}""")
    return path


class NotAllOK(RuntimeError):
    """A run had an answer other than 200: its numbers would not measure the bridge's work."""


def require_all_200(name: str, result: dict[str, Any]) -> dict[str, Any]:
    """Return ``result`` if every answer (warm-up included) was a 200; raise NotAllOK if not."""
    if result.get("error"):
        raise NotAllOK(f"{name}: {result['error']}")
    statuses = result.get("statuses", {})
    if result.get("errors") or set(statuses) - {"200"}:
        raise NotAllOK(
            f"{name}: answers {statuses}, errors {result.get('errors')}, first: "
            f"{result.get('first_error', '')!r}"
        )
    return result


def site_cookies(config: Path, keys: Secrets, count: int, prefix: str = "user") -> list[str]:
    """Sign ``count`` site login cookies the way the site's own Flask login would."""
    from bridge.identity.site_cookie import SiteCookieSource
    from bridge.settings import load_settings

    settings = load_settings(config, keys.env())
    assert settings.site_cookie is not None
    source = SiteCookieSource(settings.site_cookie)
    return [str(source.serializer.dumps({"user_id": f"{prefix}-{i}"})) for i in range(count)]


async def first_token_requests(
    port: int, site: list[str], connections: int = 50
) -> list[tuple[str, str | None]]:
    """One token request per site cookie (``session=<cookie>``, the bench's site login) over
    ``connections`` keep-alive connections: each answer's status and the cookie it set
    (``name=value``, or None), in the order of ``site``."""
    answers: list[tuple[str, str | None]] = [("", None)] * len(site)
    queue = iter(enumerate(site))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for at, cookie in queue:
                writer.write(
                    (
                        f"GET /request_tokens HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                        "Accept: application/json\r\nSec-Fetch-Site: same-origin\r\n"
                        f"Cookie: session={cookie}\r\n\r\n"
                    ).encode("latin-1")
                )
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                length, set_cookie = 0, None
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    elif name.lower() == "set-cookie":
                        set_cookie = value.strip().split(";", 1)[0]
                await reader.readexactly(length)
                answers[at] = (head.split(" ", 2)[1], set_cookie)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return answers


def load(
    url: str,
    *,
    mode: str = "plain",
    concurrency: int = 50,
    duration: float = 10.0,
    requests: int = 0,
    rate: float = 0.0,
    cookies: list[str] | None = None,
) -> dict[str, Any]:
    """Run the load generator in its own process and return its JSON result."""
    args = [
        PYTHON,
        str(BENCH / "loadgen.py"),
        url,
        "--mode",
        mode,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
    ]
    if requests:
        args += ["--requests", str(requests)]
    if rate:
        args += ["--rate", str(rate)]
    with tempfile.NamedTemporaryFile("w", suffix=".json") as fh:
        if cookies is not None:
            json.dump(cookies, fh)
            fh.flush()
            args += ["--cookies", fh.name]
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=duration + 120, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    if "error" in result:
        raise RuntimeError(f"load generator: {result['error']}")
    return result


def rps_and_cpu(
    name: str, process: Proc, port: int, cookies: list[str], *, concurrency: int, duration: float
) -> tuple[float, float]:
    """Page views of a running bridge's token endpoint: its req/s, and the CPU its process
    group spent per request, in microseconds. Any answer but 200 and nothing is reported."""
    url = f"http://127.0.0.1:{port}/request_tokens"
    cpu = cpu_seconds(process.pid)
    result = require_all_200(
        name,
        load(url, mode="tokens", cookies=cookies, concurrency=concurrency, duration=duration),
    )
    cpu = cpu_seconds(process.pid) - cpu
    return float(result["rps"]), cpu / result["requests"] * 1e6
