"""Writes batched per turn of the event loop: what a turn wrote goes out at its end.

Each write to a peer on this machine (nginx in front, a client on loopback, Redis) wakes that
peer, and on a virtual machine the wake-up of an idle CPU costs more than the write itself. A
process that writes each answer or command as soon as it is ready wakes its peer each time,
finding it asleep again; one that writes what a turn produced at the end of the turn wakes it
once and finds it awake for the rest. A :class:`BatchedTransport` wraps a connection's transport:
its writes wait in the loop's :class:`WriteBatch` until the end of the turn, then go out in one
write per connection. The bytes and their order on each connection are unchanged. Nothing waits
longer than the turn: a reply to what is written can only be read in a later turn anyway.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

log = logging.getLogger("bridge.turns")

# A connection whose pending bytes pass this is written at once (a long streamed answer).
MAX_PENDING_BYTES = 64 * 1024


class WriteBatch:
    """The bytes the loop's connections wrote this turn, written at the end of the turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Held weakly: the loop keys this batch in a WeakKeyDictionary, which a strong
        # reference from its value would keep alive for ever.
        self.loop = weakref.ref(loop)
        self.pending: dict[asyncio.Transport, list[bytes]] = {}
        self.sizes: dict[asyncio.Transport, int] = {}

    def add(self, transport: asyncio.Transport, data: bytes) -> None:
        chunks = self.pending.get(transport)
        if chunks is None:
            loop = self.loop()
            if not self.pending and loop is not None:
                loop.call_soon(self.flush)
            self.pending[transport] = [data]
            self.sizes[transport] = len(data)
            return
        chunks.append(data)
        self.sizes[transport] += len(data)
        if self.sizes[transport] > MAX_PENDING_BYTES:
            self.flush_one(transport)

    def flush_one(self, transport: asyncio.Transport) -> None:
        """Write ``transport``'s pending bytes now (before it closes, or once they are many)."""
        chunks = self.pending.pop(transport, None)
        self.sizes.pop(transport, None)
        if chunks and not transport.is_closing():
            transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def drop(self, transport: asyncio.Transport) -> None:
        self.pending.pop(transport, None)
        self.sizes.pop(transport, None)

    def flush(self) -> None:
        pending, self.pending, self.sizes = self.pending, {}, {}
        for transport, chunks in pending.items():
            if transport.is_closing():
                continue
            try:
                transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            except Exception:  # one broken connection must not keep the others' answers
                log.warning("A connection could not be written to; closed.", exc_info=True)
                transport.abort()


class BatchedTransport(asyncio.Transport):
    """A connection's transport whose writes wait in the loop's :class:`WriteBatch`."""

    def __init__(self, transport: asyncio.Transport, batch: WriteBatch) -> None:
        super().__init__()
        self.transport = transport
        self.batch = batch

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self.batch.add(self.transport, bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        self.batch.flush_one(self.transport)  # what was written goes out before the close
        self.transport.close()

    def abort(self) -> None:
        self.batch.drop(self.transport)
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.transport.get_protocol()

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def is_reading(self) -> bool:
        return self.transport.is_reading()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + self.batch.sizes.get(self.transport, 0)

    def can_write_eof(self) -> bool:
        return self.transport.can_write_eof()

    def write_eof(self) -> None:
        self.batch.flush_one(self.transport)
        self.transport.write_eof()


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WriteBatch] = (
    weakref.WeakKeyDictionary()
)


def batch_for(loop: asyncio.AbstractEventLoop) -> WriteBatch:
    batch = _batches.get(loop)
    if batch is None:
        batch = _batches[loop] = WriteBatch(loop)
    return batch
