"""A live websocket feed as a source of RawTicks.

Reconnection is websockets' own loop (``async for ws in connect(...)``) with our
exponential backoff with jitter; the subscribe message goes out on every
(re)connect. A frame holds one JSON object or a list of them; anything else
(not JSON, not an object) still becomes a RawTick, with ``fields=None`` and an
``error``, so it reaches the dead-letter topic instead of vanishing.

A feed can go quiet without the connection dropping (a stuck venue, a
weekend). A watchdog notices when no frame arrived for ``stale_after_s``: it
logs one warning per quiet spell and holds ``tickstream_feed_stale{source}`` at
1 until the next frame. The source keeps going; deciding to restart is the
operator's (or an alert's) job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import connect
from websockets.client import process_exception as default_process_exception
from websockets.exceptions import ConnectionClosed, InvalidStatus

from producers.records import RawTick, wall_ms
from tickstream.metrics import FEED_RECONNECTS, FEED_STALE
from tickstream.redact import redact_url

log = logging.getLogger(__name__)

_MISSING = object()


@dataclass(frozen=True, slots=True)
class WebSocketSourceConfig:
    """Where to connect, what to send, and how to read the venue's JSON.

    ``field_map`` maps a venue key (a dotted path such as ``data.p``; digits
    index lists) to our field name (symbol, ts, price, bid, ask, size, venue,
    seq); empty means the venue already uses our names. ``static_fields`` fills
    fields the venue never sends (e.g. ``{"venue": "XYZ"}``). With
    ``require_key`` set, objects lacking that path (acks, heartbeats) are
    skipped instead of being rejected as malformed.
    """

    url: str
    subscribe: Mapping[str, Any] | str | None = None
    field_map: Mapping[str, str] = field(default_factory=dict)
    static_fields: Mapping[str, Any] = field(default_factory=dict)
    require_key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    source: str = "websocket"
    stale_after_s: float = 30.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_factor: float = 2.0
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    open_timeout_s: float | None = 10.0
    max_frame_bytes: int = 2**20

    def __post_init__(self) -> None:
        if not self.url.startswith(("ws://", "wss://")):
            raise ValueError(f"url {redact_url(self.url)!r} must start with ws:// or wss://")
        if self.stale_after_s <= 0:
            raise ValueError(f"stale_after_s must be > 0, got {self.stale_after_s}")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s or self.backoff_factor < 1:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s and backoff_factor >= 1")

    def subscribe_message(self) -> str | None:
        if self.subscribe is None or isinstance(self.subscribe, str):
            return self.subscribe
        return orjson.dumps(dict(self.subscribe)).decode()


def backoff_delays(
    initial_s: float, max_s: float, factor: float = 2.0, rng: random.Random | None = None
) -> Iterator[float]:
    """Exponential backoff with "equal jitter": each delay lies in [d/2, d], d doubling to max.

    The jitter keeps many clients from reconnecting in step after an outage.
    """
    rand = rng or random.Random()
    ceiling = initial_s
    while True:
        yield ceiling / 2 + rand.random() * ceiling / 2
        ceiling = min(max_s, ceiling * factor)


def _process_exception(exc: Exception) -> Exception | None:
    """websockets' transient/fatal split, plus 429 (rate limited) as transient."""
    if isinstance(exc, InvalidStatus) and exc.response.status_code == 429:
        return None
    return default_process_exception(exc)


def get_path(obj: Any, path: str) -> Any:
    """``obj`` at a dotted path (``data.p``, ``levels.0.px``), or ``_MISSING``."""
    for part in path.split("."):
        if isinstance(obj, dict):
            obj = obj.get(part, _MISSING)
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return _MISSING
        if obj is _MISSING:
            return _MISSING
    return obj


def map_fields(obj: Mapping[str, Any], config: WebSocketSourceConfig) -> dict[str, Any]:
    """Our fields from one venue object (missing keys stay missing; validation decides)."""
    if config.field_map:
        fields = {}
        for path, name in config.field_map.items():
            value = get_path(obj, path)
            if value is not _MISSING:
                fields[name] = value
    else:
        fields = dict(obj)
    for name, value in config.static_fields.items():
        fields.setdefault(name, value)
    return fields


def parse_frame(
    message: str | bytes, frame_no: int, recv_ms: int, config: WebSocketSourceConfig
) -> list[RawTick]:
    """RawTicks of one frame; positions are ``frame <n>`` or ``frame <n>[<i>]`` for lists."""
    text = message if isinstance(message, str) else message.decode("utf-8", errors="replace")
    position = f"frame {frame_no}"
    try:
        doc = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        return [RawTick(text, config.source, position, recv_ms, None, f"frame is not JSON: {exc}")]
    if isinstance(doc, list):
        items = [(f"{position}[{i}]", orjson.dumps(x).decode(), x) for i, x in enumerate(doc)]
    else:
        items = [(position, text, doc)]
    out = []
    for where, raw, item in items:
        if not isinstance(item, dict):
            error = f"frame item is a JSON {type(item).__name__}, not an object"
            out.append(RawTick(raw, config.source, where, recv_ms, None, error))
        elif config.require_key is None or get_path(item, config.require_key) is not _MISSING:
            out.append(RawTick(raw, config.source, where, recv_ms, map_fields(item, config)))
    return out


class _StaleWatch:
    """Tracks the time of the last frame; flags (once per quiet spell) a silent feed."""

    def __init__(self, source: str, stale_after_s: float) -> None:
        self.source = source
        self.stale_after_s = stale_after_s
        self.last_frame = time.monotonic()
        self.stale = False
        self.gauge = FEED_STALE.labels(source=source)
        self.gauge.set(0)

    def touch(self) -> None:
        now = time.monotonic()
        if self.stale:
            self.stale = False
            self.gauge.set(0)
            log.info(
                "%s: feed live again after %.1f s of silence", self.source, now - self.last_frame
            )
        self.last_frame = now

    async def watch(self) -> None:
        period = min(1.0, self.stale_after_s / 4)
        while True:
            await asyncio.sleep(period)
            silent_s = time.monotonic() - self.last_frame
            if not self.stale and silent_s >= self.stale_after_s:
                self.stale = True
                self.gauge.set(1)
                log.warning(
                    "%s: no message for %.1f s (stale_after_s=%s); still listening",
                    self.source,
                    silent_s,
                    self.stale_after_s,
                )


async def websocket_source(
    config: WebSocketSourceConfig, now_ms: Callable[[], int] = wall_ms
) -> AsyncIterator[RawTick]:
    """Frames from ``config.url`` as RawTicks, forever, reconnecting as needed.

    Ends only when the consumer stops iterating (close it with ``aclose()``) or
    on a fatal connection error (e.g. HTTP 401/403/404 on the handshake), which
    is raised.
    """
    watch = _StaleWatch(config.source, config.stale_after_s)
    watchdog = asyncio.create_task(watch.watch(), name=f"stale-watch-{config.source}")
    subscribe = config.subscribe_message()
    reconnects = FEED_RECONNECTS.labels(source=config.source)
    # websockets resets its backoff once a handshake succeeds; these delays guard against a
    # server that accepts and drops at once, and reset when a frame arrives.
    quiet_delays = _fresh_delays(config)
    frame_no = 0
    connections = 0
    sockets = connect(
        config.url,
        additional_headers=dict(config.headers) or None,
        process_exception=_process_exception,
        open_timeout=config.open_timeout_s,
        ping_interval=config.ping_interval_s,
        ping_timeout=config.ping_timeout_s,
        reconnect_delays=lambda: _fresh_delays(config),
        max_size=config.max_frame_bytes,
    )
    try:
        # aclosing: when our consumer stops, close the live connection now, not at GC time
        async with contextlib.aclosing(sockets.__aiter__()) as reconnecting:
            async for ws in reconnecting:
                connections += 1
                if connections > 1:
                    reconnects.inc()
                shown = redact_url(config.url)
                log.info("%s: connected to %s (#%d)", config.source, shown, connections)
                frames_before = frame_no
                try:
                    if subscribe is not None:
                        await ws.send(subscribe)
                    async for message in ws:
                        frame_no += 1
                        watch.touch()
                        for raw in parse_frame(message, frame_no, now_ms(), config):
                            yield raw
                except ConnectionClosed as exc:
                    log.warning("%s: connection lost (%s); reconnecting", config.source, exc)
                else:
                    log.warning("%s: server closed the connection; reconnecting", config.source)
                if frame_no == frames_before:
                    await asyncio.sleep(next(quiet_delays))
                else:
                    quiet_delays = _fresh_delays(config)
    finally:
        watchdog.cancel()


def _fresh_delays(config: WebSocketSourceConfig) -> Iterator[float]:
    return backoff_delays(config.backoff_initial_s, config.backoff_max_s, config.backoff_factor)
