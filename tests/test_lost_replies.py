"""A store write whose reply is lost is resolved by reading back, never taken for an attack.

Redis is reached through a TCP proxy on 127.0.0.1 that, once armed, holds Redis's reply to the
next write of a session record past ``[store] timeout``: the write was applied, the bridge
never heard so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from quart import Quart

from support.app import Clock, bridge_of, login
from support.config import make_settings
from support.redis import RedisServer, redis_server  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

STORE_TIMEOUT = 0.3


class HoldingProxy:
    """Forwards 127.0.0.1:<port> to Redis; ``arm(n)`` holds the replies to the next ``n`` script
    calls that name a session record (the record's conditional writes), or the session's lock
    with ``naming=b":lock:{"``, until ``release()``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.armed = 0
        self.naming = b":session:{"
        self.held = 0
        self.released = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def arm(self, writes: int = 1, *, naming: bytes = b":session:{") -> None:
        """Hold the replies to the next ``writes`` script calls on keys ``naming`` (by default
        the record's conditional writes; ``b":lock:{"``: taking the session's lock)."""
        self.armed = writes
        self.naming = naming

    def release(self) -> None:
        self.released.set()

    async def stop(self) -> None:
        self.release()
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _connection(self, client_r: Any, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        hold = asyncio.Event()  # set: the next reply on this connection is held

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self.armed and b"EVALSHA" in data and self.naming in data:
                    self.armed -= 1
                    hold.set()
                redis_w.write(data)
                await redis_w.drain()

        async def downstream() -> None:
            while data := await redis_r.read(65536):
                if hold.is_set():
                    hold.clear()
                    self.held += 1
                    await self.released.wait()  # long past the store's timeout
                client_w.write(data)
                await client_w.drain()

        pumps = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        for pump in pumps:
            self.tasks.add(pump)
            pump.add_done_callback(self.tasks.discard)
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        for writer in (client_w, redis_w):
            writer.close()


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[HoldingProxy]:  # noqa: F811
    port = int(redis_server.url.rsplit(":", 1)[1].split("/")[0])
    held = HoldingProxy(port)
    await held.start()
    yield held
    await held.stop()


@pytest.fixture
async def app(make_app: Callable[..., Quart], proxy: HoldingProxy) -> AsyncIterator[Quart]:
    assert proxy.server is not None
    port = proxy.server.sockets[0].getsockname()[1]
    settings = make_settings(
        {"store": {"url": f"redis://127.0.0.1:{port}/0", "timeout": STORE_TIMEOUT}}
    )
    application = make_app(settings)
    async with application.test_app():
        yield application


async def events(app: Quart) -> list[str]:
    return [e["event"] for e in await bridge_of(app).lifecycle.recent("alice", 100)]


async def test_a_rotation_whose_reply_was_lost_is_read_back_not_taken_for_theft(
    app: Quart, proxy: HoldingProxy, clock: Clock, fake_state: Any
) -> None:
    client = app.test_client()
    login(client, app)
    issued = await client.get("/request_tokens")
    handle = (await issued.get_json())["tokens"]["refreshToken"]
    proxy.arm()
    rotated = await client.get("/request_tokens", query_string={"refreshToken": handle})
    proxy.release()
    assert proxy.held == 1  # Redis applied the rotation; its reply came too late
    assert rotated.status_code == 200, await rotated.get_data()
    new = (await rotated.get_json())["tokens"]["refreshToken"]
    assert new != handle
    clock.advance(11)  # past the grace window: the handle the bridge wrote is the one served
    again = await client.get("/request_tokens", query_string={"refreshToken": new})
    assert again.status_code == 200
    assert "refresh_handle_reused" not in await events(app)
    assert "session_ended" not in await events(app)
    assert fake_state.login_calls == 1


async def test_a_rotation_answered_503_and_applied_later_is_retried_not_taken_for_theft(
    app: Quart, proxy: HoldingProxy, clock: Clock, fake_state: Any
) -> None:
    """Both the write and its retry lose their replies: the client gets 503 and keeps the old
    handle, which Redis has rotated. Its retry, past the grace window, is served."""
    client = app.test_client()
    login(client, app)
    issued = await client.get("/request_tokens")
    handle = (await issued.get_json())["tokens"]["refreshToken"]
    proxy.arm(2)
    failed = await client.get("/request_tokens", query_string={"refreshToken": handle})
    assert failed.status_code == 503
    assert (await failed.get_json())["error"] == "store_unavailable"
    proxy.release()
    assert proxy.held == 2
    clock.advance(11)  # past the grace window, as a component retrying later would be
    retried = await client.get("/request_tokens", query_string={"refreshToken": handle})
    assert retried.status_code == 200, await retried.get_data()
    new = (await retried.get_json())["tokens"]["refreshToken"]
    assert new != handle
    duplicate = await client.get("/request_tokens", query_string={"refreshToken": handle})
    assert (await duplicate.get_json())["tokens"]["refreshToken"] == new  # within its grace
    clock.advance(11)
    assert (
        await client.get("/request_tokens", query_string={"refreshToken": new})
    ).status_code == 200
    assert "refresh_handle_reused" not in await events(app)
    assert "session_ended" not in await events(app)
    assert fake_state.login_calls == 1
    # Resolved once: the old handle replayed again, past its grace, is a replay.
    clock.advance(11)
    replay = await client.get("/request_tokens", query_string={"refreshToken": handle})
    assert replay.status_code == 401
    assert "refresh_handle_reused" in await events(app)


async def test_two_tabs_rotations_answered_503_are_each_retried_not_taken_for_theft(
    app: Quart, proxy: HoldingProxy, clock: Clock
) -> None:
    client = app.test_client()
    login(client, app)
    handles = []
    for _ in range(2):
        issued = await client.get("/request_tokens")
        handles.append((await issued.get_json())["tokens"]["refreshToken"])
    for handle in handles:  # each tab's rotation is applied, and its replies lost
        proxy.released.clear()
        proxy.arm(2)
        failed = await client.get("/request_tokens", query_string={"refreshToken": handle})
        assert failed.status_code == 503
        proxy.release()
    clock.advance(11)
    for handle in handles:
        retried = await client.get("/request_tokens", query_string={"refreshToken": handle})
        assert retried.status_code == 200, await retried.get_data()
    assert "refresh_handle_reused" not in await events(app)


async def test_a_rotation_answered_503_retried_for_another_avatar_is_refused(
    app: Quart, proxy: HoldingProxy, clock: Clock
) -> None:
    client = app.test_client()
    login(client, app, groups=["customers"])
    issued = await client.get("/request_tokens")
    handle = (await issued.get_json())["tokens"]["refreshToken"]
    proxy.arm(2)
    failed = await client.get("/request_tokens", query_string={"refreshToken": handle})
    assert failed.status_code == 503
    proxy.release()
    clock.advance(11)
    other = await client.get("/request_tokens/premium", query_string={"refreshToken": handle})
    assert other.status_code == 401
    assert (await other.get_json())["error"] == "invalid_refresh_token"


async def test_a_holder_whose_lease_lapsed_during_its_sentifyd_call_writes_nothing(
    make_app: Callable[..., Quart],
    redis_server: RedisServer,  # noqa: F811
    clock: Clock,
    fake_state: Any,
) -> None:
    store = {"url": redis_server.url, "timeout": STORE_TIMEOUT, "lock_lease": 3 * STORE_TIMEOUT}
    app = make_app(make_settings({"store": store, "sentifyd": {"timeout": 5}}))
    async with app.test_app():
        client = app.test_client()
        login(client, app)
        await client.get("/request_tokens")
        clock.advance(55)  # the tokens expired: the next request calls Sentifyd under the lock
        fake_state.latency = 2.0  # it returns after Redis runs again
        asking = asyncio.create_task(client.get("/request_tokens"))
        await asyncio.sleep(0.3)  # the call is out

        def stall() -> None:
            # Redis frozen past the lease: the holder cannot renew it, and it lapses.
            redis_server.pause()
            time.sleep(1.5)
            redis_server.resume()

        await asyncio.to_thread(stall)
        answer = await asyncio.wait_for(asking, 10)
        assert answer.status_code == 503
        assert (await answer.get_json())["error"] == "store_unavailable"


async def test_a_retry_answered_503_before_writing_keeps_the_applied_rotation_known(
    make_app: Callable[..., Quart], proxy: HoldingProxy, clock: Clock
) -> None:
    """The first rotation is applied and its replies lost; its retry fails taking the lock, so
    it writes nothing: the chain is still at the first rotation's handle, which a later retry
    must still find among the unresolved ones."""
    assert proxy.server is not None
    port = proxy.server.sockets[0].getsockname()[1]
    store = {
        "url": f"redis://127.0.0.1:{port}/0",
        "timeout": STORE_TIMEOUT,
        "lock_lease": 3 * STORE_TIMEOUT,  # the lock taken for the lost reply lapses soon
    }
    app = make_app(make_settings({"store": store}))
    async with app.test_app():
        client = app.test_client()
        login(client, app)
        issued = await client.get("/request_tokens")
        handle = (await issued.get_json())["tokens"]["refreshToken"]
        proxy.arm(2)
        assert (
            await client.get("/request_tokens", query_string={"refreshToken": handle})
        ).status_code == 503
        proxy.release()
        clock.advance(55)  # past the grace window, and the tokens expired: the lock is needed
        proxy.released.clear()
        proxy.arm(1, naming=b":lock:{")
        assert (
            await client.get("/request_tokens", query_string={"refreshToken": handle})
        ).status_code == 503
        proxy.release()
        retried = await client.get("/request_tokens", query_string={"refreshToken": handle})
        assert retried.status_code == 200, await retried.get_data()
        assert "refresh_handle_reused" not in await events(app)


async def test_a_rotation_unresolved_for_over_a_day_is_forgotten(
    make_app: Callable[..., Quart], proxy: HoldingProxy, clock: Clock
) -> None:
    assert proxy.server is not None
    port = proxy.server.sockets[0].getsockname()[1]
    three_days = 3 * 86_400
    settings = make_settings(
        {
            "store": {"url": f"redis://127.0.0.1:{port}/0", "timeout": STORE_TIMEOUT},
            "session": {"idle_timeout": three_days, "absolute_timeout": three_days},
        }
    )
    app = make_app(settings)
    async with app.test_app():
        client = app.test_client()
        login(client, app)
        handles = []
        for _ in range(2):
            issued = await client.get("/request_tokens")
            handles.append((await issued.get_json())["tokens"]["refreshToken"])
        old, other = handles
        proxy.arm(2)
        assert (
            await client.get("/request_tokens", query_string={"refreshToken": old})
        ).status_code == 503
        proxy.release()
        clock.advance(86_401)
        login(client, app)  # still signed in to the site: its cookie renewed
        proxy.released.clear()
        proxy.arm(2)  # another rotation answered 503 a day later sweeps the memory
        assert (
            await client.get("/request_tokens", query_string={"refreshToken": other})
        ).status_code == 503
        proxy.release()
        proxy.armed = 0
        replay = await client.get("/request_tokens", query_string={"refreshToken": old})
        assert replay.status_code == 401
        assert "refresh_handle_reused" in await events(app)
