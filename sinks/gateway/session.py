"""The websocket side: one session per desk, and the policies applied across them.

The fan-out never awaits a client: it appends to the session's queue and wakes the
session's writer task. A session whose queued bytes (plus its socket's write buffer) pass
``max_send_buffer`` is disconnected with close code 4008 "slow consumer"; the others are
not affected.

Ticks are conflated: the feed offers them to ``Sessions.ticks`` (latest per symbol), and
every ``conflation_ms`` the timer hands them to each session. A session whose writer has
not caught up keeps conflating in its own pending map instead of queueing more. Record
breaks and divergence windows are never conflated nor dropped.

A session that subscribed with ``confirmed_only`` is passed over for every provisional or
retracted signal event, live, in replays and in snapshots: it sees a signal once, exact.

A session's subscription names at most ``max_symbols_per_client`` symbols (subscription.py
says why); a message past it gets the error frame ``too_many_symbols``, changes nothing and
is counted, and the connection goes on as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from sinks.gateway.access import Access
from sinks.gateway.config import GatewayConfig
from sinks.gateway.conflation import Conflator, SeqSet
from sinks.gateway.protocol import (
    CLOSE_SLOW_CONSUMER,
    KINDS,
    SUB_TO_TYPE,
    TOO_MANY_SYMBOLS,
    Delta,
    Heartbeat,
    ProtocolError,
    SnapshotRequest,
    Subscribe,
    Unsubscribe,
    error_frame,
    heartbeat_frame,
    parse_message,
)
from sinks.gateway.state import BoardState, SignalLog
from sinks.gateway.subscription import Subscription
from tickstream import metrics

log = logging.getLogger(__name__)

_FRAME_TYPES = (*(SUB_TO_TYPE[k] for k in KINDS), "snapshot", "heartbeat", "error", "control")
_SENT = {t: metrics.GATEWAY_MESSAGES_SENT.labels(t) for t in _FRAME_TYPES}
_LATENCY = {SUB_TO_TYPE[k]: metrics.GATEWAY_SEND_LATENCY.labels(SUB_TO_TYPE[k]) for k in KINDS}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Session:
    """One connected desk: what it asked for, what is queued for it, what it already has."""

    __slots__ = (
        "hub",
        "ws",
        "access",
        "sub",
        "queue",
        "queued_bytes",
        "credit",
        "pending",
        "sent_signals",
        "wake",
        "closed",
        "writer",
        "ticks_on",
        "in_snapshot",
        "confirmed_only",
        "capped",
    )

    def __init__(self, hub: Sessions, ws: ServerConnection, access: Access) -> None:
        self.hub = hub
        self.ws = ws
        self.access = access
        self.sub = Subscription(hub.config.max_symbols_per_client)
        # (data, created_ms or None, frame type, is a response to the client's own request)
        self.queue: deque[tuple[bytes, int | None, str, bool]] = deque()
        self.queued_bytes = 0
        self.credit = 0  # queued bytes of responses (snapshots, replays): not held against it
        self.pending = Conflator()  # ticks held back while the writer is behind
        self.sent_signals = SeqSet()
        self.wake = asyncio.Event()
        self.closed = False
        self.writer: asyncio.Task[None] | None = None
        self.ticks_on = False
        # ticks not yet flushed when the client's snapshot was taken: already in it
        self.in_snapshot: dict[str, Delta] = {}
        self.confirmed_only = False  # only confirmed signal events (subscribe's flag)
        self.capped = False  # told too_many_symbols already (logged once per connection)

    def wants(self, kind: str, key: str) -> bool:
        return self.sub.wants(kind, key) and self.access.allows(key)

    def push(self, delta: Delta) -> None:
        """Queue a live delta (never awaits); may disconnect the client as a slow consumer."""
        if self.closed:
            return
        hub = self.hub
        if delta.seq:
            sent = self.sent_signals
            if delta.seq in sent:
                return
            sent.add(delta.seq)
            if not delta.seq & 0xFFF:  # now and then, forget what the log has evicted
                sent.trim(hub.log.oldest_seq)
        data = delta.data()
        self.queue.append((data, delta.created_ms, SUB_TO_TYPE[delta.kind], False))
        self.queued_bytes += len(data)
        hub.burst += len(data)
        self.wake.set()
        buffered = self.queued_bytes - self.credit + self.ws.transport.get_write_buffer_size()
        if buffered > hub.config.max_send_buffer:
            hub.kick_slow(self, buffered)

    def respond(self, data: bytes, frame_type: str) -> None:
        """Queue a response to the client's own request (snapshot, replay, error...)."""
        if self.closed:
            return
        self.queue.append((data, None, frame_type, True))
        self.queued_bytes += len(data)
        self.credit += len(data)
        self.wake.set()

    async def write_loop(self) -> None:
        ws, queue = self.ws, self.queue
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self.wake.wait()
                self.wake.clear()
                while queue:
                    data, created_ms, frame_type, response = queue.popleft()
                    n = len(data)
                    self.queued_bytes -= n
                    if response:
                        self.credit -= n
                    await ws.send(data, text=True)
                    _SENT[frame_type].inc()
                    if created_ms is not None:
                        _LATENCY[frame_type].observe(max(0.0, time.time() - created_ms / 1000))


class Sessions:
    """Every connected session: fan-out, tick conflation, heartbeats, slow clients, requests."""

    def __init__(
        self, config: GatewayConfig, state: BoardState, log: SignalLog, counts: dict[str, int]
    ) -> None:
        self.config = config
        self.state = state
        self.log = log
        self.counts = counts  # the gateway's counters, shared with the feed
        self.active: set[Session] = set()
        self.ticks = Conflator()  # the feed offers ticks here; the timer hands them out
        self.closing: set[asyncio.Task[None]] = set()
        self.burst = 0  # bytes queued to clients since the feed last yielded
        self.client_superseded = 0  # ticks conflated in sessions' own pending maps
        self._reported_superseded = 0

    def fanout(self, delta: Delta) -> None:
        kind, key = delta.kind, delta.key
        unconfirmed = delta.unconfirmed
        for client in self.active:
            if client.closed or (unconfirmed and client.confirmed_only):
                continue
            if client.wants(kind, key):
                client.push(delta)

    # ------------------------------------------------------------------ timers

    async def tick_loop(self) -> None:
        """Every conflation interval: the latest ticks to each session; heartbeats too."""
        loop = asyncio.get_running_loop()
        interval = self.config.conflation_ms / 1000 if self.config.conflation_ms else 1.0
        next_heartbeat = loop.time() + self.config.heartbeat_s
        next_run = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_run - loop.time()))
            next_run = max(next_run + interval, loop.time())
            if self.config.conflation_ms:
                self._flush_ticks()
            if loop.time() >= next_heartbeat:
                next_heartbeat += self.config.heartbeat_s
                frame = heartbeat_frame(_now_ms())
                for client in self.active:
                    client.respond(frame, "heartbeat")

    def _flush_ticks(self) -> None:
        items = self.ticks.drain()
        superseded = self.ticks.superseded
        if superseded > self._reported_superseded:
            metrics.GATEWAY_TICKS_CONFLATED.inc(superseded - self._reported_superseded)
            self._reported_superseded = superseded
        for client in self.active:
            if client.closed or not client.ticks_on:
                continue
            if client.in_snapshot:
                seen, client.in_snapshot = client.in_snapshot, {}
                self._flush_client(client, [d for d in items if seen.get(d.key) is not d])
            elif items or client.pending:
                self._flush_client(client, items)

    def _flush_client(self, client: Session, items: list[Delta]) -> None:
        """Hand a client this interval's ticks; one still writing keeps conflating them."""
        wants = client.wants
        if client.queue or client.pending:
            pending = client.pending
            for d in items:
                if wants("ticks", d.key) and pending.offer(d.key, d):
                    self.client_superseded += 1
                    metrics.GATEWAY_TICKS_CONFLATED.inc()
            if not client.queue:
                for d in pending.drain():
                    client.push(d)
        else:
            for d in items:
                if wants("ticks", d.key):
                    client.push(d)

    # ------------------------------------------------------------------ slow clients

    def kick_slow(self, client: Session, buffered: int) -> None:
        if client.closed:
            return
        client.closed = True
        dropped = len(client.pending) + sum(1 for e in client.queue if e[2] == "tick")
        client.queue.clear()
        client.pending.drain()
        client.queued_bytes = client.credit = 0
        self.counts["slow_disconnects"] += 1
        self.counts["ticks_dropped"] += dropped
        metrics.GATEWAY_SLOW_DISCONNECTS.inc()
        metrics.GATEWAY_TICKS_DROPPED.inc(dropped)
        if client.writer is not None:
            client.writer.cancel()
        reason = f"slow consumer: over {self.config.max_send_buffer} bytes buffered"
        log.warning(
            "disconnecting %s (%s): %d bytes buffered, %d ticks dropped",
            client.ws.remote_address,
            client.access.token_name,
            buffered,
            dropped,
        )
        task = asyncio.ensure_future(self._close(client.ws, CLOSE_SLOW_CONSUMER, reason))
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    async def _close(self, ws: ServerConnection, code: int, reason: str) -> None:
        """Close with a code; a client that does not even read the close frame is cut off."""
        try:
            async with asyncio.timeout(self.config.close_timeout):
                await ws.close(code, reason)
        except TimeoutError:
            ws.transport.abort()

    # ------------------------------------------------------------------ one connection

    async def handle(self, ws: ServerConnection) -> None:
        """The websocket handler; the handshake (http.py) has put the token's access on ws."""
        access: Access = ws.tickstream_access  # type: ignore[attr-defined]
        client = Session(self, ws, access)
        self.active.add(client)
        self.counts["connections"] += 1
        metrics.GATEWAY_CLIENTS.inc()
        client.writer = asyncio.create_task(client.write_loop())
        try:
            async for raw in ws:
                if not client.closed:
                    self._on_message(client, raw)
        except ConnectionClosed:
            pass
        finally:
            client.closed = True
            self.active.discard(client)
            metrics.GATEWAY_CLIENTS.dec()
            client.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await client.writer

    def _on_message(self, client: Session, raw: str | bytes) -> None:
        # a client asking for more while not reading what it has is a slow consumer too
        buffered = client.queued_bytes + client.ws.transport.get_write_buffer_size()
        if buffered > self.config.max_send_buffer:
            self.kick_slow(client, buffered)
            return
        try:
            cmd = parse_message(raw, self.config.max_symbols_per_client)
            if isinstance(cmd, Subscribe):
                client.access.check(cmd.symbols)
                client.sub.subscribe(cmd.symbols, cmd.kinds)
                if cmd.confirmed_only is not None:
                    client.confirmed_only = cmd.confirmed_only
                client.ticks_on = "ticks" in client.sub.kinds()
                self._send_snapshot(client, cmd.history)
                if cmd.since_ms is not None:
                    self._replay(client, cmd.since_ms)
            elif isinstance(cmd, Unsubscribe):
                client.sub.unsubscribe(cmd.symbols, cmd.kinds)
                client.ticks_on = "ticks" in client.sub.kinds()
                client.respond(
                    orjson.dumps({"type": "unsubscribed", "subscription": client.sub.describe()}),
                    "control",
                )
            elif isinstance(cmd, SnapshotRequest):
                self._send_snapshot(client, cmd.history)
            elif isinstance(cmd, Heartbeat):
                client.respond(heartbeat_frame(_now_ms()), "heartbeat")
        except ProtocolError as exc:
            self.counts["client_errors"] += 1
            metrics.GATEWAY_CLIENT_ERRORS.labels(exc.error).inc()
            if exc.error == TOO_MANY_SYMBOLS:
                self._over_cap(client)
            client.respond(error_frame(exc.error, exc.detail), "error")

    def _over_cap(self, client: Session) -> None:
        """Count a refusal at the symbol cap; log the first of a connection, for operators.

        Once per connection: a client retrying in a loop must not flood the log. The token's
        name (token#N), never the token, says which desk it was.
        """
        self.counts["subscriptions_refused"] += 1
        if not client.capped:
            client.capped = True
            log.warning(
                "%s (%s) asked for more than %d symbols: refused (too_many_symbols)",
                client.ws.remote_address,
                client.access.token_name,
                self.config.max_symbols_per_client,
            )

    def _send_snapshot(self, client: Session, history: bool = False) -> None:
        client.in_snapshot = self.ticks.pending()
        snap = self.state.snapshot(client.wants, _now_ms(), history, client.confirmed_only)
        snap["subscription"] = client.sub.describe()
        snap["confirmed_only"] = client.confirmed_only
        client.respond(orjson.dumps(snap), "snapshot")

    def _replay(self, client: Session, since_ms: int) -> None:
        """Signals since ``since_ms`` from the log, in the same loop step as live: no gap."""
        count = 0
        sent = client.sent_signals
        sent.trim(self.log.oldest_seq)
        confirmed_only = client.confirmed_only
        for delta in self.log.since(since_ms):
            if delta.seq in sent or not client.wants(delta.kind, delta.key):
                continue
            if confirmed_only and delta.unconfirmed:
                continue
            sent.add(delta.seq)
            client.respond(delta.data(), SUB_TO_TYPE[delta.kind])
            count += 1
        client.respond(
            orjson.dumps(
                {
                    "type": "replayed",
                    "since_ms": since_ms,
                    "count": count,
                    "complete": self.log.complete_since(since_ms),
                    "signal_seq": self.log.head,
                }
            ),
            "control",
        )
