"""The websocket source against a real local websockets server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import InvalidStatus

from producers.records import RawTick
from producers.validation import MALFORMED, ValidationConfig, Validator
from producers.websocket_source import (
    WebSocketSourceConfig,
    backoff_delays,
    get_path,
    parse_frame,
    websocket_source,
)

T0 = 1_769_385_600_000
RECV_MS = T0 + 5
FAR_FUTURE = T0 + 10**9

Handler = Callable[[ServerConnection], Awaitable[None]]


@contextlib.asynccontextmanager
async def server(handler: Handler, port: int = 0) -> AsyncIterator[tuple[Server, str]]:
    async with serve(handler, "127.0.0.1", port) as srv:
        bound = srv.sockets[0].getsockname()[1]
        yield srv, f"ws://127.0.0.1:{bound}"


async def take(config: WebSocketSourceConfig, n: int, timeout_s: float = 10.0) -> list[RawTick]:
    """The first n RawTicks, then the source is closed (as a consumer would)."""
    got: list[RawTick] = []
    async with contextlib.aclosing(websocket_source(config, now_ms=lambda: RECV_MS)) as source:
        async with asyncio.timeout(timeout_s):
            async for raw in source:
                got.append(raw)
                if len(got) == n:
                    break
    return got


def venue_msg(symbol: str, price: float, ts_ms: int, seq: int) -> dict:
    return {"s": symbol, "data": {"p": price, "t": ts_ms}, "q": {"b": price - 0.5}, "n": seq}


VENUE_MAP = {"s": "symbol", "data.p": "price", "data.t": "ts", "q.b": "bid", "n": "seq"}


def sample(name: str, source: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"source": source})


async def test_normal_flow_maps_fields_and_subscribes() -> None:
    received: list[str] = []
    headers: list[str | None] = []

    async def handler(ws: ServerConnection) -> None:
        headers.append(ws.request.headers.get("Authorization"))
        received.append(await ws.recv())
        await ws.send(orjson.dumps({"event": "subscribed"}))  # an ack: skipped
        await ws.send(orjson.dumps(venue_msg("XAU", 5000.5, T0, 1)))
        batch = [venue_msg("XAG", 107.25, T0 + 1, 1), venue_msg("XAU", 5000.75, T0 + 2, 2)]
        await ws.send(orjson.dumps(batch).decode())  # a text frame holding a list
        await ws.wait_closed()

    async with server(handler) as (_, url):
        config = WebSocketSourceConfig(
            url,
            subscribe={"op": "subscribe", "args": ["XAU", "XAG"]},
            field_map=VENUE_MAP,
            static_fields={"venue": "TESTX"},
            require_key="s",
            headers={"Authorization": "Bearer t0ken"},
            source="ws-normal",
        )
        got = await take(config, 3)
    assert [orjson.loads(m) for m in received] == [{"op": "subscribe", "args": ["XAU", "XAG"]}]
    assert headers == ["Bearer t0ken"]
    assert [r.position for r in got] == ["frame 2", "frame 3[0]", "frame 3[1]"]
    assert got[0].fields == {
        "symbol": "XAU",
        "price": 5000.5,
        "ts": T0,
        "bid": 5000.0,
        "seq": 1,
        "venue": "TESTX",
    }
    assert {(r.source, r.recv_ms, r.error) for r in got} == {("ws-normal", RECV_MS, None)}
    assert orjson.loads(got[1].raw) == venue_msg("XAG", 107.25, T0 + 1, 1)
    validator = Validator(ValidationConfig(), now_ms=lambda: FAR_FUTURE)
    verdicts = validator.feed_many(got)
    assert [(t.symbol, t.price, t.venue) for t in verdicts.accepted] == [
        ("XAU", 5000.5, "TESTX"),
        ("XAG", 107.25, "TESTX"),
        ("XAU", 5000.75, "TESTX"),
    ]


async def test_reconnects_after_the_server_drops_mid_stream() -> None:
    subscribes: list[str] = []
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        subscribes.append(await ws.recv())
        for i in range(3):
            seq = i + 1 if first else i + 4
            await ws.send(orjson.dumps({"symbol": "XAU", "ts": T0 + seq, "price": 5000.0 + seq}))
        if first:
            ws.transport.abort()  # an abrupt network drop, no closing handshake
        else:
            await ws.wait_closed()

    source = "ws-drop"
    before = sample("tickstream_feed_reconnects_total", source) or 0.0
    async with server(handler) as (_, url):
        config = WebSocketSourceConfig(url, subscribe="SUB", source=source, backoff_initial_s=0.05)
        got = await take(config, 6)
    assert [r.fields["price"] for r in got] == [5001.0 + i for i in range(6)]  # type: ignore[index]
    assert subscribes == ["SUB", "SUB"]
    assert sample("tickstream_feed_reconnects_total", source) == before + 1
    positions = [int(r.position.split()[1]) for r in got]
    assert positions == sorted(positions) and len(set(positions)) == 6


async def test_a_server_that_accepts_and_drops_is_retried_with_backoff() -> None:
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        if connections <= 3:
            return  # accept, then close at once without a frame
        await ws.send(orjson.dumps({"symbol": "XAU", "ts": T0, "price": 5000.0}))
        await ws.wait_closed()

    async with server(handler) as (_, url):
        config = WebSocketSourceConfig(url, source="ws-flap", backoff_initial_s=0.02)
        got = await take(config, 1)
    assert connections == 4
    assert got[0].position == "frame 1"


async def test_a_refused_handshake_is_fatal() -> None:
    async def handler(ws: ServerConnection) -> None:  # pragma: no cover - never reached
        await ws.wait_closed()

    def forbid(connection: ServerConnection, request):
        return connection.respond(403, "no token\n")

    async with serve(handler, "127.0.0.1", 0, process_request=forbid) as srv:
        url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        with pytest.raises(InvalidStatus):
            await take(WebSocketSourceConfig(url, source="ws-403"), 1)


async def test_waits_with_backoff_until_the_server_comes_up() -> None:
    with socket.socket() as probe:  # a free port, closed again: connecting is refused at first
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def handler(ws: ServerConnection) -> None:
        await ws.send(orjson.dumps({"symbol": "XAG", "ts": T0, "price": 107.0}))
        await ws.wait_closed()

    config = WebSocketSourceConfig(
        f"ws://127.0.0.1:{port}", source="ws-late", backoff_initial_s=0.05, backoff_max_s=0.2
    )
    consumer = asyncio.create_task(take(config, 1))
    await asyncio.sleep(0.4)
    assert not consumer.done()
    async with server(handler, port):
        got = await consumer
    assert got[0].fields == {"symbol": "XAG", "ts": T0, "price": 107.0}


async def test_malformed_frames_become_rawticks_with_an_error() -> None:
    frames: list[str | bytes] = [
        "not json",
        "[1, {}]",
        "42",
        b"\xff\xfe{",
        '{"symbol": "XAU", "ts": 1769385600000, "price": 5000}',
    ]

    async def handler(ws: ServerConnection) -> None:
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    async with server(handler) as (_, url):
        got = await take(WebSocketSourceConfig(url, source="ws-bad"), 6)
    assert [(r.position, r.fields is None) for r in got] == [
        ("frame 1", True),
        ("frame 2[0]", True),
        ("frame 2[1]", False),
        ("frame 3", True),
        ("frame 4", True),
        ("frame 5", False),
    ]
    assert got[0].raw == "not json" and "not JSON" in (got[0].error or "")
    assert "int" in (got[1].error or "")
    assert got[2].fields == {}
    validator = Validator(ValidationConfig(), now_ms=lambda: FAR_FUTURE)
    verdicts = validator.feed_many(got)
    assert [r.reason for r in verdicts.rejected] == [MALFORMED] * 5
    assert [r.position for r in verdicts.rejected][:2] == ["frame 1", "frame 2[0]"]
    assert len(verdicts.accepted) == 1


async def test_stale_feed_sets_the_gauge_once_and_recovers(caplog) -> None:
    release = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.send(orjson.dumps({"symbol": "XAU", "ts": T0, "price": 5000.0}))
        await release.wait()
        await ws.send(orjson.dumps({"symbol": "XAU", "ts": T0 + 1, "price": 5000.5}))
        await ws.wait_closed()

    source = "ws-slow"
    caplog.set_level(logging.INFO, logger="producers.websocket_source")
    async with server(handler) as (_, url):
        config = WebSocketSourceConfig(url, source=source, stale_after_s=0.2)
        stream = websocket_source(config, now_ms=lambda: RECV_MS)
        async with contextlib.aclosing(stream):
            first = await anext(stream)
            assert first.fields["price"] == 5000.0  # type: ignore[index]
            assert sample("tickstream_feed_stale", source) == 0.0
            second = asyncio.create_task(anext(stream))
            for _ in range(200):  # poll: at most ~4 s, normally ~0.25 s
                if sample("tickstream_feed_stale", source) == 1.0:
                    break
                await asyncio.sleep(0.02)
            assert sample("tickstream_feed_stale", source) == 1.0
            await asyncio.sleep(0.3)  # several more watchdog periods of silence
            assert not second.done()
            release.set()
            assert (await second).fields["price"] == 5000.5  # type: ignore[index]
            assert sample("tickstream_feed_stale", source) == 0.0
    stale_warnings = [r for r in caplog.records if "no message for" in r.getMessage()]
    assert len(stale_warnings) == 1
    assert any("live again" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ pure helpers


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    delays = backoff_delays(0.5, 8.0, 2.0, random.Random(1))
    got = [next(delays) for _ in range(10)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    assert all(c / 2 <= d <= c for d, c in zip(got, ceilings, strict=True))
    assert len(set(got)) == len(got)


def test_get_path_and_parse_frame_helpers() -> None:
    doc = {"a": {"b": [10, {"c": 3}]}}
    assert get_path(doc, "a.b.1.c") == 3
    assert get_path(doc, "a.b.0") == 10
    assert get_path(doc, "a.x") is get_path(doc, "a.b.5")  # both missing
    config = WebSocketSourceConfig("ws://x", field_map={"a.b.0": "price"}, source="s")
    [raw] = parse_frame(b'{"a": {"b": [10]}}', 7, 1, config)
    assert (raw.position, raw.fields, raw.raw) == ("frame 7", {"price": 10}, '{"a": {"b": [10]}}')
    assert parse_frame("[]", 8, 1, config) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "http://x"},
        {"url": "ws://x", "stale_after_s": 0},
        {"url": "ws://x", "backoff_initial_s": 0},
    ],
)
def test_bad_config_is_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        WebSocketSourceConfig(**kwargs)
