"""A benchmark's scratch namespace is deleted at the end: its topics, Faust's among them,
and the processor's Faust directory; other namespaces are left alone, and a broker that
does not answer is said in one line, not raised."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.scratch import drop_scratch
from tests.integration.test_backfill import topics
from tickstream.kafka_io import ensure_topics
from tickstream.settings import Settings
from tickstream.topics import Topics


async def _create(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()


@pytest.mark.kafka
def test_the_namespace_topics_and_faust_directory_go(kafka_bootstrap: str, tmp_path: Path) -> None:
    scratch = Settings(kafka_bootstrap=kafka_bootstrap, namespace="s" + uuid.uuid4().hex[:8])
    # a namespace whose name starts like the scratch one, without its dot
    other = Settings(kafka_bootstrap=kafka_bootstrap, namespace=scratch.namespace + "x")
    asyncio.run(ensure_topics(scratch))
    asyncio.run(ensure_topics(other))
    faust_topic = f"{Topics(scratch.namespace).group('processor')}-__assignor-__leader"
    asyncio.run(_create(kafka_bootstrap, faust_topic))
    faust_dir = tmp_path / ".tickstream" / "faust" / scratch.namespace
    (faust_dir / "v1").mkdir(parents=True)
    before = asyncio.run(topics(kafka_bootstrap))
    assert Topics(scratch.namespace).ticks in before and faust_topic in before

    asyncio.run(drop_scratch(scratch, tmp_path))

    after = asyncio.run(topics(kafka_bootstrap))
    assert not [t for t in after if t.startswith(scratch.namespace + ".")]
    assert Topics(other.namespace).ticks in after
    assert not faust_dir.exists()
    asyncio.run(drop_scratch(other, tmp_path))


def test_a_broker_away_is_said_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    away = Settings(kafka_bootstrap="127.0.0.1:1", namespace="away")
    faust_dir = tmp_path / ".tickstream" / "faust" / "away"
    faust_dir.mkdir(parents=True)

    asyncio.run(drop_scratch(away, tmp_path))

    err = capsys.readouterr().err
    assert "the run's topics (away.*) were not deleted" in err
    assert not faust_dir.exists()  # the local part is still cleaned up
