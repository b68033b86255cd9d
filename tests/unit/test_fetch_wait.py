"""The desk path's consumers poll with the short fetch wait, not the clients' defaults."""

from __future__ import annotations

import asyncio

from processors.app import create_app
from processors.config import analytics_config
from tickstream.kafka_io import LIVE_FETCH_WAIT_MS
from tickstream.settings import Settings


def test_the_processors_faust_consumer_polls_with_the_short_wait(tmp_path, monkeypatch) -> None:
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
