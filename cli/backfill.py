"""A replay file against its namespace's clock, before anything is published.

The processor judges lateness per symbol by its own clock: the newest tick it has seen
minus the allowed lateness, and whatever an end of input made final. A file older than
that clock (January's history replayed into a namespace that has run live since November,
or the same file a second time) would have every tick set aside as late: the run would
still end "drained", with the analytic tables untouched. So `tickstream run --replay` and
`tickstream produce replay` read the clock from the processor's last snapshot (its state
topic) and compare the file with it first; a file behind it is backfilled with a clock of
its own (`run --backfill`), published anyway on request (`--allow-late`), or refused with
the commands that would do what was meant.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from producers.replay import ReplayConfig, SymbolSpan, time_spans
from tickstream.settings import Settings
from tickstream.topics import Topics

if TYPE_CHECKING:
    from processors.core import ProcessorCore

log = logging.getLogger(__name__)

BACKFILL_MARK = "-backfill-"


@dataclass(frozen=True, slots=True)
class SymbolClock:
    newest_ms: int  # the newest tick of the symbol the processor has taken
    watermark_ms: int  # a tick stamped at or before this is late


async def _restored(settings: Settings) -> list[ProcessorCore]:
    """The namespace's processor cores (one per ticks partition) as of their last
    snapshots, restored by the processor's own code (so whatever it would resume from);
    none if it never wrote one."""
    from processors import app
    from processors.config import analytics_config
    from processors.core import ProcessorCore

    topics = Topics(settings.namespace)
    blobs = await app.load_snapshots(settings.kafka_bootstrap, topics.processor_state)
    cores = []
    for p, blob in sorted(blobs.items()):
        core = ProcessorCore(topics, analytics_config(settings), settings.partitions, partition=p)
        await asyncio.to_thread(core.restore, blob)
        cores.append(core)
    return cores


async def namespace_clock(settings: Settings) -> dict[str, SymbolClock]:
    """Per symbol, the clock of the namespace's processor as of its last snapshots; a
    namespace whose processor never ran has none. A symbol lives in one partition's core
    (its group's), so the cores' clocks never overlap."""
    clock: dict[str, SymbolClock] = {}
    for core in await _restored(settings):
        ordering = core.analytics.ordering
        for symbol, watermark in ordering.watermarks().items():
            clock[symbol] = SymbolClock(ordering.newest(symbol) or watermark, watermark)
    return clock


async def state_caught_up(settings: Settings) -> bool:
    """Whether the processor's last snapshot reflects every message of the ticks topic.

    Until it does, the clock read from it lags the processor's own (the end of input's
    flush, which makes the file's whole range final, may not be in it yet).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    cores = await _restored(settings)
    if not cores:
        return False
    applied = {p: offset for core in cores for p, offset in core.applied.items()}
    topics = Topics(settings.namespace)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topics.ticks, p) for p in range(settings.partitions)]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return all(applied.get(tp.partition, -1) >= end - 1 for tp, end in ends.items())


@dataclass(frozen=True, slots=True)
class FileCheck:
    """A replay file's times next to its namespace's clock."""

    path: Path
    spans: Mapping[str, SymbolSpan]
    clock: Mapping[str, SymbolClock]

    @property
    def ticks(self) -> int:
        return sum(s.ticks for s in self.spans.values())

    @property
    def behind(self) -> int:
        """Ticks of the file the namespace's processor would call late on arrival."""
        return sum(s.behind for s in self.spans.values())

    @property
    def first_ms(self) -> int | None:
        return min((s.first_ms for s in self.spans.values()), default=None)

    def describe(self) -> str:
        """Where the file starts and where the namespace's clock is, for its symbols."""
        spans = sorted(self.spans.items())
        start = ", ".join(f"{s} from {utc(span.first_ms)}" for s, span in spans)
        known = [s for s in sorted(self.spans) if s in self.clock]
        clock = ", ".join(f"{s} up to {utc(self.clock[s].newest_ms)}" for s in known)
        return f"  the file:      {start}\n  the namespace: {clock or 'none of its symbols yet'}"


def behind_summary(namespace: str, check: FileCheck) -> str:
    """What is wrong with publishing a file behind the namespace's clock, with the times."""
    if check.behind == check.ticks:
        count = f"all {check.ticks:,} of its ticks"
    else:
        count = f"{check.behind:,} of its {check.ticks:,} ticks"
    return (
        f"{check.path} is behind namespace {namespace!r}'s clock: {count} "
        "are stamped at or before the point the namespace's processor has reached for "
        "their symbol, so they would go to late_ticks only, and the analytic tables would "
        f"never see them.\n{check.describe()}"
    )


async def check_file(settings: Settings, config: ReplayConfig, scan: bool = False) -> FileCheck:
    """Read the namespace's clock, then the file once (which also gives its first tick).

    A namespace without a clock has nothing a file could be behind: the file is read only
    when ``scan`` asks for its times anyway (the first tick that record seeds are "as of").
    """
    try:
        clock = await namespace_clock(settings)
    except Exception as exc:  # an unreadable snapshot stops the processor too: let it say so
        log.warning(
            "could not read namespace %r's clock (%s): the replay is not checked against it",
            settings.namespace,
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        clock = {}
    if not clock and not scan:
        return FileCheck(config.path, {}, {})
    cutoffs = {symbol: c.watermark_ms for symbol, c in clock.items()}
    spans = await asyncio.to_thread(time_spans, config, cutoffs)
    return FileCheck(config.path, spans, clock)


def backfill_namespace(namespace: str, run_id: str) -> str:
    """A namespace of the run's own: fresh topics and processor state, hence a fresh clock."""
    return f"{namespace[:40]}{BACKFILL_MARK}{run_id[:8]}"


def utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def command_line(argv: Sequence[str], drop: Sequence[str] = (), **options: str | None) -> str:
    """``argv`` (a `tickstream ...` command line) as `tickstream ...`, flags changed.

    ``options``: flag name (``namespace``) -> value to set (replacing the flag if given),
    or None for a flag without value to add; ``drop``: flags without value to remove.
    """
    args = list(argv)
    for flag in drop:
        args = [a for a in args if a != f"--{flag}"]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None:
            if flag not in args:
                args.append(flag)
            continue
        for i, arg in enumerate(args):
            if arg == flag and i + 1 < len(args):
                args[i + 1] = value
                break
            if arg.startswith(flag + "="):
                args[i] = f"{flag}={value}"
                break
        else:
            args += [flag, value]
    return shlex.join(["tickstream", *args])


def fresh_namespace(namespace: str, check: FileCheck) -> str:
    """A new namespace to suggest: named after the day the file starts."""
    day = utc(check.first_ms).split()[0].replace("-", "") if check.first_ms else "new"
    return f"{namespace[:40]}-{day}"
