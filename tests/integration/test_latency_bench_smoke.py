"""`tickstream bench latency` runs end to end at a tiny rate and prints its figures.

No timing is asserted: only that the whole pipeline (processor, gateway, a websockets
client) was started, that record breaks reached the client, that each section of the
report is there, and that the run's topics are gone from the broker afterwards.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_backfill import topics

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]


def test_latency_bench_prints_figures(kafka_bootstrap: str) -> None:
    command = [
        sys.executable, "-m", "cli", "bench", "latency",
        "--kafka-bootstrap", kafka_bootstrap,
        "--rates", "200", "--seconds", "2", "--breaks-per-s", "10",
        "--allowed-lateness-ms", "0", "--ref-rate", "20", "--warm-up-s", "1",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "allowed lateness 0 ms" in out
    assert "shared with other work" in out
    assert "200 ticks/s (achieved" in out
    assert "warming up: 200 ticks/s for 1 s" in done.stderr
    confirmed = next(line for line in out.splitlines() if "record_break confirmed" in line)
    assert "p50" in confirmed and "p99" in confirmed and "max" in confirmed
    assert "retractions" in out
    assert "tick REF" in out
    namespace = re.search(r"namespace (latency\w+)", out)
    assert namespace is not None
    assert not [t for t in asyncio.run(topics(kafka_bootstrap)) if t.startswith(namespace[1])]
