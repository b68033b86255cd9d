"""The processor's Faust consumer as the desk path wants it: polling with tickstream's fetch
wait, not Faust's, and the calls Faust delegates to it made where they are awaited (that
no fetch leaves a partition out: tests/integration/test_processor_fetch.py)."""

from __future__ import annotations

import asyncio

from processors.app import create_app
from processors.config import analytics_config
from tickstream.kafka_io import LIVE_FETCH_WAIT_MS
from tickstream.settings import Settings


def test_the_processors_faust_consumer_polls_with_tickstreams_wait(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(namespace="fetchwait", metrics_port=0)
    app = create_app(settings, analytics_config(settings, {}))

    async def build() -> int:
        thread = app.consumer._new_consumer_thread()
        consumer = thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()  # never started: only its client is closed

    assert asyncio.run(build()) == LIVE_FETCH_WAIT_MS < 1500  # Faust's own: 1500


def test_a_call_delegated_to_the_consumer_is_made_in_the_callers_task(
    tmp_path, monkeypatch
) -> None:
    """Faust would queue it for worker tasks of the same loop and hand the result back."""
    monkeypatch.chdir(tmp_path)
    settings = Settings(namespace="fetchdirect", metrics_port=0)
    app = create_app(settings, analytics_config(settings, {}))
    seen: list[asyncio.Task[object] | None] = []

    async def fetch(n: int, *, times: int) -> int:
        seen.append(asyncio.current_task())
        return n * times

    def position() -> int:  # Faust delegates plain functions too
        return 7

    async def fail() -> None:
        raise RuntimeError("broker said no")

    async def calls() -> None:
        thread = app.consumer._new_consumer_thread()
        async with asyncio.timeout(5):  # queued, the call would wait for workers never started
            assert await thread.call_thread(fetch, 3, times=2) == 6
            assert seen == [asyncio.current_task()]
            assert await thread.call_thread(position) == 7
            try:
                await thread.call_thread(fail)
            except RuntimeError as exc:
                assert str(exc) == "broker said no"
            else:
                raise AssertionError("the call's error was not raised to its caller")

    asyncio.run(calls())
