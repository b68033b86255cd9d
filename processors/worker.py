"""Running the processor as a process: topics, record seeds, metrics, and the Faust worker.

Everything that happens before and around the app (``processors.app.create_app``) lives
here, so that the app stays a pure factory that reads nothing from the environment. A
worker that cannot go on (a send refused for good) ends the process with one ``Error:``
line and exit code 1. A broker lost while the worker starts (Faust gives up at once
there, unlike later in its life, when the client waits for the broker) is waited for,
and the worker started again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import faust

from processors.broker_errors import BROKER_RETURN_WAIT_S, broker_away, error_text
from processors.config import analytics_config
from processors.kernels.records import RecordSeed
from tickstream import metrics
from tickstream.service_runtime import tune_for_latency
from tickstream.settings import Settings

log = logging.getLogger(__name__)


def _one_line_broker_loss(record: logging.LogRecord) -> bool:
    """Keep Faust's report of a broker lost while it starts, without its traceback.

    The crash is expected and handled (``run_worker`` waits for the broker and says so),
    so a traceback would only tell a user that something broke.
    """
    exc = record.exc_info[1] if record.exc_info else None
    if exc is not None and broker_away(exc):
        record.exc_info, record.exc_text = None, None
    return True


def load_seeds(settings: Settings, from_clickhouse: bool) -> dict[str, RecordSeed]:
    """Record history for symbols the restored state does not know yet.

    From ClickHouse, it waits up to ``clickhouse_wait_s`` for ClickHouse
    to answer, then raises ClickHouseUnavailable (see ``processors.seeds.wait_for_seeds``).
    """
    from processors.seeds import seeds_from_file, wait_for_seeds

    if settings.record_seeds:
        seeds = seeds_from_file(Path(settings.record_seeds))
        log.info("record seeds from %s: %s", settings.record_seeds, ", ".join(seeds) or "none")
        return seeds
    if not from_clickhouse:
        return {}
    return wait_for_seeds(
        settings.clickhouse_url, settings.clickhouse_database, settings.clickhouse_wait_s
    )


class _Worker(faust.Worker):
    """A Faust worker that tells a broker lost while it starts from any other failure.

    Faust's start-up gives up on the first connection error (exit 1 and a traceback),
    where the same client later in its life waits for the broker; ``broker_lost`` keeps
    that error instead, so that ``run_worker`` can wait for the broker and start again.
    """

    broker_lost: BaseException | None = None

    def __init__(self, app: faust.App, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        # the command's log filters (its hiding of the Kafka client's normal start-up
        # errors), which Faust's own logging set-up would drop with the handlers
        self._filters = [f for h in logging.root.handlers for f in h.filters]
        self._filters.append(_one_line_broker_loss)

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        for handler in logger.handlers:
            for kept in self._filters:
                if kept not in handler.filters:
                    handler.addFilter(kept)

    async def start(self) -> None:
        try:
            await super().start()
        except Exception as exc:
            if not broker_away(exc):
                raise
            self.broker_lost = exc  # shut down as after a stop; run_worker starts again

    def lost_broker(self) -> BaseException | None:
        """The broker-away error that stopped this worker, if one did.

        Either ``start`` kept it, or one of Faust's services crashed of it (its conductor
        asks for metadata in a task of its own, which fails on the first refused
        connection while the worker starts): both are waited out the same way.
        """
        if self.broker_lost is not None:
            return self.broker_lost
        crash = self.crash_reason
        return crash if crash is not None and broker_away(crash) else None


def run_worker(
    settings: Settings,
    seed_from_clickhouse: bool = True,
    loglevel: str = "warn",
) -> None:
    """Run the processor until stopped (SIGINT/SIGTERM); exposes metrics if configured.

    A worker that cannot go on (a send refused for good) ends the process with one
    ``Error:`` line and exit code 1.
    """
    from processors.app import create_app  # not at the top: processors.app re-exports this
    from processors.partitions import check_state

    topics_ready(settings)
    # another group layout's state would be refused at a partition's first event; refused
    # here, it is one line before anything runs
    asyncio.run(check_state(settings))
    seeds = load_seeds(settings, seed_from_clickhouse)
    metrics.serve_metrics(settings.metrics_port, "processor")
    config = analytics_config(settings, seeds)
    failures: list[str] = []
    tune_for_latency()

    def stop(reason: str) -> None:
        """Stop the worker the way SIGTERM does: acked offsets committed, nothing more."""
        failures.append(reason)
        log.info("stopping the processor: %s", reason)
        os.kill(os.getpid(), signal.SIGTERM)

    while True:
        asyncio.set_event_loop(asyncio.new_event_loop())  # the last one was closed
        app = create_app(settings, config, on_fatal=stop)
        worker = _Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
        worker.spinner = None  # a terminal spinner only garbles logs shared with other processes
        try:
            worker.execute_from_commandline()
        except SystemExit:
            if failures:
                print(f"Error: the processor stopped: {failures[0]}", file=sys.stderr)
                sys.exit(1)
            lost = worker.lost_broker()
            if lost is None:
                if worker.crash_reason is not None:  # mode has logged it: one line to say so
                    reason = error_text(worker.crash_reason)
                    print(f"Error: the processor crashed: {reason}", file=sys.stderr)
                    sys.exit(1)
                raise
        log.warning(
            "the Kafka broker at %s went away and stopped the processor (%s); "
            "waiting for it to return, then starting again",
            settings.kafka_bootstrap,
            error_text(lost),
        )
        topics_ready(settings, attempts=BROKER_RETURN_WAIT_S)


def topics_ready(settings: Settings, attempts: int = 30) -> None:
    """``ensure_topics``, waiting for a broker that went away half-way as for a missing one.

    The first wait is ``attempts`` seconds (a broker that never answered: most likely a
    wrong address); one lost on the way is then waited for up to BROKER_RETURN_WAIT_S.
    """
    from tickstream.kafka_io import ensure_topics

    while True:
        try:
            asyncio.run(ensure_topics(settings, attempts=attempts))
            return
        except Exception as exc:
            if not broker_away(exc):
                raise
            log.warning(
                "the Kafka broker at %s went away while the topics were checked (%s); "
                "waiting for it to return",
                settings.kafka_bootstrap,
                error_text(exc),
            )
            attempts = BROKER_RETURN_WAIT_S
