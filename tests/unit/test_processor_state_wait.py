"""Reading the processor's state back waits for a broker that went away, bounded.

An agent failing there would be restarted by Faust in place, and the events the failed
one had taken would be lost; so the read-back waits (saying so once), then fails.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest
from aiokafka.errors import KafkaConnectionError

from processors.app import load_snapshots


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_broker_that_does_not_return_fails_after_the_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bootstrap = f"127.0.0.1:{closed_port()}"
    began = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(KafkaConnectionError):
        asyncio.run(load_snapshots(bootstrap, "ns.processor.state", wait_s=1.5))
    assert time.monotonic() - began >= 1.5
    waiting = [r for r in caplog.records if "waiting for the Kafka broker" in r.getMessage()]
    assert len(waiting) == 1 and bootstrap in waiting[0].getMessage()
