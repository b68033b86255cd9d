"""The gateway's limits, live: the per-client symbol cap, and which HTTP pages need a token.

A real gateway fed by the real broker, real websocket and HTTP clients. Each test fails on a
gateway without its limit: subscriptions that grow without bound, a ``/stats`` that answers
anyone, a ``/metrics`` that shows whatever else the process registered (symbols included).
"""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect

from sinks.gateway.server import Gateway
from tests.integration.test_gateway_live import (
    Feed,
    config,
    recv,
    recv_until,
    started,
    subscribe,
    tick,
    url,
)
from tickstream import metrics
from tickstream.kafka_io import ensure_topics
from tickstream.settings import Settings
from tickstream.topics import Topics

pytestmark = pytest.mark.kafka

CAP = 5
# The label names and error codes the open /metrics may carry: protocol words only.
SAFE_LABELS = {"kind", "reason", "error", "topic", "status", "signal", "le"}
ERROR_CODES = {"bad_json", "bad_request", "unknown_op", "forbidden_symbol", "too_many_symbols"}


@pytest.fixture
async def feed(kafka_bootstrap: str, namespace: str) -> AsyncIterator[Feed]:
    """The namespace's topics, one partition each (publishing order = the gateway's)."""
    settings = Settings(kafka_bootstrap=kafka_bootstrap, namespace=namespace, partitions=1)
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=0, acks="all")
    await producer.start()
    try:
        yield Feed(producer, Topics(namespace))
    finally:
        await producer.stop()


@pytest.fixture
async def gateway(kafka_bootstrap: str, namespace: str) -> AsyncIterator[Gateway]:
    gw = await started(config(kafka_bootstrap, namespace))
    try:
        yield gw
    finally:
        await gw.stop()


def _refused_metric() -> float:
    sample = REGISTRY.get_sample_value(
        "tickstream_gateway_client_errors_total", {"error": "too_many_symbols"}
    )
    return sample or 0.0


async def _send(ws: ClientConnection, **message: object) -> None:
    await ws.send(orjson.dumps(message).decode())


async def test_subscriptions_past_the_cap_are_refused_and_the_connection_goes_on(
    kafka_bootstrap: str, namespace: str, feed: Feed
) -> None:
    gw = await started(config(kafka_bootstrap, namespace, max_symbols_per_client=CAP))
    refused_before = _refused_metric()
    try:
        async with connect(url(gw)) as ws:
            await subscribe(ws, symbols=["XAU", "XAG", "XPT"], kinds=["ticks", "bars"])
            # small messages, each well within the per-message limit, together over the cap
            await _send(ws, op="subscribe", symbols=["A1", "A2", "A3"], kinds=["ticks"])
            error = await recv(ws)
            assert error["type"] == "error" and error["error"] == "too_many_symbols", error
            assert f"at most {CAP}" in error["detail"] and "Nothing changed" in error["detail"]
            # one message over the cap on its own
            await _send(ws, op="subscribe", symbols=[f"B{i}" for i in range(CAP + 1)])
            error = await recv(ws)
            assert error["type"] == "error" and error["error"] == "too_many_symbols", error
            # nothing was applied: the subscription is the first one
            await _send(ws, op="snapshot")
            snap = await recv(ws)
            assert snap["type"] == "snapshot"
            want = {"symbols": ["XAG", "XAU", "XPT"]}
            assert snap["subscription"] == {"ticks": want, "bars": want}
            # and the connection serves on: ticks of its symbols, none of the refused ones
            await feed.ticks([tick("A1", 1_000, 1.0, 1), tick("XAU", 1_000, 5000.0, 1)])
            got = await recv_until(ws, lambda f: f.get("symbol") == "XAU")
            assert [f["symbol"] for f in got if f["type"] == "tick"] == ["XAU"]
            # within the cap again, a subscribe works
            await subscribe(ws, symbols=["A1", "A2"], kinds=["ticks"])
        assert gw.counts["subscriptions_refused"] == 2
        assert _refused_metric() == refused_before + 2
    finally:
        await gw.stop()


async def test_exceptions_to_star_count_against_the_cap(
    kafka_bootstrap: str, namespace: str
) -> None:
    """Unsubscribing symbols from "*" keeps them as exceptions: memory the cap bounds too."""
    gw = await started(config(kafka_bootstrap, namespace, max_symbols_per_client=CAP))
    try:
        async with connect(url(gw)) as ws:
            await subscribe(ws, symbols="*", kinds=["ticks"])
            for i in range(CAP):
                await _send(ws, op="unsubscribe", symbols=[f"E{i}"], kinds=["ticks"])
                assert (await recv(ws))["type"] == "unsubscribed"
            await _send(ws, op="unsubscribe", symbols=["E-one-more"], kinds=["ticks"])
            error = await recv(ws)
            assert error["type"] == "error" and error["error"] == "too_many_symbols", error
            await _send(ws, op="heartbeat")
            assert (await recv(ws))["type"] == "heartbeat"
    finally:
        await gw.stop()


def _get(port: int, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


async def test_stats_needs_a_desk_token(gateway: Gateway) -> None:
    def get(path: str, **headers: str) -> tuple[int, str, str]:
        return _get(gateway.port, path, headers)

    missing = REGISTRY.get_sample_value("tickstream_gateway_refused_total", {"reason": "missing"})
    assert (await asyncio.to_thread(get, "/stats"))[0] == 401
    assert (await asyncio.to_thread(get, "/stats?token=not-a-token"))[0] == 403
    bad_bearer = {"Authorization": "Bearer not-a-token"}
    assert (await asyncio.to_thread(get, "/stats", **bad_bearer))[0] == 403
    # refused as a websocket handshake is: counted, by reason
    assert gateway.counts["refused"] == 3
    after = REGISTRY.get_sample_value("tickstream_gateway_refused_total", {"reason": "missing"})
    assert after == (missing or 0) + 1
    # any desk token will do (an allow-listed one too: /stats names no symbol)
    status, ctype, body = await asyncio.to_thread(get, "/stats?token=gold-only")
    assert status == 200 and ctype == "application/json" and orjson.loads(body)["refused"] == 3
    bearer = {"Authorization": "Bearer desk-token"}
    status, _, body = await asyncio.to_thread(get, "/stats", **bearer)
    assert status == 200 and "subscriptions_refused" in orjson.loads(body)


async def test_metrics_open_for_prometheus_with_gateway_families_only(
    gateway: Gateway,
) -> None:
    """/metrics needs no token (Prometheus scrapes it as is): it must show nothing else.

    The process may hold other metrics (here: a producer's, labelled by symbol, as an
    embedding process or a future change could register); the page shows none of them, and
    its labels are protocol words, never a symbol, a token or a client address.
    """
    metrics.PRODUCER_TICKS.labels("test-limits", "SYMBOL-ELSEWHERE").inc()
    metrics.LAST_TICK_TS.labels("test-limits", "SYMBOL-ELSEWHERE").set(1.0)
    async with connect(url(gateway)) as ws:  # a client, an error: the counters move
        await subscribe(ws, symbols=["XAU"], kinds=["ticks"])
        await ws.send('{"op":"launch","symbol":"SYMBOL-IN-A-MESSAGE"}')
        assert (await recv(ws))["error"] == "unknown_op"
        status, ctype, body = await asyncio.to_thread(_get, gateway.port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert "\ntickstream_gateway_clients " in body
    assert "tickstream_gateway_client_errors_total" in body
    assert "SYMBOL-" not in body and "XAU" not in body
    assert "tickstream_producer_" not in body and "tickstream_last_tick" not in body
    assert "desk-token" not in body and "gold-only" not in body and "127.0.0.1" not in body
    labels = re.findall(r'[{,](\w+)="([^"]*)"', body)
    assert {name for name, _ in labels} <= SAFE_LABELS
    assert {value for name, value in labels if name == "error"} <= ERROR_CODES
