"""Test support for the Redis store: a real redis-server on 127.0.0.1, and bridge processes.

``RedisServer`` runs Debian's ``redis-server`` on a spare port in a temporary directory (no
persistence unless asked) and can stop, pause, resume and restart it on the same port and
data directory. ``BridgeProcess`` runs ``sentifyd-bridge serve`` as a subprocess with a
config file written for the test.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bridge.identity.site_cookie import SiteCookieSource
from bridge.settings.loader import _deep_merge
from support import leaks as support_leaks
from support.config import (
    AVATAR_ID,
    BRIDGE_KEY,
    DEFAULT_AVATAR,
    TEST_ENV,
    make_settings,
    serve_config,
    write_bridge_toml,
)
from support.live import free_port

READY_TIMEOUT = 15.0
BRIDGE_READY_TIMEOUT = 60.0


def _wait(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; bounded, for real external processes only."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not happen within {timeout} s")


def start_site_process(
    argv: Sequence[str], *, port: int, log: Path, what: str, timeout: float, **popen: Any
) -> subprocess.Popen[bytes]:
    """Start a site's own server (``argv``, its output appended to ``log``) and wait until it
    answers ``GET /`` on ``port`` with 200; ``what`` names it in errors."""
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **popen)

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited:\n" + log.read_text()[-2000:])
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    _wait(up, timeout, f"{what} start")
    return process


class RedisServer:
    """A redis-server process on 127.0.0.1 that the test controls."""

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = False,
        password: str | None = None,
        tls: Mapping[str, str] | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            pytest.fail("redis-server is not installed (./scripts/test.sh installs it)")
        self.binary = binary
        self.directory = directory
        self.appendonly = appendonly
        self.password = password
        self.tls = dict(tls or {})
        self.extra = list(extra)  # more options: --replicaof, --cluster-enabled, ...
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls['ca']}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        args = [
            self.binary,
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            args += [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", self.tls["cert"],
                "--tls-key-file", self.tls["key"],
                "--tls-ca-cert-file", self.tls["ca"],
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        else:
            args += ["--port", str(self.port)]
        return args + self.extra

    def client(self) -> redis.Redis:
        """A plain synchronous client, for the test's own look at the raw contents."""
        kwargs: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2}
        if self.tls:
            kwargs.update(ssl=True, ssl_ca_certs=self.tls["ca"])
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **kwargs)

    def _pings(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait(lambda: self._pings() or self.process.poll() is not None, 10, "redis start")  # type: ignore[union-attr]
        if self.process.poll() is not None:
            log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server exited at start:\n{log}")
        return self

    def stop(self) -> None:
        """Shut Redis down the normal way (SIGTERM: an append-only file is flushed)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused server cannot hear SIGTERM
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """Kill Redis outright (SIGKILL): a crashed machine, nothing flushed or handed over."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def pause(self) -> None:
        """Freeze Redis: connections stay open and nothing answers (a hung server)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def dump(self) -> dict[str, Any]:
        """Return every key with its raw value (strings, sets, lists) and its TTL in ms."""
        contents: dict[str, Any] = {}
        with self.client() as client:
            if "--cluster-enabled" in self.extra:
                client.execute_command("READONLY")  # a cluster replica answers reads then
            for key in client.scan_iter(count=1000):
                kind = client.type(key).decode()
                value: Any
                if kind == "string":
                    value = client.get(key)
                elif kind == "set":
                    value = sorted(client.smembers(key))
                elif kind == "list":
                    value = client.lrange(key, 0, -1)
                else:
                    value = kind
                contents[key.decode()] = {"type": kind, "value": value, "pttl": client.pttl(key)}
        return contents


def tls_files(directory: Path) -> dict[str, str]:
    """Write a throwaway CA and a server certificate for 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = {
        "ca": (directory / "ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
        "cert": (directory / "server.pem", cert.public_bytes(serialization.Encoding.PEM)),
        "key": (
            directory / "server.key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        ),
    }
    for path, data in files.values():
        path.write_bytes(data)
    return {name: str(path) for name, (path, _) in files.items()}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh Redis with no persistence."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


# --- Sentinel and Cluster ----------------------------------------------------------------------

SERVICE = "bridge"
# A master waits 5 s by default before it sends a new replica its first copy.
QUICK_SYNC = ["--repl-diskless-sync-delay", "0"]


class SentinelSetup:
    """A master, one replica and three ``redis-sentinel`` processes (quorum 2, down-after 1 s)."""

    def __init__(self, directory: Path, *, tls: Mapping[str, str] | None = None) -> None:
        binary = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
        if not os.path.exists(binary):
            pytest.fail("redis-sentinel is not installed (./scripts/test.sh installs it)")
        self.binary = binary
        self.directory = directory
        self.tls = dict(tls or {})
        # With TLS, the data nodes speak only TLS, to clients and to each other.
        tls_replication = ["--tls-replication", "yes"] if tls else []
        self.master = RedisServer(_subdir(directory, "master"), tls=tls, extra=QUICK_SYNC)
        self.replica = RedisServer(
            _subdir(directory, "replica"),
            tls=tls,
            extra=[
                *QUICK_SYNC,
                *tls_replication,
                "--replicaof",
                "127.0.0.1",
                str(self.master.port),
            ],  # fmt: skip
        )
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        if self.tls:
            return f"rediss+sentinel://{hosts}/{SERVICE}/0?ssl_ca_certs={self.tls['ca']}"
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> SentinelSetup:
        self.master.start()
        self.replica.start()
        self.wait_replica(self.replica)
        for i, port in enumerate(self.sentinel_ports):
            home = _subdir(self.directory, f"sentinel{i}")
            conf = home / "sentinel.conf"  # the sentinel rewrites it with what it learns
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {home}\nlogfile {home / 'sentinel.log'}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            if self.tls:  # the sentinels reach the data nodes over TLS; clients reach them plain
                with conf.open("a") as out:
                    out.write(
                        f"tls-replication yes\ntls-cert-file {self.tls['cert']}\n"
                        f"tls-key-file {self.tls['key']}\ntls-ca-cert-file {self.tls['ca']}\n"
                    )
            self.sentinels.append(
                subprocess.Popen(
                    [self.binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        # Ready when every sentinel knows the replica and the two other sentinels.
        _wait(self._all_agree, READY_TIMEOUT, "sentinels discovering each other")
        return self

    def sentinel(self, index: int = 0) -> redis.Redis:
        port = self.sentinel_ports[index]
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)

    def _all_agree(self) -> bool:
        try:
            for i in range(len(self.sentinel_ports)):
                with self.sentinel(i) as client:
                    state = client.sentinel_master(SERVICE)
                    if state["num-other-sentinels"] < 2 or state["num-slaves"] < 1:
                        return False
        except (redis.RedisError, OSError):
            return False
        return True

    def master_port(self) -> int:
        """The master's port as the sentinels report it now."""
        with self.sentinel() as client:
            _, port = client.sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def wait_replica(self, server: RedisServer) -> None:
        """Wait until ``server`` replicates the current master, its first sync done.

        A restarted old master is converted by the sentinels on their own clock: it must have
        answered as a master, without going down, for 8 s, seen by an INFO sent every 10 s, and a
        sentinel whose timer stalls for 2 s (a loaded machine) stays in TILT, doing nothing, for
        30 s. So the bound is 75 s, and a miss reports what the sentinels logged.
        """

        def replicating() -> bool:
            try:
                with server.client() as client:
                    info = client.info("replication")
            except (redis.RedisError, OSError):
                return False
            return info["role"] == "slave" and info.get("master_link_status") == "up"

        try:
            _wait(replicating, READY_TIMEOUT * 5, f"{server.port} to become a replica")
        except RuntimeError as missed:
            raise RuntimeError(f"{missed}; the sentinels logged:\n{self.log_excerpt()}") from None

    def log_excerpt(self) -> str:
        """The sentinels' role changes, TILTs and conversions, for a failure message."""
        wanted = ("tilt", "sdown", "odown", "switch-master", "convert-to-slave", "failover")
        lines = []
        for i in range(len(self.sentinel_ports)):
            log = self.directory / f"sentinel{i}" / "sentinel.log"
            if log.exists():
                text = log.read_text(errors="replace").splitlines()
                lines += [f"sentinel{i}: {line}" for line in text if any(w in line for w in wanted)]
        return "\n".join(lines[-60:])

    def stop(self) -> None:
        for process in self.sentinels:
            if process.poll() is None:
                process.terminate()
        for process in self.sentinels:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.replica.stop()
        self.master.stop()


class ClusterSetup:
    """A Redis Cluster on 127.0.0.1 made with ``redis-cli --cluster create``."""

    def __init__(self, directory: Path, *, masters: int = 3, replicas: int = 1) -> None:
        self.replicas = replicas
        self.nodes = [
            RedisServer(
                _subdir(directory, f"node{i}"), extra=[*QUICK_SYNC, "--cluster-enabled", "yes"]
            )
            for i in range(masters * (1 + replicas))
        ]
        for node in self.nodes:
            # The bus port is chosen too (the default, port + 10000, may be taken or too high).
            node.extra += [
                "--cluster-port", str(free_port()),
                "--cluster-config-file", str(node.directory / "nodes.conf"),
                "--cluster-node-timeout", "1000",
            ]  # fmt: skip

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def start(self) -> ClusterSetup:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        subprocess.run(
            [
                cli, "--cluster", "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas", str(self.replicas), "--cluster-yes",
            ],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=60,
        )  # fmt: skip
        _wait(self.healthy, READY_TIMEOUT * 2, "the cluster to settle")
        return self

    def healthy(self) -> bool:
        """Every running node reports the cluster ok and sees the same masters."""
        try:
            views = []
            for node in self.running():
                with node.client() as client:
                    if client.cluster("info")["cluster_state"] != "ok":
                        return False
                    views.append(sorted(self._masters(client)))
        except (redis.RedisError, OSError):
            return False
        return all(view == views[0] for view in views)

    @staticmethod
    def _masters(client: redis.Redis) -> list[str]:
        nodes = client.cluster("nodes")
        return [addr for addr, n in nodes.items() if "master" in n["flags"] and n["connected"]]

    def running(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def masters(self) -> list[RedisServer]:
        masters = []
        for node in self.running():
            with node.client() as client:
                if client.info("replication")["role"] == "master":
                    masters.append(node)
        return masters

    def owner(self, key: str) -> RedisServer:
        """The master that serves ``key``'s slot now."""
        for node in self.masters():
            with node.client() as client:
                slot = int(client.cluster("keyslot", key))
                if any(int(lo) <= slot <= int(hi) for lo, hi in _slot_ranges(client, node)):
                    return node
        raise RuntimeError(f"no master serves {key}")

    def wait_replicas_synced(self) -> None:
        """Wait until every replica has every write its master has."""

        def synced() -> bool:
            for node in self.masters():
                with node.client() as client:
                    info = client.info("replication")
                links = [v for k, v in info.items() if k.startswith("slave")]
                if len(links) < self.replicas or any(
                    link["offset"] != info["master_repl_offset"] for link in links
                ):
                    return False
            return True

        _wait(synced, READY_TIMEOUT, "the replicas to catch up")

    def wait_failed_over(self, dead: RedisServer) -> None:
        """Wait until a replica took over the dead master's slots and the cluster is ok again."""

        def replaced() -> bool:
            if not self.healthy():
                return False
            with self.running()[0].client() as client:
                masters = self._masters(client)
            return not any(addr.endswith(f":{dead.port}") for addr in masters)

        _wait(replaced, READY_TIMEOUT * 2, "a replica to take over")

    def migrate_slot(self, slot: int, source: RedisServer, target: RedisServer, step: Any) -> None:
        """Move ``slot`` from ``source`` to ``target`` key by key, the way resharding does.

        ``step()`` runs after the slot is marked migrating and after each key moved, so that
        traffic meets the slot half-moved (``ASK``) and then moved (``MOVED``).
        """
        with source.client() as src, target.client() as dst:
            src_id, dst_id = src.cluster("myid").decode(), dst.cluster("myid").decode()
            dst.cluster("setslot", slot, "importing", src_id)
            src.cluster("setslot", slot, "migrating", dst_id)
            step()
            while keys := src.cluster("getkeysinslot", slot, 1):
                src.migrate("127.0.0.1", target.port, keys, 0, 5000)
                step()
            for node in self.masters():
                with node.client() as client:
                    client.cluster("setslot", slot, "node", dst_id)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process and node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            node.stop()


def _slot_ranges(client: redis.Redis, node: RedisServer) -> list[tuple[int, int]]:
    ranges = []
    for lo, hi, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
        if int(master[1]) == node.port:
            ranges.append((int(lo), int(hi)))
    return ranges


def _subdir(directory: Path, name: str) -> Path:
    path = directory / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- bridge processes -------------------------------------------------------------------------


def store_config(
    *,
    store_url: str,
    backend: str,
    avatar_id: str = AVATAR_ID,
    refresh_grace: int = 10,
    prefix: str = "sbridge",
    store_timeout: float = 1.0,
    lock_wait: float = 5.0,
    lock_lease: float = 10.0,
    **sections: Any,
) -> dict[str, Any]:
    """A bridge process's configuration for the tests of a shared store: ``serve_config`` with
    the store at ``store_url`` and no limits; ``sections`` merged over it."""
    config = serve_config(
        backend,
        session={"refresh_grace": refresh_grace},
        store={
            "url": store_url,
            "prefix": prefix,
            "timeout": store_timeout,
            "lock_wait": lock_wait,
            "lock_lease": lock_lease,
        },
        sentifyd={"retry_backoff": 0.01, "timeout": 5},
        avatars=[{**DEFAULT_AVATAR, "avatar_id": avatar_id}],
        # These tests load the store as fast as they can, not as a component would; they are
        # about the store, not the limits (tests/test_traffic.py runs with the defaults).
        limits={
            "per_session": "off",
            "new_chains_per_session": "off",
            "new_sessions_per_user": "off",
            "per_ip": "off",
        },
        logging={"level": "INFO"},
    )
    return _deep_merge(config, sections)


def bridge_command() -> list[str]:
    """The installed ``sentifyd-bridge`` script beside this Python, else the module."""
    script = Path(sys.executable).with_name("sentifyd-bridge")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bridge.cli"]


class BridgeProcess:
    """``sentifyd-bridge serve --config <file>`` on a spare port, started and stopped by a test."""

    def __init__(
        self,
        directory: Path,
        name: str,
        *,
        config_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        **config: Any,
    ) -> None:
        """Run with ``config_path``, or with a config written from ``store_config(**config)``."""
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / f"{name}.log"
        if config_path is None:
            config_path = write_bridge_toml(directory / f"{name}.toml", **store_config(**config))
        self.config_path = config_path
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "SENTIFYD_"))},
            **TEST_ENV,
            "BRIDGE_SECRET_KEY": BRIDGE_KEY,
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                *bridge_command(),
                "serve",
                "--config",
                str(self.config_path),
                "--port",
                str(self.port),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def start(self) -> BridgeProcess:
        """Spawn and wait until it answers ``/healthz``; stopped again if it does not."""
        self.spawn()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"bridge {self.name} exited:\n{self.log()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        # A bridge process imports Quart, granian and the identity libraries before it listens:
        # seconds on a loaded 2-core machine, so its bound is wider than a Redis server's.
        _wait(up, BRIDGE_READY_TIMEOUT, f"bridge {self.name} start")

    def terminate(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()

    def stop(self) -> None:
        self.terminate()
        if self.process:
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        # The process's log passes no hook of the leak guard: hand it over.
        support_leaks.scan(self.log(), f"log of bridge process {self.name}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_all(bridges: Sequence[BridgeProcess]) -> None:
    """Start bridges side by side (each takes about a second to import and bind)."""
    for bridge in bridges:
        bridge.spawn()
    try:
        for bridge in bridges:
            bridge.wait_ready()
    except BaseException:
        stop_all(bridges)  # none left running for a later test to find
        raise


def stop_all(bridges: Sequence[BridgeProcess]) -> None:
    """Stop bridges side by side (each may wait for its open connections to close)."""
    for bridge in bridges:
        bridge.terminate()
    for bridge in bridges:
        bridge.stop()


# --- visitors -----------------------------------------------------------------------------------

COOKIE = "sentifyd_bridge"  # the bridge's own session cookie (plain HTTP: no __Host- prefix)

_site = SiteCookieSource(make_settings().site_cookie)  # type: ignore[arg-type]


@dataclass
class Visitor:
    """A browser signed in to the site, holding what a browser would: two cookies."""

    user: str
    session: str | None = None
    handles: list[str] = field(default_factory=list)

    @property
    def site_cookie(self) -> str:
        return str(_site.serializer.dumps({"user_id": self.user}))

    async def tokens(
        self, http: httpx.AsyncClient, bridge: BridgeProcess, handle: str | None = None
    ) -> httpx.Response:
        cookies = [f"session={self.site_cookie}"]
        if self.session:
            cookies.append(f"{COOKIE}={self.session}")
        response = await http.get(
            f"{bridge.url}/request_tokens",
            params={"refreshToken": handle} if handle else None,
            headers={"Cookie": "; ".join(cookies)},
        )
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            if name == COOKIE:
                self.session = rest.split(";", 1)[0] or None
        if response.status_code == 200:
            self.handles.append(response.json()["tokens"]["refreshToken"])
        return response


def new_cookie(response: httpx.Response) -> bool:
    return any(h.startswith(f"{COOKIE}=") for h in response.headers.get_list("set-cookie"))


@dataclass
class Load:
    """Visitors asking the bridges in turn for tokens until stopped, recording every answer."""

    http: httpx.AsyncClient
    bridges: Sequence[BridgeProcess]
    visitors: list[Visitor]
    statuses: list[tuple[float, int, str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0
    stopping: bool = False
    answered: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def run(self, visitor: Visitor, index: int) -> None:
        turn = index
        while not self.stopping:
            bridge = self.bridges[turn % len(self.bridges)]
            turn += 1
            started = time.monotonic()
            try:
                response = await visitor.tokens(self.http, bridge)
            except httpx.HTTPError as exc:  # a hang ends as ReadTimeout here
                self.failures.append(type(exc).__name__)
                continue
            self.slowest = max(self.slowest, time.monotonic() - started)
            code = response.json().get("error", "") if response.status_code != 200 else ""
            async with self.answered:
                self.statuses.append((time.monotonic(), response.status_code, code, visitor.user))
                self.answered.notify_all()

    async def until(self, predicate: Callable[[], bool], within: float) -> None:
        """Wait until the answers recorded so far satisfy ``predicate``."""
        async with asyncio.timeout(within), self.answered:
            await self.answered.wait_for(predicate)

    def count(self, status: int, since: float = 0.0) -> int:
        return sum(1 for at, s, _, _ in self.statuses if s == status and at >= since)

    def served(self, since: float) -> set[str]:
        """Return the visitors who got tokens since ``since``."""
        return {who for at, s, _, who in self.statuses if s == 200 and at >= since}
