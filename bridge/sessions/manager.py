"""The bridge's own session: a random cookie value in the browser, a record in the store.

The cookie value is 256 random bits. The store knows the session only by a hash of it, so a
store dump yields no usable cookie, and the value also keys the sealing of the session's
upstream tokens (:mod:`bridge.sessions.sealing`).

Ending a session always wins: :meth:`SessionManager.end` leaves a tombstone and deletes the
record in one atomic step, without waiting for the session's lock, and every save checks the
tombstone (and that the record still exists, and the saver's lease) in the same step as its
write. A request that was in flight when the session ended finds its save refused
(:class:`SessionGone`) and hands out nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import msgspec
from quart import Response

from bridge.errors import LeaseLost, SessionGone, SessionRevoked, StoreUnavailable
from bridge.identity import Claims, Identity, Method
from bridge.observe import tracing
from bridge.observe.exchange import current as current_exchange
from bridge.observe.exchange import note
from bridge.observe.incoming import Incoming
from bridge.observe.lifecycle import Lifecycle
from bridge.secret import token_urlsafe
from bridge.sessions.devices import device_label
from bridge.sessions.sealing import SessionSealer, digest
from bridge.settings.schema import Settings
from bridge.store.base import Changed, Lease, Store

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_T = TypeVar("_T")
# Writes of one session that meet re-apply their change; this many in a row is a storm.
MAX_SWAPS = 16


class SessionBusy(StoreUnavailable):
    """Every attempt at a session's write met another request's write first (503)."""

    message = "The session is busy; try again shortly."


class Grace(msgspec.Struct, omit_defaults=True):
    """A refresh just done: the handle it retired, when, and the handle it gave out, sealed
    under the retired one (so only the retired handle's holder gets the same answer again)."""

    hash: str
    at: float
    sealed: str


class Chain(msgspec.Struct, omit_defaults=True):
    """One component instance's line of refresh handles (stored as hashes only).

    ``used_at`` is when it was last refreshed (``created_at`` until then): beyond
    ``[session] max_chains`` the least recently used chain is evicted (:class:`SessionRecord`
    remembers it in ``evicted``).
    """

    id: str
    avatar: str
    current: str
    created_at: float
    # The handles this chain retired, newest last, as the first SPENT_BYTES of each one's
    # SHA-256, concatenated: only ever compared with a handle presented on this session's own
    # chain, so 64 bits tell a replay from a fresh handle (a false match: 2^-59 at 32 kept),
    # in a tenth of the room of the hex digests (``retired``, how earlier versions wrote them,
    # still read). A refresh writes the record back: its size is the hot path's cost.
    spent: bytes = b""
    retired: list[str] = []
    grace: Grace | None = None
    used_at: float = 0.0

    @property
    def last_used(self) -> float:
        return self.used_at or self.created_at

    def has_spent(self, handle_hash: str) -> bool:
        if handle_hash in self.retired:
            return True
        return _has_mark(self.spent, spent_mark(handle_hash))

    def spend(self, handle_hash: str, keep: int) -> None:
        """Add ``handle_hash`` to the retired handles, keeping the newest ``keep``."""
        blob = b"".join(spent_mark(h) for h in self.retired) + self.spent
        self.retired = []
        self.spent = (blob + spent_mark(handle_hash))[-keep * SPENT_BYTES :]


SPENT_BYTES = 8


def spent_mark(handle_hash: str) -> bytes:
    """The stored mark of a retired handle: the first bytes of its SHA-256 (hex given)."""
    return bytes.fromhex(handle_hash[: 2 * SPENT_BYTES])


def evicted_mark(avatar: str, handle_hash: str) -> bytes:
    """The stored mark of an evicted chain's current handle, bound to the chain's avatar."""
    return spent_mark(digest(f"{avatar}:{handle_hash}"))


def _has_mark(blob: bytes, mark: bytes) -> bool:
    return _find_mark(blob, mark) >= 0


def _find_mark(blob: bytes, mark: bytes) -> int:
    for i in range(0, len(blob), SPENT_BYTES):
        if blob[i : i + SPENT_BYTES] == mark:
            return i
    return -1


# The avatar's parameters as Sentifyd sent them: JSON the component reads, passed through.
AvatarParams = dict[str, Any]


class Block(msgspec.Struct, frozen=True):
    """A user refused new sessions (:meth:`SessionManager.block`), as the store keeps it."""

    until: float = 0.0


class TokenEntry(msgspec.Struct):
    """A session's cached Sentifyd tokens for one avatar (only ever stored sealed, under the
    short names earlier versions wrote, so their sealed entries still decode)."""

    access_token: str = msgspec.field(name="at")
    refresh_token: str | None = msgspec.field(name="rt")
    token_type: str = msgspec.field(name="tt")
    expires_at: float = msgspec.field(name="exp")
    issued_at: float = msgspec.field(name="iat")
    avatar_params: AvatarParams = msgspec.field(default_factory=dict, name="params")

    def __repr__(self) -> str:
        return f"TokenEntry(expires_at={self.expires_at})"


class Count(msgspec.Struct, array_like=True):
    """A per-session rate limit's fixed window and how many requests it counted so far."""

    scope: str
    window: int
    n: int


class ProviderSession(msgspec.Struct, omit_defaults=True):
    """What an OIDC login keeps in its session: the provider and its user (``sub``), the
    provider's session id (``sid``, for back-channel logout), when the provider's tokens and
    its own session lapse, and those tokens sealed like Sentifyd's."""

    provider: str
    iss: str
    sub: str
    sid: str | None = None
    expires_at: float = 0.0
    refreshable: bool = False
    refresh_expires_at: float | None = None  # Keycloak says; others do not
    tokens: str = ""


class ProviderTokens(msgspec.Struct):
    """An OIDC provider's tokens kept for a session (sealed in :class:`ProviderSession`): the
    ID token (the end-session hint) and the refresh token (renewal, revocation at logout)."""

    id_token: str | None = None
    refresh_token: str | None = None


NO_PROVIDER_TOKENS = ProviderTokens()


class SessionExtra(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a way in keeps beside the identity (stored as ``extra``; only OIDC so far)."""

    oidc: ProviderSession | None = None


NO_EXTRA = SessionExtra()  # the default, left out of the stored record


class SessionRecord(msgspec.Struct, omit_defaults=True):
    """The stored session: who, since when, its sealed tokens and its chains."""

    id: str
    subject: str
    method: Method
    claims: Claims
    created_at: float
    last_seen: float
    expires_at: float
    # The sealed tokens (msgspec writes bytes as base64 in C); ``tokens`` is how versions
    # before it wrote them (URL-safe base64 text), still read so an upgrade ends no session.
    sealed: bytes | None = None
    tokens: str | None = None
    chains: list[Chain] = []
    # Marks (evicted_mark) of the current handles of chains evicted beyond max_chains, newest
    # last and bounded: such a handle, presented once, starts a new chain in their place.
    evicted: bytes = b""
    extra: SessionExtra = NO_EXTRA
    # The session's own rate-limit windows (bridge.access.limits), written with the record itself.
    counts: list[Count] = []
    # The coarse label of the browser that started it ("Chrome on macOS", bridge.sessions.devices),
    # for the visitor's "my devices" page; never the raw user agent. Records written before
    # it have none ("").
    device: str = ""

    def identity(self) -> Identity:
        return Identity(subject=self.subject, method=self.method, claims=dict(self.claims))

    @property
    def token_blob(self) -> bytes | str | None:
        """The sealed tokens, in whichever form the record holds them."""
        return self.sealed or self.tokens

    @property
    def has_tokens(self) -> bool:
        return bool(self.token_blob)

    def evict(self, chain: Chain, keep: int) -> None:
        """Drop ``chain``, remembering its current handle among the newest ``keep`` evicted."""
        self.chains = [c for c in self.chains if c is not chain]
        mark = evicted_mark(chain.avatar, chain.current)
        self.evicted = (self.evicted + mark)[-keep * SPENT_BYTES :]

    def take_evicted(self, avatar: str, handle_hash: str) -> bool:
        """Forget the evicted chain whose current handle this is; tell whether there was one."""
        at = _find_mark(self.evicted, evicted_mark(avatar, handle_hash))
        if at < 0:
            return False
        self.evicted = self.evicted[:at] + self.evicted[at + SPENT_BYTES :]
        return True


# Records are JSON (msgspec's codec, typed on the way in): readable with redis-cli as before,
# and nothing in them is secret (handles are hashes, the Sentifyd tokens are sealed).
def _plain(value: object) -> object:
    # Settings' value types (Text and its kind, e.g. an OIDC issuer URL) are str subclasses:
    # stored as plain text.
    if isinstance(value, str):
        return str(value)
    raise NotImplementedError(type(value).__name__)


_encode = msgspec.json.Encoder(enc_hook=_plain).encode
_decode_record = msgspec.json.Decoder(SessionRecord).decode
_decode_tokens = msgspec.json.Decoder(dict[str, TokenEntry]).decode
_decode_provider_tokens = msgspec.json.Decoder(ProviderTokens).decode


def encode_record(record: SessionRecord) -> bytes:
    return _encode(record)


def decode_record(raw: bytes) -> SessionRecord | None:
    """Return the record stored as ``raw``, or None for anything the bridge did not write."""
    try:
        return _decode_record(raw)
    except msgspec.DecodeError:
        return None


def _device_of_request() -> str:
    """The device label of the request being handled ("" outside one)."""
    exchange = current_exchange()
    if exchange is None:
        return ""
    return device_label(exchange.request.headers.get("User-Agent"))


@dataclass
class SessionContext:
    """A request's view of its session: the record, the cookie value that keys it, and the
    stored bytes the record was read from (what :meth:`SessionManager.update` expects to find)."""

    record: SessionRecord
    cookie_token: str
    identity: Identity
    is_new: bool = False
    raw: bytes = b""


class SessionManager:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        lifecycle: Lifecycle,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.lifecycle = lifecycle
        self.clock = clock
        self.sealer = SessionSealer(settings.secret_keys)
        self.cookie_name = settings.session.effective_cookie_name
        # Called with each record that end() ended: a way in drops its own indexes of it.
        self.on_end: list[Callable[[SessionRecord], Awaitable[None]]] = []
        # before_create(subject): counts a new session of the user, whichever way they came
        # in, and raises (RateLimited) beyond their budget, before anything is stored.
        self.before_create: Callable[[str], Awaitable[None]] | None = None

    # --- cookie ---------------------------------------------------------------------------

    def cookie_token(self, request: Incoming) -> str | None:
        value = request.cookies.get(self.cookie_name)
        if value and _TOKEN_RE.match(value):
            return value
        return None

    def set_cookie(self, response: Response, token: str) -> None:
        response.set_cookie(
            self.cookie_name,
            token,
            max_age=self.settings.session.absolute_timeout,
            path=self.settings.session.cookie_path,
            secure=self.settings.session.cookie_secure,
            httponly=True,
            samesite="Lax",
        )

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(
            self.cookie_name,
            path=self.settings.session.cookie_path,
            secure=self.settings.session.cookie_secure,
            httponly=True,
            samesite="Lax",
        )

    # --- records --------------------------------------------------------------------------

    @staticmethod
    def session_id(token: str) -> str:
        return digest("session:" + token)[:32]

    def record_key(self, session_id: str) -> str:
        return self.store.session_key("session", session_id)

    def user_key(self, subject: str) -> str:
        return self.store.key("user", subject)

    def lock_name(self, session_id: str) -> str:
        return self.store.session_key("lock", session_id)

    def tombstone_key(self, session_id: str) -> str:
        return self.store.session_key("ended", session_id)

    async def load(self, token: str) -> SessionRecord | None:
        """Return the live record for a cookie value; end it here if it timed out."""
        loaded = await self.load_raw(token)
        return loaded[0] if loaded is not None else None

    async def load_raw(self, token: str) -> tuple[SessionRecord, bytes] | None:
        """Return the live record for a cookie value and the bytes it was stored as."""
        session_id = self.session_id(token)
        note(session_id=session_id)  # the request log names it without hashing it again
        loaded = await self._read(session_id)
        if loaded is None:
            return None
        record = loaded[0]
        now = self.clock()
        if now >= record.expires_at:
            await self.end(record, "absolute_timeout")
            return None
        if now - record.last_seen >= self.settings.session.idle_timeout:
            await self.end(record, "idle_timeout")
            return None
        return loaded

    async def load_by_id(self, session_id: str) -> SessionRecord | None:
        loaded = await self._read(session_id)
        return loaded[0] if loaded is not None else None

    async def reload(self, ctx: SessionContext) -> SessionRecord:
        """Read the session's record again (once its lock is held); SessionGone if it ended."""
        loaded = await self._read(ctx.record.id)
        if loaded is None:
            raise SessionGone()
        ctx.record, ctx.raw = loaded
        return ctx.record

    async def _read(self, session_id: str) -> tuple[SessionRecord, bytes] | None:
        with tracing.span("store.record.read"):
            raw = await self.store.get_record(self.record_key(session_id))
        if raw is None:
            return None
        record = decode_record(raw)
        return (record, raw) if record is not None else None

    async def create(self, identity: Identity, extra: SessionExtra = NO_EXTRA) -> SessionContext:
        """Start a session with a fresh id (never reuse one across identities: no fixation).

        Every way in comes here, so the per-user limits hold for all of them: ``before_create``
        counts ``[limits] new_sessions_per_user`` (and may refuse, storing nothing), and beyond
        ``[limits] sessions_per_user`` live sessions the user's oldest end (``evicted``).
        """
        if await self.blocked_until(identity.subject) is not None:
            raise SessionRevoked()
        if self.before_create is not None:
            await self.before_create(identity.subject)
        token = token_urlsafe(32)
        now = self.clock()
        record = SessionRecord(
            id=self.session_id(token),
            subject=identity.subject,
            method=identity.method,
            claims=dict(identity.claims),
            created_at=now,
            last_seen=now,
            expires_at=now + self.settings.session.absolute_timeout,
            extra=extra,
            device=_device_of_request(),
        )
        raw = await self.save(record, create=True)
        await self.store.set_add(
            self.user_key(record.subject), record.id, self.settings.session.absolute_timeout
        )
        note(session_id=record.id)  # the request log names the session it started
        await self.lifecycle.emit(
            "session_started", user=record.subject, session_id=record.id, method=record.method
        )
        if await self.blocked_until(identity.subject) is not None:
            # An admin revoke landed meanwhile: it blocks first, then ends what the user's
            # index lists, which may have been just before this session was added to it.
            await self.end(record, "admin_revoked")
            raise SessionRevoked()
        await self._evict_beyond_cap(record)
        return SessionContext(
            record=record, cookie_token=token, identity=identity, is_new=True, raw=raw
        )

    async def _evict_beyond_cap(self, new: SessionRecord) -> None:
        cap = self.settings.limits.sessions_per_user
        if cap <= 0:
            return
        live = await self.sessions_of(new.subject)
        if len(live) <= cap:
            return
        # Oldest first; instances racing here pick the same ones, and ending twice is harmless.
        older = sorted((r for r in live if r.id != new.id), key=lambda r: (r.created_at, r.id))
        for record in older[: len(live) - cap]:
            await self.end(record, "evicted")

    def ttl(self, record: SessionRecord) -> float:
        now = self.clock()
        return max(1.0, min(float(self.settings.session.idle_timeout), record.expires_at - now))

    def tombstone_ttl(self) -> float:
        # Longer than any request in flight can take: a record lives at most idle_timeout
        # without a write, and every write checks the tombstone.
        return float(self.settings.session.idle_timeout)

    async def save(
        self, record: SessionRecord, *, fence: Lease | None = None, create: bool = False
    ) -> bytes:
        """Write the record back; raise SessionGone if it ended meanwhile (nothing is written).

        With ``fence`` (the session's lock, held), a lease that lapsed raises LeaseLost.
        Return the bytes written.
        """
        raw = encode_record(record)
        with tracing.span("store.record.write"):
            written = await self.store.put_record(
                self.record_key(record.id),
                raw,
                self.ttl(record),
                tombstone=self.tombstone_key(record.id),
                fence=fence,
                create=create,
            )
        if not written:
            raise SessionGone()
        return raw

    async def update(
        self,
        ctx: SessionContext,
        change: Callable[[SessionRecord], _T],
        *,
        fence: Lease | None = None,
        attempts: int = MAX_SWAPS,
    ) -> _T:
        """Apply ``change`` to the session's record and write it, in one store step that checks
        the record is still the one read: if another request wrote it meanwhile, ``change`` runs
        again on the record now stored, so no request's write is lost and none waits for a lock.

        ``change`` must be a function of the record alone (it may run more than once) and may
        raise to write nothing. Raise SessionGone once the session ended (nothing is written);
        with ``fence``, LeaseLost if the lease lapsed.
        """
        record, raw = ctx.record, ctx.raw
        key = self.record_key(record.id)
        for _ in range(attempts):
            result = change(record)
            value = encode_record(record)
            swap = partial(self.store.swap_record, key, raw, value, self.ttl(record), fence=fence)
            try:
                with tracing.span("store.record.write"):
                    outcome = await swap()
            except LeaseLost:
                raise
            except StoreUnavailable:
                # The write may have been applied and only its reply lost (a timeout): never
                # guess. The same swap again, on the store's next connection, tells: it finds
                # this very value (written then), or what was read (written now, and the first
                # can no longer apply), or another's write (which ``change`` runs again on).
                # If this one fails too, the 503 stands.
                outcome = await swap()
                if isinstance(outcome, Changed) and outcome.current == value:
                    outcome = True
            if outcome is True:
                ctx.record, ctx.raw = record, value
                return result
            if outcome is False:
                raise SessionGone()
            current = decode_record(outcome.current)
            if current is None:
                raise SessionGone()
            record, raw = current, outcome.current
        raise SessionBusy()

    async def end(self, record: SessionRecord, reason: str, **fields: Any) -> bool:
        """End the session now, whatever is in flight: tombstone it, delete the record (and
        with it the sealed Sentifyd tokens), drop it from the user's index and record why.

        Tell whether it was still live (an ending already done is not recorded twice).
        """
        ended = await self.store.end_record(
            self.record_key(record.id), self.tombstone_key(record.id), self.tombstone_ttl()
        )
        note(session_ended=True)  # the response clears this visitor's cookie
        await self.store.set_remove(self.user_key(record.subject), record.id)
        for forget in self.on_end:
            await forget(record)
        if ended:
            await self.lifecycle.emit(
                "session_ended", user=record.subject, session_id=record.id, reason=reason, **fields
            )
        return ended

    async def sessions_of(self, subject: str) -> list[SessionRecord]:
        records = []
        for session_id in sorted(await self.store.set_members(self.user_key(subject))):
            record = await self.load_by_id(session_id)
            if record is None:
                await self.store.set_remove(self.user_key(subject), session_id)
            else:
                records.append(record)
        return records

    # --- revocation ---------------------------------------------------------------------------

    def block_key(self, subject: str) -> str:
        return self.store.key("blocked", subject)

    async def block(self, subject: str, seconds: int) -> float:
        """Refuse new sessions to ``subject`` for ``seconds``; return when the block ends.

        Ending a user's sessions alone would not stop them: their site login is still valid,
        so the next token request would start a fresh session.
        """
        until = self.clock() + seconds
        await self.store.set(self.block_key(subject), msgspec.to_builtins(Block(until)), seconds)
        return until

    async def blocked_until(self, subject: str) -> float | None:
        data = await self.store.get(self.block_key(subject))
        if data is None:
            return None
        try:
            block = msgspec.convert(data, Block)
        except msgspec.ValidationError:
            return None  # not a block this bridge wrote
        # The store's TTL uses the real clock; the until check keeps a test clock honest.
        if block.until <= self.clock():
            return None
        return block.until

    async def unblock(self, subject: str) -> None:
        await self.store.delete(self.block_key(subject))

    # --- sealed tokens ----------------------------------------------------------------------

    def open_tokens(self, ctx: SessionContext, record: SessionRecord) -> dict[str, TokenEntry]:
        if record.sealed:
            plain = self.sealer.open_raw(ctx.cookie_token, record.id, record.sealed)
        elif record.tokens:
            plain = self.sealer.open_bytes(ctx.cookie_token, record.id, record.tokens)
        else:
            return {}
        if plain is None:
            return {}
        try:
            return _decode_tokens(plain)
        except msgspec.DecodeError:
            return {}

    def seal_tokens(
        self, ctx: SessionContext, record: SessionRecord, tokens: dict[str, TokenEntry]
    ) -> None:
        record.tokens = None
        record.sealed = (
            self.sealer.seal_raw(ctx.cookie_token, record.id, _encode(tokens)) if tokens else None
        )

    def seal_provider_tokens(
        self, cookie_token: str, session_id: str, tokens: ProviderTokens
    ) -> str:
        """Seal an OIDC provider's tokens for the session (kept in ``ProviderSession.tokens``)."""
        return self.sealer.seal_bytes(cookie_token, session_id, _encode(tokens))

    def open_provider_tokens(
        self, cookie_token: str, session_id: str, sealed: str
    ) -> ProviderTokens:
        """Return the provider tokens sealed for the session; none if absent or not its own."""
        plain = self.sealer.open_bytes(cookie_token, session_id, sealed) if sealed else None
        try:
            return _decode_provider_tokens(plain) if plain is not None else NO_PROVIDER_TOKENS
        except msgspec.DecodeError:
            return NO_PROVIDER_TOKENS
