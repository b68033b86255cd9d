"""What the Kafka client logs, made readable for the person watching a command.

aiokafka logs at ERROR what it retries by itself: while a consumer group forms on a fresh
broker (normal at every start, read by newcomers as a failure), and over and over while a
broker is away: "Group Coordinator Request failed" every 100 ms, several hundred lines in
a minute, which bury what the command itself says (that it waits for the broker). The
start-up noise is hidden (shown with -vv); a repeated error is shown once, then held back
for ``REPEAT_WINDOW_S`` and shown again with the count of the lines it stands for, so an
outage stays visible, and how long it lasts, in a line or two a half-minute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

START_UP_NOISE = ("GroupCoordinatorNotAvailable", "Marking the coordinator dead")
REPEAT_WINDOW_S = 30.0


def quiet_kafka_start_up(record: logging.LogRecord) -> bool:
    """False for aiokafka's errors of a consumer group forming (normal at every start)."""
    if not record.name.startswith("aiokafka"):
        return True
    message = record.getMessage()
    return not any(noise in message for noise in START_UP_NOISE)


class RepeatedKafkaErrors(logging.Filter):
    """One line per aiokafka warning or error message (its format, whatever the values) per
    ``window_s``; the next one shown says how many were held back since the last."""

    def __init__(
        self, window_s: float = REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        # per message format: when it was last shown, and how many were held back since
        self._seen: dict[tuple[str, object], tuple[float, int]] = {}
        self._last: tuple[logging.LogRecord, bool] | None = None  # one record, many handlers

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka") or record.levelno < logging.WARNING:
            return True
        if self._last is not None and self._last[0] is record:
            return self._last[1]
        key = (record.name, record.msg)
        now = self._clock()
        shown_at, held = self._seen.get(key, (None, 0))
        if shown_at is not None and now - shown_at < self._window_s:
            self._seen[key] = (shown_at, held + 1)
            show = False
        else:
            if held and shown_at is not None:
                since_s = now - shown_at
                record.msg = f"{record.getMessage()} (and {held} more like it in {since_s:.0f} s)"
                record.args = ()
            self._seen[key] = (now, 0)
            show = True
        self._last = (record, show)
        return show
