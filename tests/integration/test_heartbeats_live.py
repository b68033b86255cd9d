"""A quiet market still confirms: the publisher's heartbeats move the processor's clock.

Real broker, real processor worker. Gold breaks its all-time high three times, then the
market goes quiet. With heartbeats (``--heartbeat-ms``) the processor confirms the
breaks within about lateness + heartbeat_ms of the silence, no further tick needed;
without them (0) nothing is confirmed until the next tick. Margins are generous: this
says "arrives without a tick", not how fast.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from producers.publisher import Publisher
from producers.records import RawTick
from producers.validation import ValidationConfig, Validator
from tickstream.kafka_io import ensure_topics
from tickstream.settings import Settings
from tickstream.topics import Topics

pytestmark = pytest.mark.kafka
SEEDS = Path(__file__).resolve().parents[2] / "examples" / "record-seeds.json"  # XAU ATH 4968.4
LATENESS_MS = 1_000
MARGIN_S = 6.0
STARTUP_S = 120.0


def start_processor(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", "-q", "process", "--no-seed-from-clickhouse"],
            env={**os.environ, **settings.to_env()},
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


class Desk:
    """The signal events the processor sends, with when (monotonic) each arrived."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = AIOKafkaConsumer(
            Topics(settings.namespace).signals,
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
        )
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.changed = asyncio.Event()

    async def run(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=100)).values():
                for r in records:
                    doc = orjson.loads(r.value)
                    if isinstance(doc, dict) and "status" in doc:
                        self.events.append((time.monotonic(), doc))
                        self.changed.set()

    def ids(self, status: str) -> dict[str, float]:
        return {d["id"]: t for t, d in self.events if d["status"] == status}

    async def wait_for(self, status: str, ids: set[str], timeout_s: float) -> dict[str, float]:
        async with asyncio.timeout(timeout_s):
            while not ids <= self.ids(status).keys():
                self.changed.clear()
                await self.changed.wait()
        return self.ids(status)


def raw(ts: int, price: float) -> RawTick:
    return RawTick("", "live", f"ts={ts}", ts, {"symbol": "XAU", "ts": ts, "price": price})


async def scenario(settings: Settings, log: Path) -> tuple[float, dict[str, float], set[str]]:
    """Three ATH ticks, then quiet. Returns (when the quiet began, the confirmed ids with
    their arrival, the ids announced and unconfirmed at the quiet); with heartbeats off,
    a further tick is sent once lateness + heartbeat_ms + the margin passed without a
    confirmation of those."""
    await ensure_topics(settings)
    desk = Desk(settings)
    await desk.consumer.start()
    reader = asyncio.create_task(desk.run())
    proc = start_processor(settings, log)
    quiet = asyncio.Event()
    finish = asyncio.Event()
    state: dict[str, Any] = {}

    async def first_provisional() -> None:
        async with asyncio.timeout(STARTUP_S):  # the processor is up and took the first
            while not desk.ids("provisional"):
                desk.changed.clear()
                await desk.changed.wait()

    async def source() -> AsyncIterator[RawTick]:
        now = time.time_ns() // 1_000_000
        yield raw(now, 5_060.0)
        await first_provisional()
        now = time.time_ns() // 1_000_000
        yield raw(now, 5_070.0)
        yield raw(now + 1, 5_080.0)
        state["quiet_at"] = time.monotonic()
        quiet.set()
        await finish.wait()
        if settings.heartbeat_ms == 0:
            yield raw(time.time_ns() // 1_000_000, 5_000.0)  # the next tick: no record
            await asyncio.sleep(3_600)  # the test ends it

    try:
        async with Publisher(settings, Validator(ValidationConfig(spike_filter=False))) as pub:
            publishing = asyncio.create_task(pub.publish(source()))
            await quiet.wait()
            async with asyncio.timeout(30):  # every break announced on arrival
                while len(desk.ids("provisional")) < 3:
                    desk.changed.clear()
                    await desk.changed.wait()
            # the last ticks' breaks (the first may be confirmed already: the ticks after
            # it came once the processor was up, maybe more than the lateness later)
            announced = set(desk.ids("provisional")) - desk.ids("confirmed").keys()
            assert announced, "the breaks of the last ticks are waiting for the watermark"
            bound = (LATENESS_MS + settings.heartbeat_ms) / 1000 + MARGIN_S
            if settings.heartbeat_ms:
                confirmed = await desk.wait_for("confirmed", announced, bound + 5)
            else:
                await asyncio.sleep(bound)
                assert desk.ids("confirmed").keys() & announced == set(), "no tick, no heartbeat"
                finish.set()
                confirmed = await desk.wait_for("confirmed", announced, 60)
            finish.set()
            publishing.cancel()
        return state["quiet_at"], confirmed, announced
    finally:
        reader.cancel()
        await desk.consumer.stop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def settings_for(settings: Settings, heartbeat_ms: int) -> Settings:
    return replace(
        settings,
        heartbeat_ms=heartbeat_ms,
        allowed_lateness_ms=LATENESS_MS,
        record_seeds=str(SEEDS),
        partitions=1,
    )


def test_a_quiet_market_is_confirmed_by_heartbeats(settings: Settings, tmp_path: Path) -> None:
    s = settings_for(settings, 250)
    quiet_at, confirmed, announced = asyncio.run(scenario(s, tmp_path / "processor.log"))
    assert announced and confirmed.keys() >= announced
    waited = max(confirmed[i] for i in announced) - quiet_at
    assert waited <= (LATENESS_MS + 250) / 1000 + MARGIN_S, waited


def test_without_heartbeats_only_the_next_tick_confirms(settings: Settings, tmp_path: Path) -> None:
    s = settings_for(settings, 0)
    quiet_at, confirmed, announced = asyncio.run(scenario(s, tmp_path / "processor.log"))
    waited = min(confirmed[i] for i in announced) - quiet_at
    assert waited > (LATENESS_MS + 0) / 1000 + MARGIN_S  # only after the further tick
