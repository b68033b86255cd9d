"""The gateway live: real websockets clients against a running gateway fed by the real broker.

Each test publishes ticks and rows to its own namespace's topics with aiokafka, in the wire
format of tickstream.contracts, and reads what the clients get. Timeouts only bound a wait
for something that must happen; no assertion is about time.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from sinks.gateway.access import TokenTable
from sinks.gateway.server import Gateway, GatewayConfig, ssl_context
from tests.kafka_fetches import record_fetches
from tickstream.contracts import (
    RecordBreak,
    RollingBreak,
    SignalEvent,
    row_from_doc,
    signal_id,
    spec_for_kind,
)
from tickstream.kafka_io import ensure_topics
from tickstream.settings import Settings
from tickstream.topics import Topics

pytestmark = pytest.mark.kafka

TOKENS = TokenTable.parse_list("desk-token,gold-only:XAU")
WAIT = 30.0  # seconds a wait may take before the test fails (a bound, not a measure)


def tick(symbol: str, ts_ms: int, price: float, seq: int, venue: str | None = None) -> list[Any]:
    return [symbol, ts_ms, price, price - 0.5, price + 0.5, 1.0, venue, seq, ts_ms]


def record_break(symbol: str, record: str, ts_ms: int, price: float, level: float = 0.0) -> dict:
    return {
        "kind": "record_break",
        "symbol": symbol,
        "record": record,
        "ts_ms": ts_ms,
        "price": price,
        "level": level,
        "step": 100.0 if record.startswith("level") else 0.0,
        "prev_ts_ms": None,
        "since_prev_s": None,
        "first_time": 1,
    }


def window(opened: int, closed: int | None = None, metric: str = "ratio") -> dict:
    return {
        "kind": "divergence_window",
        "pair": "XAU/XAG",
        "metric": metric,
        "direction": 1,
        "opened_at_ms": opened,
        "closed_at_ms": closed,
        "open_value": 50.0,
        "peak_value": 51.5,
        "peak_at_ms": opened + 60_000,
        "close_value": None if closed is None else 50.2,
        "z_open_value": 3.1,
        "z_peak": 4.0,
    }


def signal_event(
    row: dict, status: str, recv_ms: int | None = None, reason: str = "", announced: int = 0
) -> dict:
    """The processor's signal_event row about a record/rolling break row (its contract, its id)."""
    typed = row_from_doc(row)
    assert isinstance(typed, (RecordBreak, RollingBreak))
    return SignalEvent(
        id=signal_id(typed),
        status=status,
        signal=typed.kind,
        symbol=typed.key,
        ts_ms=typed.ts_ms,
        price=typed.price,
        recv_ms=recv_ms,
        emitted_ms=int(time.time() * 1000),
        announced=announced,
        reason=reason,
        row=typed.encode().decode(),
    ).to_doc()


class Feed:
    """Publishes to one namespace's topics, as the producers and the processor do."""

    def __init__(self, producer: AIOKafkaProducer, topics: Topics) -> None:
        self.producer = producer
        self.topics = topics

    async def ticks(self, rows: list[list[Any]]) -> None:
        by_symbol: dict[str, list[list[Any]]] = {}
        for row in rows:
            by_symbol.setdefault(row[0], []).append(row)
        for symbol, batch in by_symbol.items():
            await self.producer.send(self.topics.ticks, orjson.dumps(batch), key=symbol.encode())
        await self.producer.flush()

    async def rows(self, rows: list[dict]) -> None:
        for row in rows:
            topic = getattr(self.topics, spec_for_kind(row["kind"]).topic)
            key = str(row.get("symbol") or row.get("pair")).encode()
            await self.producer.send(topic, orjson.dumps(row), key=key)
        await self.producer.flush()

    async def eof(self) -> None:
        control = orjson.dumps({"control": "eof", "run_id": "r", "partition": 0, "partitions": 1})
        for topic in (self.topics.ticks, self.topics.aggregates, self.topics.signals):
            await self.producer.send(topic, control)
        await self.producer.flush()


@pytest.fixture
async def feed(kafka_bootstrap: str, namespace: str) -> AsyncIterator[Feed]:
    # one partition: the test's publishing order is the gateway's consumption order
    await ensure_topics(
        Settings(kafka_bootstrap=kafka_bootstrap, namespace=namespace, partitions=1)
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=0, acks="all")
    await producer.start()
    try:
        yield Feed(producer, Topics(namespace))
    finally:
        await producer.stop()


def config(kafka_bootstrap: str, namespace: str, **changes: Any) -> GatewayConfig:
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka_bootstrap,
        "namespace": namespace,
        "tokens": TOKENS,
        "port": 0,
        "conflation_ms": 50,
        "heartbeat_s": 60.0,
        "partitions": 1,  # one partition: the test's publishing order is the gateway's order
        "close_timeout": 10.0,
    }
    values.update(changes)
    return GatewayConfig(**values)


async def started(cfg: GatewayConfig) -> Gateway:
    gw = Gateway(cfg)
    await gw.start()
    async with asyncio.timeout(WAIT):
        await gw.ready.wait()
    return gw


@pytest.fixture
async def gateway(kafka_bootstrap: str, namespace: str) -> AsyncIterator[Gateway]:
    gw = await started(config(kafka_bootstrap, namespace))
    try:
        yield gw
    finally:
        await gw.stop()


def url(gw: Gateway, token: str | None = "desk-token", scheme: str = "ws") -> str:
    base = f"{scheme}://127.0.0.1:{gw.port}/ws"
    return base if token is None else f"{base}?token={token}"


async def recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        return orjson.loads(await ws.recv())


async def recv_until(
    ws: ClientConnection, done: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Frames up to and including the first for which ``done`` is true."""
    got: list[dict[str, Any]] = []
    while True:
        frame = await recv(ws)
        got.append(frame)
        if done(frame):
            return got


async def subscribe(ws: ClientConnection, **fields: Any) -> dict[str, Any]:
    await ws.send(orjson.dumps({"op": "subscribe", **fields}).decode())
    frame = await recv(ws)
    assert frame["type"] == "snapshot", frame
    return frame


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not predicate():
            await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------- tests


async def test_snapshot_then_deltas(kafka_bootstrap: str, namespace: str, feed: Feed) -> None:
    # history published before the gateway starts: the snapshot is built from it
    await feed.ticks(
        [
            tick("XAU", 1_000, 4990.0, 1),
            tick("XAU", 2_000, 5010.0, 2),
            tick("XAU", 3_000, 5005.0, 3),
        ]
    )
    await feed.ticks([tick("XAG", 1_000, 104.0, 1)])
    await feed.rows(
        [
            {
                "kind": "bar_1m",
                "symbol": "XAU",
                "ts_ms": 0,
                "open": 4990.0,
                "high": 5010.0,
                "low": 4990.0,
                "close": 5005.0,
                "ticks": 3,
            },
            {
                "kind": "rolling_high",
                "symbol": "XAU",
                "window": "52w",
                "ts_ms": 0,
                "high": 5010.0,
                "high_ts_ms": 2_000,
                "low": 3000.0,
                "low_ts_ms": -1,
            },
            record_break("XAU", "ath", 2_000, 5010.0, level=4990.0),
            window(60_000),
        ]
    )
    await feed.eof()  # control messages are ignored
    gw = await started(config(kafka_bootstrap, namespace))
    try:
        async with connect(url(gw)) as ws:
            snap = await subscribe(ws, symbols="*", kinds="*")
            assert snap["ticks"]["XAU"]["price"] == 5005.0
            assert snap["ticks"]["XAG"]["price"] == 104.0
            assert snap["ath"]["XAU"]["price"] == 5010.0 and snap["ath"]["XAU"]["ts_ms"] == 2_000
            assert snap["bars"]["XAU"]["close"] == 5005.0
            assert snap["rolling_highs"]["XAU"]["52w"]["high"] == 5010.0
            assert [w["opened_at_ms"] for w in snap["divergence_windows"]] == [60_000]
            assert snap["levels"]["XAU"]  # the next round level needs the grid
            assert gw.counts["undecodable"] == 0

            # then deltas, live
            await feed.ticks([tick("XAU", 4_000, 5020.0, 4)])
            await feed.rows([record_break("XAU", "ath", 4_000, 5020.0, level=5010.0)])
            await feed.rows([window(60_000, closed=240_000)])
            seen: set[str] = set()
            frames = await recv_until(
                ws,
                lambda f: (
                    seen.add(f.get("type", "") + str(f.get("seq", "")))
                    or {"tick4", "divergence_window"} <= seen
                ),
            )
            # ticks go out at the next conflation flush, signals at once
            assert [f["type"] for f in frames if f["type"] != "tick"] == [
                "record_break",
                "divergence_window",
            ]
            rb = next(f for f in frames if f["type"] == "record_break")
            assert rb["record"] == "ath" and rb["price"] == 5020.0 and rb["created_ms"] > 0
            ticks = [f for f in frames if f["type"] == "tick"]
            assert [(t["symbol"], t["price"], t["seq"]) for t in ticks] == [("XAU", 5020.0, 4)]
            w = next(f for f in frames if f["type"] == "divergence_window")
            assert w["closed_at_ms"] == 240_000

            # the window closed and the ATH moved: a new snapshot says so
            await ws.send('{"op":"snapshot"}')
            snap2 = await recv(ws)
            assert snap2["type"] == "snapshot" and snap2["divergence_windows"] == []
            assert snap2["ath"]["XAU"]["price"] == 5020.0
            await ws.send('{"op":"heartbeat"}')
            assert (await recv(ws))["type"] == "heartbeat"
    finally:
        await gw.stop()


async def test_subscription_filtering(gateway: Gateway, feed: Feed) -> None:
    async with connect(url(gateway)) as a, connect(url(gateway)) as b:
        await subscribe(a, symbols=["XAU"], kinds=["ticks"])
        await subscribe(b, symbols=["XAG"], kinds=["record_breaks", "divergence_windows"])
        await feed.ticks([tick("XAG", 1_000, 100.0, 1)])
        await feed.ticks([tick("XAU", 1_000, 5000.0, 1)])
        await feed.rows(
            [
                record_break("XAU", "level_up", 1_000, 5000.0, level=5000.0),
                record_break("XAG", "level_up", 1_000, 100.0, level=100.0),
                window(60_000),  # XAU/XAG: matches b through XAG
                record_break("XAG", "ath", 2_000, 101.0),  # b's sentinel
            ]
        )
        await feed.ticks([tick("XAG", 2_000, 101.0, 2)])
        await feed.ticks([tick("XAU", 2_000, 5001.0, 2)])  # a's sentinel
        got_a = await recv_until(a, lambda f: f.get("seq") == 2)
        got_b = await recv_until(b, lambda f: f.get("record") == "ath")
        assert {f["type"] for f in got_a} == {"tick"}
        assert {f["symbol"] for f in got_a} == {"XAU"}
        assert [(f["type"], f.get("symbol") or f.get("pair")) for f in got_b] == [
            ("record_break", "XAG"),
            ("divergence_window", "XAU/XAG"),
            ("record_break", "XAG"),
        ]
        # unsubscribe: no more XAU ticks for a; its sentinel is now a heartbeat reply
        await a.send('{"op":"unsubscribe","symbols":["XAU"],"kinds":["ticks"]}')
        ack = await recv_until(a, lambda f: f["type"] == "unsubscribed")
        assert ack[-1]["subscription"] == {}
        ticks_in = gateway.counts["ticks_in"]
        await feed.ticks([tick("XAU", 3_000, 5002.0, 3)])
        await until(lambda: gateway.counts["ticks_in"] == ticks_in + 1)  # past the tick
        await a.send('{"op":"heartbeat"}')
        assert (await recv(a))["type"] == "heartbeat"


async def test_token_refused_and_plain_http(gateway: Gateway) -> None:
    with pytest.raises(InvalidStatus) as missing:
        async with connect(url(gateway, token=None)):
            pass
    assert missing.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as unknown:
        async with connect(url(gateway, token="not-a-token")):
            pass
    assert unknown.value.response.status_code == 403
    # a Bearer header works as well as the query string
    async with connect(
        url(gateway, token=None), additional_headers={"Authorization": "Bearer desk-token"}
    ) as ws:
        await subscribe(ws, symbols="*", kinds=["ticks"])
    assert gateway.counts["refused"] == 2

    def get(path: str) -> tuple[int, str, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{gateway.port}{path}") as r:
                return r.status, r.headers["Content-Type"], r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers["Content-Type"], e.read().decode()

    status, ctype, body = await asyncio.to_thread(get, "/?token=desk-token")
    assert status == 200 and ctype.startswith("text/html") and "<canvas" in body
    assert (await asyncio.to_thread(get, "/healthz"))[0] == 200
    status, _, body = await asyncio.to_thread(get, "/metrics")
    assert status == 200 and "tickstream_gateway_refused_total" in body
    status, _, body = await asyncio.to_thread(get, "/stats?token=desk-token")
    assert status == 200 and orjson.loads(body)["refused"] == 2  # /stats needs a token:
    assert (await asyncio.to_thread(get, "/stats"))[0] == 401  # test_gateway_limits.py
    assert (await asyncio.to_thread(get, "/nope"))[0] == 404


async def test_symbol_not_allowed(gateway: Gateway, feed: Feed) -> None:
    await feed.ticks([tick("XAU", 1_000, 5000.0, 1), tick("XAG", 1_000, 100.0, 1)])
    await until(lambda: gateway.counts["ticks_in"] == 2)
    async with connect(url(gateway, token="gold-only")) as ws:
        await ws.send('{"op":"subscribe","symbols":["XAU","XAG"],"kinds":["ticks"]}')
        err = await recv(ws)
        assert err["type"] == "error" and err["error"] == "forbidden_symbol"
        assert "XAG" in err["detail"]
        snap = await subscribe(ws, symbols="*", kinds=["ticks", "divergence_windows"])
        assert list(snap["ticks"]) == ["XAU"]  # '*' narrowed to the allow-list
        await feed.ticks([tick("XAG", 2_000, 101.0, 2)])
        rows_in = gateway.counts["rows_in"] + gateway.counts["signals_in"]
        await feed.rows([window(60_000)])  # XAU/XAG needs XAG too: not for this token
        # fanned out (to nobody) before the next tick: its frame would come first
        await until(lambda: gateway.counts["rows_in"] + gateway.counts["signals_in"] > rows_in)
        await feed.ticks([tick("XAU", 2_000, 5001.0, 2)])
        got = await recv_until(ws, lambda f: f.get("seq") == 2)
        assert [(f["type"], f.get("symbol")) for f in got] == [("tick", "XAU")]


async def test_malformed_messages_never_crash(kafka_bootstrap: str, namespace: str) -> None:
    gw = await started(config(kafka_bootstrap, namespace, max_message_bytes=1024))
    try:
        async with connect(url(gw)) as ws:
            for raw, error in [
                ("{not json", "bad_json"),
                (b"\x00\xff binary", "bad_json"),
                ("[]", "bad_request"),
                ('{"op":"launch"}', "unknown_op"),
                ('{"op":"subscribe","symbols":["XAU"],"kinds":["candles"]}', "bad_request"),
                ('{"op":"subscribe","symbols":["XAU"],"since_ms":"yesterday"}', "bad_request"),
            ]:
                await ws.send(raw)
                frame = await recv(ws)
                assert frame["type"] == "error" and frame["error"] == error, (raw, frame)
                assert frame["detail"]
            await ws.send('{"op":"heartbeat"}')
            assert (await recv(ws))["type"] == "heartbeat"  # still serving this client
            await ws.send('{"op":"heartbeat","pad":"' + "x" * 2048 + '"}')  # over max_size
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert gw.counts["client_errors"] == 6
        async with connect(url(gw)) as ws:  # and every other client
            await subscribe(ws, symbols="*")
    finally:
        await gw.stop()


def _small_receive_buffer_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def test_slow_client_disconnected_fast_client_gets_everything(
    kafka_bootstrap: str, namespace: str, feed: Feed
) -> None:
    gw = await started(
        config(kafka_bootstrap, namespace, conflation_ms=0, max_send_buffer=512 << 10)
    )
    slow_before = REGISTRY.get_sample_value("tickstream_gateway_slow_disconnects_total") or 0
    n, per_message = 30_000, 100
    venue = "V" * 64  # the longest venue the tick contract takes: ~150 B a frame, a few MB in all
    try:
        sock = _small_receive_buffer_socket(gw.port)
        async with (
            connect(url(gw), max_queue=4) as fast,
            connect(url(gw), sock=sock, max_queue=4) as slow,
        ):
            await subscribe(fast, symbols="*", kinds="*")
            await subscribe(slow, symbols="*", kinds="*")
            # the fast client reads all along; the slow one reads nothing from now on. Ticks
            # and signals come from topics of their own, read by consumers of their own: the
            # record break may overtake the last ticks, so the read ends once both are in.
            seen: set[str] = set()

            def everything(f: dict[str, Any]) -> bool:
                if f["type"] == "record_break" or (f["type"] == "tick" and f["seq"] == n - 1):
                    seen.add(f["type"])
                return len(seen) == 2

            reading = asyncio.create_task(recv_until(fast, everything))
            for start in range(0, n, per_message):
                await feed.ticks(
                    [
                        tick("XAU", 1_000 + i, 5000.0 + i, i, venue)
                        for i in range(start, start + per_message)
                    ]
                )
            await feed.rows([record_break("XAU", "ath", 10_000, 9000.0)])
            got = await reading
            seqs = [f["seq"] for f in got if f["type"] == "tick"]
            assert seqs == list(range(n))  # every tick, in order, none conflated
            assert [f["ts_ms"] for f in got if f["type"] == "record_break"] == [10_000]
            assert gw.counts["slow_disconnects"] == 1
            slow_after = REGISTRY.get_sample_value("tickstream_gateway_slow_disconnects_total")
            assert slow_after == slow_before + 1
            # the slow client reads again: what was already on the wire, then the close
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await recv(slow)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4008
            assert "slow consumer" in closed.value.rcvd.reason
            # the fast client is still served
            await feed.rows([record_break("XAU", "ath", 11_000, 9001.0)])
            frame = await recv(fast)
            assert frame["type"] == "record_break" and frame["ts_ms"] == 11_000
        await until(lambda: not gw.clients)
    finally:
        await gw.stop()


async def test_replay_then_live_without_gap_or_duplicate(gateway: Gateway, feed: Feed) -> None:
    def signal(i: int) -> dict:
        if i % 5 == 4:
            return window(i * 1_000, closed=None if i % 2 else i * 1_000 + 500, metric=f"m{i}")
        return record_break("XAU", "level_up", i * 1_000, 5000.0 + i, level=5000.0 + i)

    def ident(f: dict[str, Any]) -> tuple[Any, ...]:
        if f["type"] == "record_break":
            return (f["record"], f["symbol"], f["ts_ms"], f["level"])
        return (f["pair"], f["metric"], f["opened_at_ms"], f["closed_at_ms"])

    def event_time(r: dict) -> int:
        if r["kind"] == "record_break":
            return r["ts_ms"]
        return r["closed_at_ms"] if r["closed_at_ms"] is not None else r["opened_at_ms"]

    history = [signal(i) for i in range(20)]
    await feed.rows(history)
    await feed.rows(history[:3])  # a processor restart re-sends some: not twice to anyone
    await until(lambda: gateway.counts["duplicate_signals"] == 3)
    live = [signal(i) for i in range(20, 40)]
    await feed.rows(live[:5])
    await until(lambda: gateway.log.head == 25)
    async with connect(url(gateway)) as ws:
        since = 7_000
        await ws.send(
            orjson.dumps(
                {"op": "subscribe", "symbols": ["XAU"], "kinds": "*", "since_ms": since}
            ).decode()
        )
        publishing = asyncio.create_task(feed.rows(live[5:-1] + history[10:12] + live[-1:]))
        frames = await recv_until(
            ws, lambda f: f.get("ts_ms") == 39_000 or f.get("opened_at_ms") == 39_000
        )
        await publishing
        assert frames[0]["type"] == "snapshot"
        marker = [i for i, f in enumerate(frames) if f["type"] == "replayed"]
        assert len(marker) == 1
        replayed, after = frames[1 : marker[0]], frames[marker[0] + 1 :]
        assert frames[marker[0]]["count"] == len(replayed) and frames[marker[0]]["complete"]
        signals = [f for f in frames if f["type"] in ("record_break", "divergence_window")]
        expected = [
            ident({"type": "record_break" if r["kind"] == "record_break" else "w", **r})
            for r in history + live
            if event_time(r) >= since
        ]
        assert [ident(f) for f in signals] == expected  # each once, in order, no gap
        assert len({f["signal_seq"] for f in signals}) == len(signals)
        assert all(f["type"] != "snapshot" for f in after)
        # a second subscribe with since_ms does not send what this client already has
        await ws.send(orjson.dumps({"op": "subscribe", "symbols": ["XAU"], "since_ms": 0}).decode())
        again = await recv_until(ws, lambda f: f["type"] == "replayed")
        again_signals = [f for f in again if f["type"] in ("record_break", "divergence_window")]
        assert [f["ts_ms"] for f in again_signals if "ts_ms" in f] == [
            r["ts_ms"] for r in history if r["kind"] == "record_break" and r["ts_ms"] < since
        ]


async def test_signal_events_provisional_then_confirmed_or_retracted(
    gateway: Gateway, feed: Feed
) -> None:
    """Desks get a signal at its tick (provisional), then the same id confirmed or retracted;
    a confirmed_only desk only the confirmed; the plain exact rows reach nobody as frames."""

    def latency_count(status: str, signal: str) -> float:
        labels = {"status": status, "signal": signal}
        return REGISTRY.get_sample_value("tickstream_signal_latency_seconds_count", labels) or 0

    before = latency_count("provisional", "record_break")
    ath = record_break("XAU", "ath", 5_000, 5050.0, level=5010.0)
    level = record_break("XAU", "level_up", 6_000, 5100.5, level=5100.0)  # the sentinel
    roll = {
        "kind": "rolling_break",
        "symbol": "XAG",
        "window": "1h",
        "record": "new_high",
        "ts_ms": 5_500,
        "price": 102.0,
        "prev": 101.5,
        "prev_ts_ms": 5_000,
    }
    ath_id, roll_id, level_id = (signal_id(row_from_doc(r)) for r in (ath, roll, level))
    now = int(time.time() * 1000)
    async with (
        connect(url(gateway)) as everything,
        connect(url(gateway)) as exact,
        connect(url(gateway)) as breaks_only,
    ):
        await subscribe(everything, symbols="*", kinds="*")
        snap = await subscribe(
            exact, symbols="*", kinds=["record_breaks", "rolling_breaks"], confirmed_only=True
        )
        assert snap["confirmed_only"] is True and snap["signals"] == []
        # a client listing its kinds as before gets no rolling breaks
        await subscribe(breaks_only, symbols="*", kinds=["record_breaks"])
        await feed.rows(
            [
                signal_event(ath, "provisional", recv_ms=now),
                signal_event(roll, "provisional", recv_ms=now),
                ath,  # the exact row, for the analyst tables: board state only
                signal_event(ath, "confirmed", recv_ms=now, announced=1),
                signal_event(roll, "retracted", recv_ms=now, reason="a late tick at 102.5"),
                # a processor restart re-sends events: nobody gets them twice
                signal_event(ath, "provisional", recv_ms=now),
                signal_event(ath, "confirmed", recv_ms=now, announced=1),
                level,
                signal_event(level, "confirmed", recv_ms=now),  # exact at once: no provisional
            ]
        )

        def steps(frames: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
            return [(f["type"], f["id"], f["status"]) for f in frames if "id" in f]

        def until_level(ws: ClientConnection) -> Any:
            return recv_until(ws, lambda f: f.get("id") == level_id)

        got = await until_level(everything)
        assert steps(got) == [
            ("record_break", ath_id, "provisional"),
            ("rolling_break", roll_id, "provisional"),
            ("record_break", ath_id, "confirmed"),
            ("rolling_break", roll_id, "retracted"),
            ("record_break", level_id, "confirmed"),
        ]
        assert all("id" in f for f in got)  # no plain-row frame, nothing else
        provisional, confirmed = got[0], got[2]
        assert provisional["record"] == "ath" and provisional["price"] == 5050.0
        assert provisional["recv_ms"] == now and provisional["announced"] == 0
        assert provisional["emitted_ms"] >= now and provisional["created_ms"] > 0
        assert confirmed["announced"] == 1 and confirmed["reason"] == ""
        assert got[3]["reason"] == "a late tick at 102.5" and got[3]["window"] == "1h"
        assert got[4]["announced"] == 0

        assert steps(await until_level(exact)) == [
            ("record_break", ath_id, "confirmed"),
            ("record_break", level_id, "confirmed"),
        ]
        assert [s[2] for s in steps(await until_level(breaks_only))] == [
            "provisional",
            "confirmed",
            "confirmed",
        ]
        assert gateway.counts["duplicate_signals"] == 2
        assert latency_count("provisional", "record_break") == before + 1

        # a desk (re)joining: the snapshot says where each signal stands, and a replay
        # carries every step with its id
        snap = await subscribe(everything, symbols="*", since_ms=0)
        assert [(f["id"], f["status"]) for f in snap["signals"]] == [
            (ath_id, "confirmed"),
            (roll_id, "retracted"),
            (level_id, "confirmed"),
        ]
        assert snap["ath"]["XAU"] == {"price": 5050.0, "ts_ms": 5_000, "source": "record"}
        marker = await recv(everything)  # all of it was sent live already
        assert marker["type"] == "replayed" and marker["count"] == 0
    async with connect(url(gateway)) as late, connect(url(gateway)) as late_exact:
        await subscribe(late, symbols="*", since_ms=0)
        replay = await recv_until(late, lambda f: f["type"] == "replayed")
        assert [(f["id"], f["status"]) for f in replay[:-1]] == [
            (ath_id, "provisional"),
            (roll_id, "provisional"),
            (ath_id, "confirmed"),
            (roll_id, "retracted"),
            (level_id, "confirmed"),
        ]
        snap = await subscribe(late_exact, symbols="*", since_ms=0, confirmed_only=True)
        assert [f["id"] for f in snap["signals"]] == [ath_id, level_id]
        replay = await recv_until(late_exact, lambda f: f["type"] == "replayed")
        assert [(f["id"], f["status"]) for f in replay[:-1]] == [
            (ath_id, "confirmed"),
            (level_id, "confirmed"),
        ]
        assert replay[-1]["count"] == 2


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tls(kafka_bootstrap: str, namespace: str, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    gw = await started(config(kafka_bootstrap, namespace, ssl=ssl_context(cert, key)))
    try:
        client_ctx = ssl.create_default_context(cafile=str(cert))
        async with connect(url(gw, scheme="wss"), ssl=client_ctx) as ws:
            await subscribe(ws, symbols="*")
        with pytest.raises((InvalidHandshake, OSError)):  # plain ws to a TLS port
            async with connect(url(gw, scheme="ws"), open_timeout=5):
                pass
    finally:
        await gw.stop()


async def test_command_serves_and_stops_on_sigterm(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    import os
    import signal
    import sys

    port_sock = socket.socket()
    port_sock.bind(("127.0.0.1", 0))
    port = port_sock.getsockname()[1]
    port_sock.close()
    tokens = tmp_path / "tokens"
    tokens.write_text("# desks\nfile-token XAU\n")
    env = {
        **os.environ,
        "TICKSTREAM_GATEWAY_PORT": str(port),
        "TICKSTREAM_GATEWAY_TOKENS_FILE": str(tokens),
        "TICKSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TICKSTREAM_NAMESPACE": namespace,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", "gateway", env=env,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(WAIT):
            while True:
                try:
                    async with connect(f"ws://127.0.0.1:{port}/ws?token=file-token") as ws:
                        snap = await subscribe(ws, symbols=["XAU"])
                        assert snap["subscription"]["ticks"] == {"symbols": ["XAU"]}
                        break
                except OSError:
                    await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            _, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()[-2000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_garbage_on_the_topics_is_counted_not_fatal(gateway: Gateway, feed: Feed) -> None:
    topics = feed.topics
    for topic, value in [
        (topics.ticks, b"\x00 not json"),
        (topics.ticks, orjson.dumps([["XAU", "yesterday", 1.0]])),
        (topics.ticks, orjson.dumps({"kind": "tick"})),
        (topics.aggregates, orjson.dumps({"kind": "candle", "symbol": "XAU"})),
        (topics.signals, orjson.dumps({"kind": "record_break", "record": "ath", "price": 1.0})),
        (topics.signals, orjson.dumps([1, 2, 3])),
    ]:
        await feed.producer.send(topic, value)
    await feed.producer.flush()
    async with connect(url(gateway)) as ws:
        await subscribe(ws, symbols="*")
        await feed.ticks([tick("XAU", 1_000, 5000.0, 1)])
        frame = await recv(ws)
        assert frame["type"] == "tick" and frame["seq"] == 1
    assert gateway.counts["undecodable"] == 8  # the [1, 2, 3] message holds three non-rows
    assert gateway.log.head == 0  # nothing malformed reached the replay log


async def test_client_asking_without_reading_is_cut_off(
    kafka_bootstrap: str, namespace: str, feed: Feed
) -> None:
    symbols = [f"S{i:04d}" for i in range(1_500)]
    for start in range(0, len(symbols), 100):  # ~150 KB of snapshot, venues the longest allowed
        await feed.ticks([tick(s, 1_000, 100.0, 1, "V" * 64) for s in symbols[start : start + 100]])
    gw = await started(config(kafka_bootstrap, namespace, max_send_buffer=64 << 10))
    try:
        sock = _small_receive_buffer_socket(gw.port)
        async with connect(url(gw), sock=sock, max_queue=1) as ws:
            request = orjson.dumps({"op": "subscribe", "symbols": "*", "kinds": ["ticks"]}).decode()
            async with asyncio.timeout(WAIT):
                while gw.counts["slow_disconnects"] == 0:
                    await ws.send(request)  # ~150 KB of snapshot each, never read
                    await asyncio.sleep(0.01)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await recv(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
    finally:
        await gw.stop()


async def test_every_signals_fetch_holds_every_partition(
    kafka_bootstrap: str, namespace: str
) -> None:
    """The signals consumer polls long (``LIVE_FETCH_WAIT_MS``), which costs a signal
    nothing only while every fetch it sends holds every partition: a partition left out
    would wait for the long poll of the others. Signals on one partition of three, one at a
    time, each awaited until the gateway has it, which comes back for more only 150 ms
    after it last took some (as it can while its clients' writers drain a burst)."""
    await ensure_topics(
        Settings(kafka_bootstrap=kafka_bootstrap, namespace=namespace, partitions=3)
    )
    gw = await started(config(kafka_bootstrap, namespace, partitions=3))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=0, acks="all")
    await producer.start()
    try:
        consumer = gw.feed._consumers[0]  # the signals consumer
        fetched = record_fetches(consumer)
        getmany = consumer.getmany

        async def slow_getmany(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0.15)  # the fetch it started meanwhile has returned
            return await getmany(*args, **kwargs)

        consumer.getmany = slow_getmany  # type: ignore[method-assign]
        signals = Topics(namespace).signals
        for n in range(20):
            row = record_break("XAU", "ath", 1_000 * (n + 1), 5_000.0 + n)
            await producer.send_and_wait(signals, orjson.dumps(row), partition=0)
            await until(lambda n=n: gw.counts["signals_in"] == n + 1)
        # a fetch at least for each signal after the first, which may come in the fetch
        # already on its way when the recording began (and the fetch after the last may
        # not be sent yet): each later one is fetched only once the one before was taken
        assert len(fetched) >= 19
        assert all(parts == {0, 1, 2} for parts in fetched), fetched
    finally:
        await producer.stop()
        await gw.stop()
