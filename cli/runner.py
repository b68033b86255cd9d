"""`tickstream run`: the whole pipeline on one machine.

It starts the local broker when none answers (and stops it again), the stream
processor and the desk-feed gateway (live board) as child processes, and the sink
and the producer in this process. With a replay file and ``until_drained`` it
returns once every row derived from the file is in ClickHouse.

A replay file is first compared with the namespace's clock (cli/backfill.py): one
behind it is refused with the commands that would work, unless ``backfill`` gives the
run a namespace of its own (fresh topics and processor state, the same database) that
is removed again at the end. The last line of every run counts its late ticks.

This module is the run's sequence; its parts live beside it: the children and their
supervision (cli/children.py, cli/parent_death.py), what stops a run (cli/run_control.py),
its ports (cli/run_ports.py), the processors' seeds (cli/run_seeds.py), and what it
prints (cli/run_report.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cli import backfill
from cli.children import (
    Children,
    RestartPolicy,
    child_command,
    gateway_command,
    processor_command,
    processor_metrics_port,
)
from cli.progress import progress_printer
from cli.run_control import RunFailed, Stopper
from cli.run_ports import check_ports
from cli.run_report import banner, board_url, late_ticks, local_host
from cli.run_seeds import merge_seed_docs, write_seeds
from producers.publisher import Publisher, PublishReport
from producers.records import wall_ms
from producers.replay import ReplayConfig, count_lines, replay
from producers.simulator import SimulatorConfig
from producers.validation import Validator
from producers.validation_config import ValidationConfig, validation_config
from sinks.clickhouse_sink import ClickHouseSink
from tickstream import chdb_http, kafka_local, metrics
from tickstream.chdb_http import ChdbHttpServer
from tickstream.kafka_io import ensure_topics
from tickstream.service_runtime import tune_for_latency
from tickstream.settings import Settings

__all__ = [  # what tests and commands import from here; the parts live in cli/run_*.py
    "RunFailed",
    "RunOptions",
    "Runner",
    "child_command",
    "gateway_command",
    "merge_seed_docs",
    "processor_command",
    "processor_metrics_port",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunOptions:
    replay: Path | None = None
    until_drained: bool = False
    speed: float = 0.0
    drain_timeout_s: float = 900.0
    gateway_port_given: bool = True  # False (the default port): a busy port only warns
    gateway_token: str | None = None  # None = a fresh random one
    gateway_listen_timeout_s: float = 120.0
    clickhouse_http_port_given: bool = True  # False (the run's default port): a busy one warns
    backfill: bool = False  # the replay gets a clock of its own: see cli/backfill.py
    allow_late: bool = False  # publish a replay behind the namespace's clock all the same
    argv: tuple[str, ...] = ("run",)  # the command line after `tickstream`, for instructions


class Runner:
    """`tickstream run`: the broker, the children (processors, gateway), the sink and a source."""

    def __init__(
        self, settings: Settings, options: RunOptions, policy: RestartPolicy | None = None
    ) -> None:
        self.settings = settings
        self.options = options
        self.started_broker = False
        self.children = Children(policy)  # cli/children.py: started, supervised, stopped
        self.watch: asyncio.Task[None] | None = None  # the supervision of the children
        self.stopper: Stopper | None = None  # signals, a child given up on: cli/run_control.py
        self.gateway_token = options.gateway_token or secrets.token_urlsafe(18)
        self.gateway_skipped: str | None = None
        # ClickHouse's HTTP interface over the chDB directory the sink holds (tickstream.chdb_http)
        self.clickhouse_http: ChdbHttpServer | None = None
        given_password = settings.clickhouse_http_password
        self.clickhouse_http_password = given_password or secrets.token_urlsafe(18)
        self.sink = ClickHouseSink(settings)
        self.live = False  # in the run-until-Ctrl-C phase (Ctrl-C is then a normal stop)
        self.run_id = uuid.uuid4().hex
        self.started_ms = wall_ms()  # late ticks received since then are this run's
        self.check: backfill.FileCheck | None = None  # the replay file against the clock
        self.backfill_of: str | None = None  # the namespace a backfill writes for
        self.ending = ""  # what the run's last line says before its late ticks
        self.sim_config = SimulatorConfig(rate_per_s=settings.sim_rate)

    def start_broker_if_needed(self) -> None:
        bootstrap = self.settings.kafka_bootstrap
        if kafka_local.reachable(bootstrap):
            log.info("using the Kafka broker at %s", bootstrap)
            return
        if not kafka_local.is_loopback(bootstrap):
            raise RunFailed(
                f"--kafka-bootstrap / TICKSTREAM_KAFKA_BOOTSTRAP: no broker answers at {bootstrap}"
            )
        log.info("no broker at %s: starting the local one", bootstrap)
        kafka_local.broker("up", self.settings.kafka_port)
        self.started_broker = True

    async def _check_replay(self, path: Path) -> None:
        """Compare the file with the namespace's clock; backfill, refuse, or go on.

        A backfill switches this run to a namespace of its own before anything else
        touches Kafka: the sink, the processor and the gateway all follow ``self.settings``.
        """
        seeds_as_of_file = not self.settings.record_seeds  # _write_seeds needs its first tick
        config = ReplayConfig(path)
        self.check = check = await backfill.check_file(self.settings, config, seeds_as_of_file)
        namespace = self.settings.namespace
        if self.options.backfill:
            own = backfill.backfill_namespace(namespace, self.run_id)
            database = self.settings.clickhouse_database
            log.info(
                "backfill: %s gets a clock of its own (namespace %s), its rows go to database "
                "%s; namespace %r's clock is not touched",
                path,
                own,
                database,
                namespace,
            )
            self.backfill_of = namespace
            self.settings = self.settings.replace(namespace=own, clickhouse_database=database)
            self.sink = ClickHouseSink(self.settings)
            await ensure_topics(self.settings)
            return
        if not check.behind:
            return
        if self.options.allow_late:
            log.warning(
                "%d of the %d ticks of %s are behind namespace %r's clock; --allow-late: they "
                "go to late_ticks\n%s",
                check.behind,
                check.ticks,
                path,
                namespace,
                check.describe(),
            )
            return
        raise RunFailed(self._refusal(check))

    def _refusal(self, check: backfill.FileCheck) -> str:
        """Why the replay would come to nothing, and the commands that would do what was meant."""
        s = self.settings
        fresh = backfill.fresh_namespace(s.namespace, check)
        argv = self.options.argv
        return (
            f"{backfill.behind_summary(s.namespace, check)}\n"
            f"Backfill it into database {s.clickhouse_database} with a clock of its own (its rows "
            "replace any of the same identity computed before):\n"
            f"  {backfill.command_line(argv, backfill=None)}\n"
            f"or replay it into a new namespace (its own topics and database "
            f"{s.replace(namespace=fresh).clickhouse_database}):\n"
            f"  {backfill.command_line(argv, namespace=fresh)}\n"
            "or add --allow-late to publish it all the same (its late ticks go to late_ticks)."
        )

    def _validation(self) -> ValidationConfig:
        """--price-bands, and the record seeds as each symbol's first-tick reference."""
        from processors.seeds import seeds_from_file

        path = self.settings.record_seeds
        return validation_config(self.settings, seeds_from_file(Path(path)) if path else None)

    async def _write_seeds(self) -> None:
        """The sink holds the chDB directory: read the record seeds here for the processors."""
        as_of = self.check.first_ms if self.check is not None else None
        simulated = self.sim_config if self.options.replay is None else None
        self.settings = await write_seeds(self.settings, self.sink, as_of, simulated)

    def start_processors(self) -> None:
        commands = []
        for index in range(self.settings.processors):
            command, env = processor_command(self.settings, index)
            command.append("--no-seed-from-clickhouse")  # _write_seeds gave it the seeds
            commands.append((command, env))
        self.children.start_processors(commands)
        for child in self.children.processors:
            log.info("%s started (pid %s)", child.name, child.pid)

    def start_gateway(self) -> None:
        """Start the gateway child (its port was checked with the others: cli/run_ports.py)."""
        if self.gateway_skipped is not None:
            return
        child = self.children.start_gateway(gateway_command(self.settings, self.gateway_token))
        log.info("gateway started (pid %s) on port %d", child.pid, self.settings.gateway.port)

    async def wait_gateway_listening(self) -> None:
        """Wait (bounded) until the gateway accepts connections, so the banner's URL works.

        A gateway that dies meanwhile is the supervisor's: started again, or the run stops.
        """
        if self.children.gateway is None:
            return
        host = local_host(self.settings.gateway.host)
        port = self.settings.gateway.port
        deadline = time.monotonic() + self.options.gateway_listen_timeout_s
        while True:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                reader, writer = await asyncio.open_connection(host, port)
                try:  # any HTTP answer will do: 503 only means it is still catching up
                    if self.settings.gateway.tls_cert:  # TLS: accepting will do
                        return
                    writer.write(b"GET /healthz HTTP/1.1\r\nHost: tickstream\r\n\r\n")
                    if (await reader.readuntil(b"\r\n")).startswith(b"HTTP/"):
                        return
                finally:
                    writer.close()
            if time.monotonic() > deadline:
                raise RunFailed(
                    f"the gateway did not listen on port {port} within "
                    f"{self.options.gateway_listen_timeout_s:.0f}s (see its log above)"
                )
            await asyncio.sleep(0.2)

    def board_url(self) -> str:
        return board_url(self.settings, self.gateway_token)

    async def run(self) -> int:
        """The run, from the port checks to its last line.

        The signal handlers come first, before a topic, a port or a child: whatever
        stops the run from then on goes through the ``finally`` blocks that stop the
        children (which die with the run anyway, even on SIGKILL: cli/parent_death.py).
        """
        self.stopper = Stopper()
        try:
            chdb_http.check_settings(
                self.settings,
                self.clickhouse_http_password,
                required=self.options.clickhouse_http_port_given,
            )
            self.gateway_skipped = check_ports(self.settings, self.options.gateway_port_given)
            return await self._run()
        finally:
            self.stopper.close()

    async def _run(self) -> int:
        assert self.stopper is not None
        last_line = ""  # printed once everything has stopped: nothing comes after it
        try:
            try:
                port = await self._start()
            except BaseException as exc:
                with contextlib.suppress(Exception):  # its Kafka clients, if it got that far
                    await self.sink.stop()
                if not isinstance(exc, asyncio.CancelledError):
                    raise
                # a signal during start-up, or a child that could not start
                code = self.stopper.caught(lambda: self._interrupted(starting=True))
                last_line = self.ending
                return code
            self._print_banner(port)
            tune_for_latency()  # this process publishes (and sinks): the desk's path starts here
            sink_task = asyncio.create_task(self.sink.run(), name="sink")
            try:
                if self.options.replay is not None:
                    work = self._replay(self.options.replay, sink_task)
                else:
                    work = self._live(sink_task)
                code = await self.stopper.until_stopped(work, self._interrupted)
            finally:
                await self.sink.stop()
                sink_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sink_task
            last_line = f"{self.ending}; {await self._late_ticks()}"
            return code
        finally:
            self.stop_children()
            await self._remove_backfill_namespace()
            self.shutdown()
            if last_line:
                print(last_line, file=sys.stderr)

    async def _start(self) -> int:
        """Everything up to the banner; returns the run's metrics port (0: none)."""
        assert self.stopper is not None
        self.start_broker_if_needed()
        await ensure_topics(self.settings)
        if self.options.replay is not None:
            await self._check_replay(self.options.replay)
        port = metrics.serve_metrics(self.settings.metrics_port, "producer+sink")
        await self.sink.start()
        self.clickhouse_http = chdb_http.serve(  # the sink opened the engine: serve it
            self.settings,
            self.clickhouse_http_password,
            required=self.options.clickhouse_http_port_given,
        )
        await self._write_seeds()
        if self.settings.gateway.port:  # 0: this run serves no board
            self.start_gateway()  # it catches up with Kafka while the processors start
        self.start_processors()
        self.watch = asyncio.create_task(self.children.watch(self.stopper.fail), name="children")
        await self.wait_gateway_listening()
        return port

    def _interrupted(self, starting: bool = False) -> int:
        """Ctrl-C ends a live run normally; a replay cut short says so and exits 130."""
        if self.live or (starting and self.options.replay is None):
            self.ending = "stopped" if self.live else "stopped while starting"
            return 0
        self.ending = (
            "interrupted: the replay did not finish (what was published stays in Kafka; "
            "run again to complete it)"
        )
        if starting:
            self.ending = "interrupted while starting: nothing of the replay was published"
        elif self.backfill_of is not None:
            self.ending = (
                "interrupted: the backfill did not finish (its rows so far are in ClickHouse; "
                "run it again to complete it)"
            )
        return 130

    async def _wait_state_saved(self, timeout_s: float = 10.0) -> None:
        """Give the processors a moment to snapshot the end of input before they are stopped:
        the next replay into the namespace reads its clock from that snapshot (cli/backfill),
        and a restart then has nothing to redo. A backfill's state is dropped: no wait."""
        if self.backfill_of is not None:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # a state topic not readable yet: try again
                if await backfill.state_caught_up(self.settings):
                    return
            await asyncio.sleep(0.2)
        log.info("the processor's last snapshot may lag the end of input (it catches up on start)")

    async def _late_ticks(self) -> str:
        drained = self.ending.startswith("drained")
        database = self.settings.clickhouse_database
        return await late_ticks(self.sink, database, self.started_ms, drained)

    async def _replay(self, path: Path, sink_task: asyncio.Task[None]) -> int:
        run_id = self.run_id
        total = count_lines(path)
        log.info("replaying %s (%d lines) as run %s", path, total, run_id)
        validator = Validator(self._validation())
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
        await self._wait_state_saved()
        self.ending = f"drained: everything derived from {path} is in ClickHouse"
        if self.backfill_of is not None:
            self.ending += (
                f" (backfilled into database {self.settings.clickhouse_database} with a clock "
                f"of its own)"
            )
        return 0

    async def _wait_drained(
        self, run_id: str, sink_task: asyncio.Task[None], report: PublishReport
    ) -> None:
        deadline = time.monotonic() + self.options.drain_timeout_s
        waiter = asyncio.create_task(self.sink.wait_drained(run_id))
        try:
            while not waiter.done():
                if sink_task.done():
                    sink_task.result()
                    raise RunFailed("the sink stopped before the run drained")
                if time.monotonic() > deadline:
                    raise RunFailed(
                        f"not drained after {self.options.drain_timeout_s:.0f}s; is the processor "
                        "keeping up? (see its log above)"
                    )
                await asyncio.wait({waiter}, timeout=0.5)
        finally:
            waiter.cancel()

    async def _live(self, sink_task: asyncio.Task[None], publish: bool = True) -> int:
        """Run until cancelled (Ctrl-C): watch the children, the sink and the simulator."""
        self.live = True
        producer_task: asyncio.Task[None] | None = None
        if publish:
            producer_task = asyncio.create_task(self._simulate(), name="simulator")
        print("running; Ctrl-C to stop", file=sys.stderr)
        stats = self.sink.stats
        last_rows, last_report = stats.rows_inserted, time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now - last_report >= 30:  # a heartbeat a person can read
                    rate = (stats.rows_inserted - last_rows) / (now - last_report)
                    print(
                        f"  {stats.rows_inserted:,} rows in ClickHouse ({rate:,.0f}/s lately)",
                        file=sys.stderr,
                    )
                    last_rows, last_report = stats.rows_inserted, now
                if sink_task.done():
                    sink_task.result()
                if producer_task is not None and producer_task.done():
                    producer_task.result()
                    producer_task = None
                await asyncio.sleep(1.0)
        finally:
            if producer_task is not None:  # its publisher stops its producer before we go on
                producer_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await producer_task

    async def _simulate(self) -> None:
        from producers.simulator import simulate

        validator = Validator(self._validation())
        async with Publisher(self.settings, validator) as publisher:
            await publisher.publish(simulate(self.sim_config))

    def _print_banner(self, port: int) -> None:
        gateway_up = self.children.gateway is not None
        text = banner(
            self.settings,
            metrics_port=port,
            simulated=self.options.replay is None,
            backfill_of=self.backfill_of,
            board=self.board_url() if gateway_up else None,
            board_skipped=self.gateway_skipped,
            clickhouse_http=self.clickhouse_http,
            clickhouse_http_password=self.clickhouse_http_password,
        )
        print(text, file=sys.stderr)

    def stop_children(self) -> None:
        """No restart from here on; then SIGTERM to every child, and wait (cli/children.py)."""
        self.children.stopping = True
        if self.watch is not None:
            self.watch.cancel()
        self.children.stop()

    async def _remove_backfill_namespace(self) -> None:
        """A backfill's namespace holds nothing once the run is over (its rows are in
        ClickHouse; an interrupted backfill is run again from the start), so its topics,
        processor data and seed file go, rather than pile up one set per backfill."""
        if self.backfill_of is None:
            return
        from aiokafka.admin import AIOKafkaAdminClient

        namespace = self.settings.namespace
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        try:
            await admin.start()
            names = [t for t in await admin.list_topics() if t.startswith(namespace + ".")]
            if names:
                await admin.delete_topics(names)
            log.info("backfill namespace %s removed (%d topics)", namespace, len(names))
        except Exception as exc:  # the backfill itself is done; leftovers only take space
            log.warning("could not remove the backfill's topics %s.* (%s)", namespace, exc)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        shutil.rmtree(Path(".tickstream") / "faust" / namespace, ignore_errors=True)
        (Path(".tickstream") / f"record-seeds-{namespace}.json").unlink(missing_ok=True)

    def shutdown(self) -> None:
        self.stop_children()
        if self.clickhouse_http is not None:  # before the engine closes under it
            self.clickhouse_http.close()
            self.clickhouse_http = None
        self.sink.close()
        if self.started_broker:
            kafka_local.broker("down", self.settings.kafka_port, check=False)
