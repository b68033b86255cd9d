"""The desk feed gateway: Kafka (ticks, aggregates, signals) in, websockets out.

One aiokafka consumer, assigned every partition of the three topics (no consumer group:
each gateway instance sees everything), feeds ``BoardState`` and ``SignalLog`` and fans
each message out to the clients that want it. The fan-out never awaits a client: it
appends to the client's queue and wakes the client's writer task. A client whose queued
bytes (plus its socket's write buffer) pass ``max_send_buffer`` is disconnected with close
code 4008 "slow consumer"; the others are not affected.

Ticks are conflated: the consumer keeps the latest tick per symbol, and every
``conflation_ms`` the flush task hands them to each client. A client whose writer has not
caught up keeps conflating in its own pending map instead of queueing more. Record breaks
and divergence windows are never conflated nor dropped.

The same port answers plain HTTP: ``/`` (the live board), ``/healthz``, ``/metrics``
(Prometheus) and ``/stats`` (JSON counters).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import ssl as ssl_module
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from sinks.gateway.protocol import (
    CLOSE_SLOW_CONSUMER,
    KINDS,
    ROW_KIND_TO_SUB,
    SIGNAL_KINDS,
    SUB_TO_TYPE,
    Access,
    Conflator,
    Delta,
    Heartbeat,
    ProtocolError,
    SeqSet,
    SnapshotRequest,
    Subscribe,
    Subscription,
    TokenTable,
    Unsubscribe,
    error_frame,
    heartbeat_frame,
    parse_message,
    row_frame,
    row_key,
)
from sinks.gateway.state import BoardState, SignalLog
from tickstream import metrics
from tickstream.topics import Topics

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
_BURST_BYTES = 64 << 10
_FRAME_TYPES = (*(SUB_TO_TYPE[k] for k in KINDS), "snapshot", "heartbeat", "error", "control")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    kafka_bootstrap: str
    namespace: str
    tokens: TokenTable
    host: str = "127.0.0.1"
    port: int = 8765  # 0 = any free port (tests)
    ssl: ssl_module.SSLContext | None = None
    conflation_ms: int = 250  # 0 = every tick to every client
    max_send_buffer: int = 2 << 20  # bytes queued for one client before it is disconnected
    max_message_bytes: int = 64 << 10  # largest client frame accepted (else close 1009)
    heartbeat_s: float = 15.0
    backfill: int = 5_000  # messages per partition of ticks/aggregates read at start
    replay_capacity: int = 200_000  # signals kept for since_ms replays
    close_timeout: float = 10.0
    partitions: int = 3  # of the topics, when the gateway has to create them
    level_steps: Mapping[str, Sequence[float]] | None = None  # as the processor's (next levels)
    known_aths: Mapping[str, tuple[float, int]] = field(default_factory=dict)  # (price, ts_ms)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0-65535")
        if self.conflation_ms < 0:
            raise ValueError("conflation_ms must be >= 0")
        if self.max_send_buffer < 1024:
            raise ValueError("max_send_buffer must be >= 1024 bytes")
        if self.max_message_bytes < 256:
            raise ValueError("max_message_bytes must be >= 256 bytes")
        if self.heartbeat_s <= 0:
            raise ValueError("heartbeat_s must be > 0")
        if self.backfill < 0:
            raise ValueError("backfill must be >= 0")
        if self.replay_capacity <= 0:
            raise ValueError("replay_capacity must be > 0")


def ssl_context(cert: str | Path, key: str | Path | None = None) -> ssl_module.SSLContext:
    """A server TLS context from a PEM certificate chain and key."""
    ctx = ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl_module.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_SENT = {t: metrics.GATEWAY_MESSAGES_SENT.labels(t) for t in _FRAME_TYPES}
_LATENCY = {SUB_TO_TYPE[k]: metrics.GATEWAY_SEND_LATENCY.labels(SUB_TO_TYPE[k]) for k in KINDS}


class _Client:
    __slots__ = (
        "gateway",
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
    )

    def __init__(self, gateway: Gateway, ws: ServerConnection, access: Access) -> None:
        self.gateway = gateway
        self.ws = ws
        self.access = access
        self.sub = Subscription()
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

    def wants(self, kind: str, key: str) -> bool:
        return self.sub.wants(kind, key) and self.access.allows(key)

    def push(self, delta: Delta) -> None:
        """Queue a live delta (never awaits); may disconnect the client as a slow consumer."""
        if self.closed:
            return
        if delta.seq:
            sent = self.sent_signals
            if delta.seq in sent:
                return
            sent.add(delta.seq)
            if not delta.seq & 0xFFF:  # now and then, forget what the log has evicted
                sent.trim(self.gateway.log.oldest_seq)
        data = delta.data()
        self.queue.append((data, delta.created_ms, SUB_TO_TYPE[delta.kind], False))
        self.queued_bytes += len(data)
        self.gateway._burst += len(data)
        self.wake.set()
        buffered = self.queued_bytes - self.credit + self.ws.transport.get_write_buffer_size()
        if buffered > self.gateway.config.max_send_buffer:
            self.gateway._kick_slow(self, buffered)

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


class Gateway:
    """The running gateway: ``async with Gateway(config) as gw: ...`` or start()/stop()."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.topics = Topics(config.namespace)
        self.state = BoardState(config.level_steps)
        for symbol, (price, ts_ms) in config.known_aths.items():  # the processor's record seeds
            self.state.ath[symbol] = {"price": price, "ts_ms": ts_ms, "source": "seed"}
        self.log = SignalLog(config.replay_capacity)
        self.ticks = Conflator()
        self.clients: set[_Client] = set()
        self.ready = asyncio.Event()  # caught up with the topics' ends as of start-up
        self.counts = {
            "ticks_in": 0,
            "rows_in": 0,
            "signals_in": 0,
            "duplicate_signals": 0,
            "undecodable": 0,
            "slow_disconnects": 0,
            "ticks_dropped": 0,
            "refused": 0,
            "client_errors": 0,
            "connections": 0,
        }
        self._roles = {
            self.topics.ticks: "ticks",
            self.topics.aggregates: "aggregates",
            self.topics.signals: "signals",
        }
        self._board = (STATIC / "board.html").read_bytes().decode()
        self._consumer: AIOKafkaConsumer | None = None
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._initial_end: dict[TopicPartition, int] = {}
        self._reported_superseded = 0
        self._client_superseded = 0
        self._burst = 0  # bytes queued to clients since the consumer last yielded

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self._start_consumer()
        self._tasks.append(asyncio.create_task(self._consume(), name="gateway-consume"))
        self._tasks.append(asyncio.create_task(self._tick_loop(), name="gateway-flush"))
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            ssl=self.config.ssl,
            compression=None,  # per-client deflate costs more CPU than the bytes it saves
            max_size=self.config.max_message_bytes,
            close_timeout=self.config.close_timeout,
            server_header=None,
        )
        scheme = "https" if self.config.ssl else "http"
        log.info(
            "gateway on %s://%s:%d/ (board), websocket %s://%s:%d/ws?token=...",
            scheme,
            self.config.host,
            self.port,
            "wss" if self.config.ssl else "ws",
            self.config.host,
            self.port,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.config.close_timeout + 1):
                    await self._server.wait_closed()
        for task in [*self._tasks, *self._closing]:
            task.cancel()
        for task in [*self._tasks, *self._closing]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def stats(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            **self.counts,
            "ready": self.ready.is_set(),
            "clients": len(self.clients),
            "ticks_conflated": self.ticks.superseded + self._client_superseded,
            "signal_log": len(self.log),
            "signal_head": self.log.head,
            "cpu_user_s": usage.ru_utime,
            "cpu_system_s": usage.ru_stime,
            "max_rss_mb": usage.ru_maxrss / 1024,
        }

    # ------------------------------------------------------------------ Kafka side

    async def _start_consumer(self) -> None:
        from tickstream.kafka_io import ensure_topics
        from tickstream.settings import Settings

        await ensure_topics(
            Settings(
                kafka_bootstrap=self.config.kafka_bootstrap,
                namespace=self.config.namespace,
                partitions=self.config.partitions,
            )
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.config.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{self.config.namespace}.gateway",
        )
        await consumer.start()
        try:
            tps = await self._partitions()
            consumer.assign(tps)
            begin = await consumer.beginning_offsets(tps)
            end = await consumer.end_offsets(tps)
            for tp in tps:
                if self._roles[tp.topic] == "signals":
                    start = begin[tp]  # the whole history: replays come from it
                else:
                    start = max(begin[tp], end[tp] - self.config.backfill)
                consumer.seek(tp, start)
            self._initial_end = {tp: end[tp] for tp in tps if end[tp] > begin[tp]}
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        if not self._initial_end:
            self.ready.set()

    async def _partitions(self) -> list[TopicPartition]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.config.kafka_bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(list(self._roles))
        finally:
            await admin.close()
        return [
            TopicPartition(topic["topic"], part["partition"])
            for topic in described
            for part in sorted(topic["partitions"], key=lambda p: p["partition"])
        ]

    async def _consume(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        roles = self._roles
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gateway: Kafka fetch failed; retrying")
                await asyncio.sleep(1)
                continue
            for tp, messages in batches.items():
                role = roles[tp.topic]
                for msg in messages:
                    self._ingest(role, msg.value, msg.timestamp)
                    if self._burst > _BURST_BYTES:
                        # let the writers (and the sockets) drain a burst before the next one:
                        # a client is slow when it cannot keep up, not when one fetch is big
                        self._burst = 0
                        await asyncio.sleep(0)
            if not self.ready.is_set():
                await self._check_ready(consumer)

    async def _check_ready(self, consumer: AIOKafkaConsumer) -> None:
        for tp, end in list(self._initial_end.items()):
            if await consumer.position(tp) >= end:
                del self._initial_end[tp]
        if not self._initial_end:
            log.info("gateway caught up: %d signals in the replay log", len(self.log))
            self.ready.set()

    def _ingest(self, role: str, value: bytes | None, created_ms: int | None) -> None:
        try:
            doc = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            self._undecodable(role)
            return
        if role == "ticks":
            if not isinstance(doc, list):
                if not (isinstance(doc, dict) and "control" in doc):
                    self._undecodable(role)
                return
            self._ingest_ticks(doc, created_ms)
            return
        rows = doc if isinstance(doc, list) else [doc]
        for row in rows:
            if not isinstance(row, dict) or "control" in row:
                if not isinstance(row, dict):
                    self._undecodable(role)
                continue
            kind = ROW_KIND_TO_SUB.get(row.get("kind"))  # type: ignore[arg-type]
            if kind is None or kind == "ticks":
                self._undecodable(role)
                continue
            try:
                key = row_key(kind, row)
                self.state.apply_row(kind, row)  # raises on a malformed row: nothing logged
                if kind in SIGNAL_KINDS:
                    delta = self.log.add(
                        kind,
                        row,
                        lambda seq, k=kind, r=row, key=key: Delta(
                            k, key, created_ms, doc=row_frame(k, r), seq=seq
                        ),
                    )
                    if delta is None:
                        self.counts["duplicate_signals"] += 1
                        continue
                    self.counts["signals_in"] += 1
                else:
                    delta = Delta(kind, key, created_ms, doc=row_frame(kind, row))
                    self.counts["rows_in"] += 1
            except (KeyError, TypeError, ValueError):
                self._undecodable(role)
                continue
            self._fanout(delta)

    def _ingest_ticks(self, batch: list[Any], created_ms: int | None) -> None:
        conflate = self.config.conflation_ms > 0
        state, offer = self.state, self.ticks.offer
        n = 0
        for row in batch:
            if (
                not isinstance(row, list)
                or len(row) < 3
                or not isinstance(row[0], str)
                or not isinstance(row[1], int)
                or not isinstance(row[2], int | float)
            ):
                self._undecodable("ticks")
                continue
            state.apply_tick(row)
            n += 1
            delta = Delta("ticks", row[0], created_ms, row=row)
            if conflate:
                offer(row[0], delta)
            else:
                self._fanout(delta)
        self.counts["ticks_in"] += n

    def _undecodable(self, role: str) -> None:
        self.counts["undecodable"] += 1
        metrics.GATEWAY_UNDECODABLE.labels(role).inc()

    def _fanout(self, delta: Delta) -> None:
        kind, key = delta.kind, delta.key
        for client in self.clients:
            if not client.closed and client.wants(kind, key):
                client.push(delta)

    # ------------------------------------------------------------------ timers

    async def _tick_loop(self) -> None:
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
                for client in self.clients:
                    client.respond(frame, "heartbeat")

    def _flush_ticks(self) -> None:
        items = self.ticks.drain()
        superseded = self.ticks.superseded
        if superseded > self._reported_superseded:
            metrics.GATEWAY_TICKS_CONFLATED.inc(superseded - self._reported_superseded)
            self._reported_superseded = superseded
        for client in self.clients:
            if client.closed or not client.ticks_on:
                continue
            if client.in_snapshot:
                seen, client.in_snapshot = client.in_snapshot, {}
                self._flush_client(client, [d for d in items if seen.get(d.key) is not d])
            elif items or client.pending:
                self._flush_client(client, items)

    def _flush_client(self, client: _Client, items: list[Delta]) -> None:
        """Hand a client this interval's ticks; one still writing keeps conflating them."""
        wants = client.wants
        if client.queue or client.pending:
            pending = client.pending
            for d in items:
                if wants("ticks", d.key) and pending.offer(d.key, d):
                    self._client_superseded += 1
                    metrics.GATEWAY_TICKS_CONFLATED.inc()
            if not client.queue:
                for d in pending.drain():
                    client.push(d)
        else:
            for d in items:
                if wants("ticks", d.key):
                    client.push(d)

    # ------------------------------------------------------------------ clients

    def _kick_slow(self, client: _Client, buffered: int) -> None:
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
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, ws: ServerConnection, code: int, reason: str) -> None:
        """Close with a code; a client that does not even read the close frame is cut off."""
        try:
            async with asyncio.timeout(self.config.close_timeout):
                await ws.close(code, reason)
        except TimeoutError:
            ws.transport.abort()

    async def _handle(self, ws: ServerConnection) -> None:
        access: Access = ws.tickstream_access  # type: ignore[attr-defined]
        client = _Client(self, ws, access)
        self.clients.add(client)
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
            self.clients.discard(client)
            metrics.GATEWAY_CLIENTS.dec()
            client.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await client.writer

    def _on_message(self, client: _Client, raw: str | bytes) -> None:
        # a client asking for more while not reading what it has is a slow consumer too
        buffered = client.queued_bytes + client.ws.transport.get_write_buffer_size()
        if buffered > self.config.max_send_buffer:
            self._kick_slow(client, buffered)
            return
        try:
            cmd = parse_message(raw)
            if isinstance(cmd, Subscribe):
                client.access.check(cmd.symbols)
                client.sub.subscribe(cmd.symbols, cmd.kinds)
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
            client.respond(error_frame(exc.error, exc.detail), "error")

    def _send_snapshot(self, client: _Client, history: bool = False) -> None:
        client.in_snapshot = self.ticks.pending()
        snap = self.state.snapshot(client.wants, _now_ms(), history)
        snap["subscription"] = client.sub.describe()
        client.respond(orjson.dumps(snap), "snapshot")

    def _replay(self, client: _Client, since_ms: int) -> None:
        """Signals since ``since_ms`` from the log, in the same loop step as live: no gap."""
        count = 0
        sent = client.sent_signals
        sent.trim(self.log.oldest_seq)
        for delta in self.log.since(since_ms):
            if delta.seq in sent or not client.wants(delta.kind, delta.key):
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

    # ------------------------------------------------------------------ plain HTTP

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return self._http(connection, parts.path)
        if parts.path not in ("/", "/ws"):
            return connection.respond(HTTPStatus.NOT_FOUND, "websocket endpoint is /ws\n")
        token = parse_qs(parts.query).get("token", [None])[0]
        if token is None:
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                token = auth[len("Bearer ") :].strip()
        if not token:
            self.counts["refused"] += 1
            metrics.GATEWAY_REFUSED.labels("missing").inc()
            return connection.respond(
                HTTPStatus.UNAUTHORIZED, "token required: /ws?token=... or Authorization: Bearer\n"
            )
        access = self.config.tokens.lookup(token)
        if access is None:
            self.counts["refused"] += 1
            metrics.GATEWAY_REFUSED.labels("unknown").inc()
            return connection.respond(HTTPStatus.FORBIDDEN, "unknown token\n")
        connection.tickstream_access = access  # type: ignore[attr-defined]
        return None

    def _http(self, connection: ServerConnection, path: str) -> Response:
        if path in ("/", "/board", "/board.html"):
            return _typed(
                connection.respond(HTTPStatus.OK, self._board), "text/html; charset=utf-8"
            )
        if path == "/healthz":
            if self.ready.is_set():
                return connection.respond(HTTPStatus.OK, "ok\n")
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "catching up with Kafka\n")
        if path == "/metrics":
            return _typed(
                connection.respond(HTTPStatus.OK, generate_latest().decode()), CONTENT_TYPE_LATEST
            )
        if path == "/stats":
            body = orjson.dumps(self.stats(), option=orjson.OPT_INDENT_2).decode()
            return _typed(connection.respond(HTTPStatus.OK, body), "application/json")
        return connection.respond(HTTPStatus.NOT_FOUND, "not found: try / (board) or /ws\n")


def _typed(response: Response, content_type: str) -> Response:
    headers: Headers = response.headers
    del headers["Content-Type"]
    headers["Content-Type"] = content_type
    headers["Cache-Control"] = "no-store"
    return response


async def run_gateway(config: GatewayConfig, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set."""
    async with Gateway(config):
        await stop.wait()
