"""Waiting for a broker says so at once, in one line, and ends in one clear error."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from tickstream.kafka_io import ensure_topics
from tickstream.settings import ConfigError, Settings


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once closed


async def test_waiting_for_a_broker_says_so_once_and_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bootstrap = f"127.0.0.1:{closed_port()}"
    caplog.set_level(logging.INFO)
    started, wall = time.monotonic(), time.time()
    with pytest.raises(ConfigError, match=f"no Kafka broker answers at {bootstrap}"):
        await ensure_topics(Settings(kafka_bootstrap=bootstrap), attempts=2)
    assert time.monotonic() - started < 10
    waiting = [r for r in caplog.records if "waiting for a Kafka broker" in r.getMessage()]
    assert len(waiting) == 1
    assert waiting[0].getMessage() == (
        f"waiting for a Kafka broker at {bootstrap}: none answers yet; trying for up to 2 s "
        "(`tickstream kafka up` starts a local one)"
    )
    assert waiting[0].created - wall < 1.5  # at the first refusal, not at the end
    assert not [r for r in caplog.records if r.getMessage().startswith("Unable connect to")]
    assert not logging.getLogger("aiokafka").filters  # the per-attempt noise filter is gone
