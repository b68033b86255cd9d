"""The Kafka client's repeated errors: one line per format and half-minute, with a count."""

from __future__ import annotations

import io
import logging

from cli.kafka_log import RepeatedKafkaErrors

FAILED = "Group Coordinator Request failed: %s"


def record(msg: str, *args: object, name: str = "aiokafka.consumer.group_coordinator",
           level: int = logging.ERROR) -> logging.LogRecord:  # fmt: skip
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_repeated_error_is_shown_once_a_window_with_the_count_held_back() -> None:
    now = [0.0]
    repeats = RepeatedKafkaErrors(window_s=30, clock=lambda: now[0])
    shown = []
    for i in range(301):  # every 100 ms for 30 s, the broker away
        now[0] = i * 0.1
        r = record(FAILED, "[Error 7] NodeNotReadyError")
        if repeats.filter(r):
            shown.append((now[0], r.getMessage()))
    assert [t for t, _ in shown] == [0.0, 30.0]
    assert shown[0][1] == "Group Coordinator Request failed: [Error 7] NodeNotReadyError"
    assert shown[1][1] == (
        "Group Coordinator Request failed: [Error 7] NodeNotReadyError"
        " (and 299 more like it in 30 s)"
    )


def test_other_messages_levels_and_loggers_are_left_alone() -> None:
    now = [0.0]
    repeats = RepeatedKafkaErrors(window_s=30, clock=lambda: now[0])
    assert repeats.filter(record(FAILED, "x"))
    assert not repeats.filter(record(FAILED, "y"))  # same format, other values: a repeat
    assert repeats.filter(record('Unable connect to "%s:%s": %s', "h", 1, "refused"))
    assert repeats.filter(record(FAILED, "x", name="processors.worker"))
    assert repeats.filter(record(FAILED, "x", level=logging.INFO))
    now[0] = 31.0
    again = record(FAILED, "z")
    assert repeats.filter(again) and again.getMessage().endswith("(and 1 more like it in 31 s)")


def test_a_record_through_two_handlers_gets_one_verdict_and_one_count() -> None:
    now = [0.0]
    repeats = RepeatedKafkaErrors(window_s=30, clock=lambda: now[0])
    streams = [io.StringIO(), io.StringIO()]
    log = logging.getLogger("aiokafka.test_two_handlers")
    log.propagate = False
    handlers = [logging.StreamHandler(s) for s in streams]
    for handler in handlers:
        handler.addFilter(repeats)
        log.addHandler(handler)
    try:
        for _ in range(3):
            log.error(FAILED, "NodeNotReadyError")
        now[0] = 30.0
        log.error(FAILED, "NodeNotReadyError")
    finally:
        for handler in handlers:
            log.removeHandler(handler)
    for stream in streams:
        assert stream.getvalue().splitlines() == [
            "Group Coordinator Request failed: NodeNotReadyError",
            "Group Coordinator Request failed: NodeNotReadyError (and 2 more like it in 30 s)",
        ]
