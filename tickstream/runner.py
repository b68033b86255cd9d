"""`tickstream run`: the whole pipeline on one machine.

It starts the local broker when none answers (and stops it again), the stream
processor as a child process (a Faust worker), and the sink and the producer in
this process. With a replay file and ``until_drained`` it returns once every
row derived from the file is in ClickHouse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from producers.publisher import Publisher, PublishReport
from producers.replay import ReplayConfig, count_lines, earliest_ts_ms, replay
from producers.validation import ValidationConfig, Validator
from sinks.clickhouse_sink import ClickHouseSink
from tickstream import kafka_local, metrics
from tickstream.kafka_io import ensure_topics
from tickstream.progress import progress_printer
from tickstream.settings import Settings, envvar

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunOptions:
    replay: Path | None = None
    until_drained: bool = False
    speed: float = 0.0
    drain_timeout_s: float = 900.0


class PipelineFailed(RuntimeError):
    pass


def processor_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The child process running the Faust worker, configured through TICKSTREAM_* variables."""
    from tickstream.commands.pipeline import ANALYTICS_SETTINGS

    env = dict(os.environ)
    names = (
        "kafka_bootstrap",
        "namespace",
        "partitions",
        "processor_batch",
        "processor_batch_ms",
        "clickhouse_url",
        "clickhouse_database",
        *ANALYTICS_SETTINGS,
    )
    for name in names:
        env[envvar(name)] = str(getattr(settings, name))
    env[envvar("metrics_port")] = str(settings.metrics_port + 1 if settings.metrics_port else 0)
    return [sys.executable, "-m", "tickstream", "process"], env


class Pipeline:
    def __init__(self, settings: Settings, options: RunOptions) -> None:
        self.settings = settings
        self.options = options
        self.started_broker = False
        self.processor: subprocess.Popen[bytes] | None = None
        self.sink = ClickHouseSink(settings)

    def start_broker_if_needed(self) -> None:
        bootstrap = self.settings.kafka_bootstrap
        if kafka_local.reachable(bootstrap):
            log.info("using the Kafka broker at %s", bootstrap)
            return
        if not kafka_local.is_loopback(bootstrap):
            raise PipelineFailed(
                f"--kafka-bootstrap / TICKSTREAM_KAFKA_BOOTSTRAP: no broker answers at {bootstrap}"
            )
        log.info("no broker at %s: starting the local one", bootstrap)
        kafka_local.broker("up", self.settings.kafka_port)
        self.started_broker = True

    async def _write_seeds(self) -> None:
        """The sink holds the chDB directory, so read the record seeds here for the processor."""
        if self.settings.record_seeds:
            return
        from processors.seeds import seeds_from_clickhouse, seeds_to_json

        as_of = None
        if self.options.replay is not None:  # history before the file, not what it set itself
            as_of = earliest_ts_ms(ReplayConfig(self.options.replay))
        ch = self.sink.ch
        seeds = await ch.run(
            seeds_from_clickhouse, ch.client, self.settings.clickhouse_database, as_of
        )
        path = Path(".tickstream") / f"record-seeds-{self.settings.namespace}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(seeds_to_json(seeds))
        self.settings = self.settings.replace(record_seeds=str(path))

    def start_processor(self) -> None:
        command, env = processor_command(self.settings)
        env["TICKSTREAM_SEED_FROM_CLICKHOUSE"] = "0"
        self.processor = subprocess.Popen(command, env=env)
        log.info("stream processor started (pid %d)", self.processor.pid)

    def check_processor(self) -> None:
        if self.processor is not None and self.processor.poll() is not None:
            raise PipelineFailed(
                f"the stream processor exited with code {self.processor.returncode}"
            )

    async def run(self) -> int:
        self.start_broker_if_needed()
        try:
            await ensure_topics(self.settings)
            port = metrics.serve_metrics(self.settings.metrics_port, "producer+sink")
            await self.sink.start()
            await self._write_seeds()
            self.start_processor()
            self._print_banner(port)
            sink_task = asyncio.create_task(self.sink.run(), name="sink")
            try:
                if self.options.replay is not None:
                    return await self._replay(self.options.replay, sink_task)
                return await self._live(sink_task)
            finally:
                await self.sink.stop()
                sink_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sink_task
        finally:
            self.shutdown()

    async def _replay(self, path: Path, sink_task: asyncio.Task[None]) -> int:
        run_id = uuid.uuid4().hex
        total = count_lines(path)
        log.info("replaying %s (%d lines) as run %s", path, total, run_id)
        validator = Validator(ValidationConfig())
        async with Publisher(self.settings, validator) as publisher:
            report = await publisher.publish(
                replay(ReplayConfig(path, speed=self.options.speed)),
                progress=progress_printer(total, "replay"),
            )
            await publisher.end_of_input(run_id)
        print(f"published: {report.summary()}", file=sys.stderr)
        if not self.options.until_drained:
            return await self._live(sink_task, publish=False)
        await self._wait_drained(run_id, sink_task, report)
        await self.sink.merge_touched()
        print(f"drained: everything derived from {path} is in ClickHouse", file=sys.stderr)
        return 0

    async def _wait_drained(
        self, run_id: str, sink_task: asyncio.Task[None], report: PublishReport
    ) -> None:
        deadline = time.monotonic() + self.options.drain_timeout_s
        waiter = asyncio.create_task(self.sink.wait_drained(run_id))
        try:
            while not waiter.done():
                self.check_processor()
                if sink_task.done():
                    sink_task.result()
                    raise PipelineFailed("the sink stopped before the run drained")
                if time.monotonic() > deadline:
                    raise PipelineFailed(
                        f"not drained after {self.options.drain_timeout_s:.0f}s; is the processor "
                        "keeping up? (see its log above)"
                    )
                await asyncio.wait({waiter}, timeout=0.5)
        finally:
            waiter.cancel()

    async def _live(self, sink_task: asyncio.Task[None], publish: bool = True) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        producer_task: asyncio.Task[None] | None = None
        if publish:
            producer_task = asyncio.create_task(self._simulate(), name="simulator")
        print("running; Ctrl-C to stop", file=sys.stderr)
        while not stop.is_set():
            self.check_processor()
            if sink_task.done():
                sink_task.result()
            if producer_task is not None and producer_task.done():
                producer_task.result()
                producer_task = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
        if producer_task is not None:
            producer_task.cancel()
        return 0

    async def _simulate(self) -> None:
        from producers.simulator import SimulatorConfig, simulate

        validator = Validator(ValidationConfig())
        async with Publisher(self.settings, validator) as publisher:
            await publisher.publish(simulate(SimulatorConfig(rate_per_s=20.0)))

    def _print_banner(self, port: int) -> None:
        s = self.settings
        lines = [
            f"tickstream namespace {s.namespace!r}, Kafka {s.kafka_bootstrap}",
            f"ClickHouse {s.clickhouse_url} (database {s.clickhouse_database})",
        ]
        if port:
            lines.append(
                f"metrics: http://127.0.0.1:{port}/metrics (producer, sink), "
                f"http://127.0.0.1:{port + 1}/metrics (processor)"
            )
        lines.append(
            'query afterwards: tickstream query "SELECT * FROM tickstream.bars_1m LIMIT 10"'
        )
        print("\n".join(lines), file=sys.stderr)

    def shutdown(self) -> None:
        if self.processor is not None and self.processor.poll() is None:
            self.processor.send_signal(signal.SIGTERM)
            try:
                self.processor.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.processor.kill()
                self.processor.wait()
        self.sink.close()
        if self.started_broker:
            kafka_local.broker("down", self.settings.kafka_port, check=False)
