"""Shared fixtures: a real Kafka broker for the session, fresh namespaces and chDB dirs."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tickstream import kafka_local
from tickstream.settings import Settings

TEST_KAFKA_PORT = int(os.environ.get("TICKSTREAM_TEST_KAFKA_PORT", "19092"))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real broker on loopback: started here (fresh storage) unless one already answers."""
    bootstrap = f"127.0.0.1:{TEST_KAFKA_PORT}"
    if kafka_local.reachable(bootstrap):
        yield bootstrap
        return
    state = Path(tempfile.mkdtemp(prefix="tickstream-test-kafka-"))
    kafka_local.broker("up", TEST_KAFKA_PORT, state_dir=state)
    try:
        yield bootstrap
    finally:
        kafka_local.broker("down", TEST_KAFKA_PORT, state_dir=state, check=False)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def chdb_url(tmp_path: Path) -> str:
    return f"chdb://{tmp_path / 'chdb'}"


@pytest.fixture
def settings(kafka_bootstrap: str, namespace: str, chdb_url: str) -> Settings:
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        namespace=namespace,
        clickhouse_url=chdb_url,
        metrics_port=0,
        partitions=3,
    )
