"""A clock heartbeat on the ticks topic is for the processor: the sink stores nothing of it
and never takes it for an end-of-input marker (it used to fail on its missing run_id)."""

from __future__ import annotations

from aiokafka import TopicPartition

from sinks.clickhouse_sink import ClickHouseSink, _Pending
from sinks.rows import Eof, rows_of
from tickstream.contracts import encode_end_of_input, encode_heartbeat
from tickstream.settings import Settings
from tickstream.topics import Topics

TS_MS = 1_769_385_600_000


def test_rows_of_a_heartbeat_is_nothing() -> None:
    topics = Topics("beats")
    assert list(rows_of(topics, topics.ticks, encode_heartbeat("XAU", TS_MS))) == []
    (eof,) = rows_of(topics, topics.ticks, encode_end_of_input("run1", 0, 3))
    assert isinstance(eof, Eof) and eof.run_id == "run1"


def test_the_sink_routes_a_heartbeat_to_nowhere() -> None:
    sink = ClickHouseSink(Settings(namespace="beats", metrics_port=0))
    tp = TopicPartition(sink.topics.ticks, 0)
    pending = _Pending()
    sink._route(tp, 7, encode_heartbeat("XAU", TS_MS), pending)
    assert pending.eofs == [] and pending.count == 0 and not pending.refused
    assert pending.offsets[tp] == 8  # taken: its offset is committed with the next insert
    sink._route(tp, 8, encode_end_of_input("run1", 0, 3), pending)
    assert [eof.run_id for _, eof in pending.eofs] == ["run1"]
