"""`tickstream run`: the whole pipeline on one machine.

It starts the local broker when none answers (and stops it again), the stream
processor and the desk-feed gateway (live board) as child processes, and the sink
and the producer in this process. With a replay file and ``until_drained`` it
returns once every row derived from the file is in ClickHouse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cli.progress import progress_printer
from producers.publisher import Publisher, PublishReport
from producers.replay import ReplayConfig, count_lines, earliest_ts_ms, replay
from producers.validation import ValidationConfig, Validator
from sinks.clickhouse_sink import ClickHouseSink
from tickstream import kafka_local, metrics
from tickstream.kafka_io import ensure_topics
from tickstream.redact import redact_url
from tickstream.settings import Settings, default_of, flag

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


class RunFailed(RuntimeError):
    pass


def child_command(subcommand: str, settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of a `tickstream SUBCOMMAND` child that builds ``settings``.

    Every setting travels as its TICKSTREAM_* variable (``Settings.to_env``), so there is
    no list of names to keep in step with the dataclass. click reads an empty variable as
    unset, though: a setting emptied on purpose (``--sync-groups ''``) also goes as a flag,
    which the child has (sections only on their own command, `tickstream gateway`).
    """
    argv = [sys.executable, "-m", "cli", subcommand]
    for name, value in settings.flat().items():
        section = name.partition(".")[0] if "." in name else None
        if value == "" and default_of(name) != "" and section in (None, subcommand):
            argv.append(f"{flag(name)}=")
    return argv, {**os.environ, **settings.to_env()}


def processor_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The child process running the Faust worker; its metrics on the next port."""
    metrics_port = settings.metrics_port + 1 if settings.metrics_port else 0
    return child_command("process", settings.replace(metrics_port=metrics_port))


def gateway_command(settings: Settings, token: str) -> tuple[list[str], dict[str, str]]:
    """The child process serving the desk feed and the live board for this run's namespace."""
    return child_command(
        "gateway", settings.replace(gateway=settings.gateway.replace(tokens=token))
    )


def _local_host(host: str) -> str:
    """The address to reach a server listening on ``host`` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


class Runner:
    """`tickstream run`: the broker, the children (processor, gateway), the sink and a source."""

    def __init__(self, settings: Settings, options: RunOptions) -> None:
        self.settings = settings
        self.options = options
        self.started_broker = False
        self.processor: subprocess.Popen[bytes] | None = None
        self.gateway: subprocess.Popen[bytes] | None = None
        self.gateway_token = options.gateway_token or secrets.token_urlsafe(18)
        self.gateway_skipped: str | None = None
        self.sink = ClickHouseSink(settings)
        self.live = False  # in the run-until-Ctrl-C phase (Ctrl-C is then a normal stop)

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
        command.append("--no-seed-from-clickhouse")  # _write_seeds gave it the seeds
        self.processor = subprocess.Popen(command, env=env)
        log.info("stream processor started (pid %d)", self.processor.pid)

    def check_processor(self) -> None:
        if self.processor is not None and self.processor.poll() is not None:
            raise RunFailed(f"the stream processor exited with code {self.processor.returncode}")

    def start_gateway(self) -> None:
        """Start the gateway child on its port unless something already holds the port.

        A port the user gave is required (the run fails); the default port is not (a warning,
        and the run goes on without a board).
        """
        port, host = self.settings.gateway.port, self.settings.gateway.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:  # bound and released at once; fails while something else listens there
            socket.create_server((host, port), family=family).close()
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            problem = (
                f"--gateway-port / TICKSTREAM_GATEWAY_PORT: cannot listen on {host}:{port} "
                f"({reason}); is a gateway already running? Pick another port, or 0 for none"
            )
            if self.options.gateway_port_given:
                raise RunFailed(problem) from exc
            log.warning("no live board: %s", problem)
            self.gateway_skipped = f"none: port {port} is taken (see the warning above)"
            return
        command, env = gateway_command(self.settings, self.gateway_token)
        self.gateway = subprocess.Popen(command, env=env)
        log.info("gateway started (pid %d) on port %d", self.gateway.pid, port)

    async def wait_gateway_listening(self) -> None:
        """Wait (bounded) until the gateway accepts connections, so the banner's URL works."""
        if self.gateway is None:
            return
        host = _local_host(self.settings.gateway.host)
        port = self.settings.gateway.port
        deadline = time.monotonic() + self.options.gateway_listen_timeout_s
        while True:
            self.check_gateway()
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

    def check_gateway(self) -> None:
        if self.gateway is not None and self.gateway.poll() is not None:
            raise RunFailed(f"the gateway exited with code {self.gateway.returncode}")

    def check_children(self) -> None:
        self.check_processor()
        self.check_gateway()

    def board_url(self) -> str:
        gateway = self.settings.gateway
        host = _local_host(gateway.host)
        host = f"[{host}]" if ":" in host else host
        scheme = "https" if gateway.tls_cert else "http"
        port, token = gateway.port, quote(self.gateway_token)
        return f"{scheme}://{host}:{port}/?token={token}"

    async def run(self) -> int:
        self.start_broker_if_needed()
        try:
            await ensure_topics(self.settings)
            port = metrics.serve_metrics(self.settings.metrics_port, "producer+sink")
            await self.sink.start()
            await self._write_seeds()
            if self.settings.gateway.port:  # 0: this run serves no board
                self.start_gateway()  # it catches up with Kafka while the processor starts
            self.start_processor()
            await self.wait_gateway_listening()
            self._print_banner(port)
            sink_task = asyncio.create_task(self.sink.run(), name="sink")
            try:
                if self.options.replay is not None:
                    work = self._replay(self.options.replay, sink_task)
                else:
                    work = self._live(sink_task)
                return await _until_interrupted(work, self._interrupted)
            finally:
                await self.sink.stop()
                sink_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sink_task
        finally:
            self.shutdown()

    def _interrupted(self) -> int:
        """Ctrl-C ends a live run normally; a replay cut short says so and exits 130."""
        if self.live:
            print("stopped", file=sys.stderr)
            return 0
        print(
            "interrupted: the replay did not finish (what was published stays in Kafka; "
            "run again to complete it)",
            file=sys.stderr,
        )
        return 130

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
                self.check_children()
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
                self.check_children()
                if sink_task.done():
                    sink_task.result()
                if producer_task is not None and producer_task.done():
                    producer_task.result()
                    producer_task = None
                await asyncio.sleep(1.0)
        finally:
            if producer_task is not None:
                producer_task.cancel()

    async def _simulate(self) -> None:
        from producers.simulator import SimulatorConfig, simulate

        validator = Validator(ValidationConfig())
        async with Publisher(self.settings, validator) as publisher:
            await publisher.publish(simulate(SimulatorConfig(rate_per_s=self.settings.sim_rate)))

    def _print_banner(self, port: int) -> None:
        s = self.settings
        lines = [
            f"tickstream namespace {s.namespace!r}, Kafka {s.kafka_bootstrap}",
            f"ClickHouse {redact_url(s.clickhouse_url)} (database {s.clickhouse_database})",
        ]
        if port:
            lines.append(
                f"metrics: http://127.0.0.1:{port}/metrics (producer, sink), "
                f"http://127.0.0.1:{port + 1}/metrics (processor)"
            )
        if self.options.replay is None:
            lines.append(f"simulated market: {s.sim_rate:g} ticks/s (--sim-rate)")
        if self.gateway is not None:
            url = self.board_url()
            lines.append(f"live board: {url}")
            ws = url.replace("http", "ws", 1).replace("/?", "/ws?", 1)
            lines.append(f"desk feed: {ws}")
        elif self.gateway_skipped:
            lines.append(f"live board: {self.gateway_skipped}")
        lines.append(
            'query afterwards: tickstream query "SELECT * FROM tickstream.bars_1m LIMIT 10"'
        )
        print("\n".join(lines), file=sys.stderr)

    def shutdown(self) -> None:
        children = [c for c in (self.gateway, self.processor) if c is not None]
        for child in children:  # both at once: the gateway closes its clients meanwhile
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.sink.close()
        if self.started_broker:
            kafka_local.broker("down", self.settings.kafka_port, check=False)


async def _until_interrupted(
    work: Coroutine[Any, Any, int], on_interrupt: Callable[[], int]
) -> int:
    """Await ``work``; SIGINT/SIGTERM cancel it and the exit code comes from ``on_interrupt``."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return on_interrupt()
    finally:
        stopper.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
