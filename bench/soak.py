"""Soak: the whole pipeline for N minutes under hostile inputs and kills, then the accounting.

    tickstream soak --minutes N [--rate 1500] [--kill-every 20] [--seed S] [--keep]

What runs: a Kafka broker of its own (``scripts/kafka-local.sh`` on a free port, fresh
storage in the work directory), the stream processor and the ClickHouse sink as child
processes (``tickstream process`` and ``tickstream sink``, as docker-compose runs them;
the sink writes a chDB directory in the work directory), and the producer in this
process: a generated gold/silver/platinum market mixed with hostile inputs, read by the
real CSV reader (``producers.replay``), plus JSON-typed inputs as the websocket source
hands them over, validated and published by the real ``Publisher``, paced at ``rate``
inputs a second for ``minutes``.

Hostile inputs: malformed lines (garbage, wrong field counts, unparseable numbers and
times, epoch seconds), wrong JSON types (lists, objects, booleans, nulls where numbers
belong), huge fields and lines, control characters, NaN/inf/negative prices, crossed
quotes, out-of-range sequence numbers, fat-finger spikes, future timestamps, exact
duplicates, late and out-of-order ticks, a clock jump (XPT's clock leaps six hours
ahead and stays there) and a clock step back (XAG's clock goes ten minutes back for a
burst).

Faults: every ``kill_every`` seconds on average (0.5x to 1.5x, at random) one component
is killed with SIGKILL and started again after a pause of up to three seconds: the
processor, the sink or the broker (its java process; restarted on the same storage), in
shuffled rounds so that each gets its turn. A component that exits by itself is
restarted too, and counted as a crash.

After the last input the soak waits until the run has drained (the processor passed the
end marker on to each of its output topics, and the sink committed every sink input up
to its end), stops everything and checks, with chDB opened in this process:

* accounting by position: every input (``line N`` of the CSV, ``message N`` of the JSON
  source) is in ``ticks`` (found by its ``seq``, unique per generated tick; an exact
  duplicate shares its original's) xor in ``rejected_ticks`` (by source and position);
* the validator's decisions, recorded as the publisher made them: ``ticks`` holds
  exactly the accepted ticks, ``rejected_ticks`` exactly the rejections, with their
  reasons;
* every analytic table equals a reference computed in this process by the pure kernels
  (``processors.kernels.analytics.Analytics``) over the accepted ticks in publication
  order, with the processor's configuration: ``bars_1m``, ``rolling_highs``,
  ``record_breaks``, ``divergence_windows``, ``rolling_breaks`` and ``late_ticks``
  (compared with FINAL after the touched partitions are merged, and with plain reads:
  after the merge a plain read must hold no row twice).

It prints the figures (inputs, rejections by reason, kills survived per component,
crashes, rows lost, rows doubled, per table) and returns 1 when anything is lost,
doubled or different, when the run did not drain or the publisher failed; 0 otherwise.
A temporary work directory is removed afterwards unless ``keep`` is set or the soak
failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from producers.parsing import Row
from producers.publisher import Publisher, PublishReport
from producers.records import RawTick, Rejection, wall_ms
from producers.replay import ReplayConfig, read_csv
from producers.validation import ValidationConfig, Validator
from tickstream import kafka_local
from tickstream.contracts import ROW_SPECS, RowSpec
from tickstream.model import Tick
from tickstream.settings import Settings
from tickstream.topics import Topics

START_MS = 1_769_385_600_000  # 2026-01-26T00:00:00Z
CSV_HEADER = "ts,symbol,price,bid,ask,size,venue,seq"
CSV_NAME = "soak.csv"
JSON_SOURCE = "soak:json"
DATABASE = "tickstream"
COMPONENTS = ("processor", "sink", "broker")
TICK_COLUMNS = ("symbol", "ts", "price", "bid", "ask", "size", "venue", "seq", "recv_ts")
TICK_IDENTITY = (0, 1, 2, 5, 7)  # symbol, ts, price, size, seq: the ticks tables' ORDER BY
# the kernels' tables compared with the reference (signal_ledger holds wall-clock times
# of the processor's emissions: not a function of the ticks)
ANALYTIC_TABLES = (
    "bars_1m",
    "rolling_highs",
    "record_breaks",
    "divergence_windows",
    "rolling_breaks",
)
EXAMPLES = 3  # rows shown per kind of difference


@dataclass(frozen=True, slots=True)
class SoakOptions:
    minutes: float = 5.0
    rate: float = 1_500.0  # inputs per second
    kill_every_s: float = 20.0  # mean seconds between two kills; 0 = no kills
    seed: int = 1
    hostile_share: float = 0.05  # hostile inputs per generated tick
    kafka_port: int = 0  # 0: the first free pair of ports from 19910
    partitions: int = 3
    workdir: Path | None = None  # None: a fresh temporary directory
    keep: bool = False  # keep the work directory (kept anyway when the soak fails)
    drain_timeout_s: float = 600.0
    report_every_s: float = 15.0

    @property
    def inputs(self) -> int:
        return max(1, round(self.minutes * 60 * self.rate))


# ---------------------------------------------------------------- broker and children


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return not kafka_local.reachable(f"127.0.0.1:{port}", timeout_s=0.2)


def free_port_pair(first: int = 19910, last: int = 19998) -> int:
    """A port whose successor is free too (the broker's listener and its controller)."""
    ports = list(range(first, last, 2))
    random.shuffle(ports)  # two soaks (or a soak and a test) starting at once rarely collide
    for port in ports:
        if _port_free(port) and _port_free(port + 1):
            return port
    raise RuntimeError(f"no two free consecutive ports in {first}-{last}")


def _gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (no process, or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


class LocalBroker:
    """A single-node broker this process owns: started, SIGKILLed and restarted on the same
    storage with ``scripts/kafka-local.sh`` (``tickstream.kafka_local``)."""

    def __init__(self, port: int, state_dir: Path) -> None:
        self.port = port
        self.state_dir = state_dir
        self.pidfile = state_dir / "broker.pid"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def up(self) -> None:
        kafka_local.broker("up", self.port, state_dir=self.state_dir)

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def kill(self, timeout_s: float = 30.0) -> int:
        """SIGKILL the broker's java process; returns once it is gone and the port is free."""
        pid = self.pid()
        if pid is None:
            raise RuntimeError(f"no broker pid in {self.pidfile}")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while not _gone(pid) or kafka_local.reachable(self.bootstrap, timeout_s=0.2):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the broker (pid {pid}) still runs {timeout_s:.0f}s after SIGKILL"
                )
            time.sleep(0.05)
        self.pidfile.unlink(missing_ok=True)  # a zombie left to reap would look alive to `up`
        return pid

    def down(self) -> None:
        kafka_local.broker("down", self.port, state_dir=self.state_dir, check=False)
        pid = self.pid()
        if pid is not None and not _gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Child:
    """One `tickstream` subcommand as a child process, killed and restarted at will; its
    output goes to ``log_path`` (appended, one header line per start)."""

    def __init__(
        self, name: str, args: list[str], env: Mapping[str, str], cwd: Path, log_path: Path
    ) -> None:
        self.name = name
        self.args = args
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            out.write(f"--- {datetime.now(UTC):%H:%M:%S} start {self.starts + 1}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "-q", *self.args],
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def exited(self) -> int | None:
        """The exit code when the process has exited, else None."""
        return None if self.proc is None else self.proc.poll()

    def kill9(self) -> int:
        assert self.proc is not None
        pid = self.proc.pid
        self.proc.kill()
        self.proc.wait()
        return pid

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines: int = 12) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------- the inputs


@dataclass(slots=True)
class Feed:
    """What the soak publishes: CSV lines (read back by the real reader) and JSON-typed
    inputs, the latter placed after a given number of CSV lines."""

    csv_lines: list[str] = field(default_factory=list)
    json_after: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    planned: Counter[str] = field(default_factory=Counter)  # inputs by kind, as generated

    def add_json(self, fields: dict[str, Any], kind: str) -> None:
        self.json_after.setdefault(len(self.csv_lines), []).append(fields)
        self.planned[kind] += 1

    def add_csv(self, line: str, kind: str) -> None:
        self.csv_lines.append(line)
        self.planned[kind] += 1

    @property
    def size(self) -> int:
        return self.planned.total()


_MARKET = {  # start price, end price, decimals, half spread, share of the ticks
    "XAU": (4_962.0, 5_048.0, 2, 0.15, 0.45),
    "XAG": (103.2, 107.4, 3, 0.01, 0.40),
    "XPT": (2_310.0, 2_395.0, 2, 0.50, 0.15),
}
_VENUES = ("", "", "LBMA", "COMEX", "SGE")
CSV_HOSTILE = (
    "garbage", "field_count", "bad_price", "bad_ts", "epoch_seconds", "missing_symbol",
    "huge_line", "huge_venue", "huge_symbol", "huge_number", "control_symbol",
    "control_venue", "bad_number", "crossed_quote", "negative_size", "seq_overflow",
    "unbalanced_quote", "spike", "future_ts", "duplicate", "late", "out_of_order",
)  # fmt: skip
JSON_HOSTILE = (
    "json_price_list", "json_price_object", "json_price_bool", "json_ts_bool",
    "json_symbol_int", "json_null_price", "json_seq_text", "json_nested_venue",
    "json_huge_symbol", "json_ts_iso",
)  # fmt: skip
HOSTILE = CSV_HOSTILE + JSON_HOSTILE


class _Market:
    """The generated market: prices walking toward a goal (through round levels), one event
    clock shared by the symbols (plus a per-symbol offset: XPT's jump), unique seqs."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.price = {s: m[0] for s, m in _MARKET.items()}
        self.offset = dict.fromkeys(_MARKET, 0)
        self.clock = START_MS
        self.seq = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def text(self, sym: str, p: float) -> str:
        return f"{p:.{_MARKET[sym][2]}f}"

    def line(self, ts_ms: int, sym: str, p: float, /, **over: str) -> str:
        """A CSV line of a tick with a fresh seq; ``over`` replaces fields' text."""
        half = _MARKET[sym][3]
        values = {
            "ts": str(ts_ms),
            "symbol": sym,
            "price": self.text(sym, p),
            "bid": self.text(sym, p - half),
            "ask": self.text(sym, p + half),
            "size": str(self.rng.randint(1, 9)),
            "venue": self.rng.choice(_VENUES),
            "seq": str(self.next_seq()),
        }
        values.update(over)
        return ",".join(values[k] for k in _CSV_FIELDS)


_CSV_FIELDS = tuple(CSV_HEADER.split(","))


def make_feed(total: int, seed: int, hostile_share: float, now_ms: int) -> Feed:
    """About ``total`` inputs: a market walking through round levels, with hostile inputs
    mixed in at ``hostile_share`` of the ticks, a clock jump ahead (XPT, at 40%) and a
    clock step back (XAG, at 60%). Reproducible for a seed (future times follow now_ms)."""
    rng = random.Random(seed)
    market = _Market(rng)
    feed = Feed()
    last_line: dict[str, str] = {}
    symbols = list(_MARKET)
    weights = [m[4] for m in _MARKET.values()]
    ticks = max(1, round(total / (1 + hostile_share)))
    for i in range(ticks):
        if i == int(ticks * 0.4):
            market.offset["XPT"] += 6 * 3_600_000  # XPT's clock jumps ahead, and stays there
        if i == int(ticks * 0.6):  # XAG's clock steps back ten minutes, for a burst
            p = market.price["XAG"]
            for k in range(20):
                feed.add_csv(market.line(market.clock - 600_000 + k * 50, "XAG", p), "clock_back")
        market.clock += rng.randint(1, 500)
        sym = rng.choices(symbols, weights)[0]
        start, end, decimals, _, _ = _MARKET[sym]
        goal = start + (end - start) * i / ticks
        market.price[sym] += (goal - market.price[sym]) * 0.02 + rng.gauss(0, goal * 0.00025)
        p = round(market.price[sym], decimals)
        ts = market.clock + market.offset[sym]
        if rng.random() < 0.03:  # typed values, as a websocket source hands them over
            fields = {"symbol": sym, "ts": ts, "price": p, "size": 1.0, "seq": market.next_seq()}
            feed.add_json(fields, "json")
        else:
            text = market.line(ts, sym, p)
            feed.add_csv(text, "tick")
            last_line[sym] = text
        if rng.random() < hostile_share:
            kind = rng.choice(HOSTILE)
            _add_hostile(feed, market, kind, sym, ts, p, last_line.get(sym), now_ms)
    return feed


def _add_hostile(
    feed: Feed,
    market: _Market,
    kind: str,
    sym: str,
    ts: int,
    p: float,
    last_line: str | None,
    now_ms: int,
) -> None:
    rng, line = market.rng, market.line
    if kind.startswith("json_"):
        fields: dict[str, Any] = {"symbol": sym, "ts": ts, "price": p, "seq": market.next_seq()}
        wrong: dict[str, dict[str, Any]] = {
            "json_price_list": {"price": [p]},
            "json_price_object": {"price": {"value": p}},
            "json_price_bool": {"price": True},
            "json_ts_bool": {"ts": True},
            "json_symbol_int": {"symbol": 42},
            "json_null_price": {"price": None},
            "json_seq_text": {"seq": "12x"},
            "json_nested_venue": {"venue": {"a": [1, 2]}},
            "json_huge_symbol": {"symbol": "X" * 100_000},
            "json_ts_iso": {"ts": datetime.fromtimestamp(ts / 1000, UTC).isoformat()},
        }
        feed.add_json(fields | wrong[kind], kind)
        return
    makers: dict[str, Callable[[], str]] = {
        "garbage": lambda: rng.choice(
            ["not a tick at all", "}{][", "ts;symbol;price", "\U0001f4a5"]
        ),
        "field_count": lambda: f"{ts},{sym},{p}",
        "bad_price": lambda: line(ts, sym, p, price="abc"),
        "bad_ts": lambda: line(ts, sym, p, ts="2026-13-45T99:99:99"),
        "epoch_seconds": lambda: line(ts, sym, p, ts=str(ts // 1000)),
        "missing_symbol": lambda: line(ts, sym, p, symbol=""),
        "huge_line": lambda: line(ts, sym, p, venue="V" * 70_000),
        "huge_venue": lambda: line(ts, sym, p, venue="V" * 5_000),
        "huge_symbol": lambda: line(ts, sym, p, symbol="S" * 300),
        "huge_number": lambda: line(ts, sym, p, price="9" * 400),
        "control_symbol": lambda: line(ts, sym, p, symbol=sym + rng.choice(["\x00", "\x1b[31m"])),
        "control_venue": lambda: line(ts, sym, p, venue="LB\x07MA"),
        "bad_number": lambda: line(ts, sym, p, price=rng.choice(["nan", "inf", "-5", "0"])),
        "crossed_quote": lambda: line(ts, sym, p, bid=str(p + 1), ask=str(p - 1)),
        "negative_size": lambda: line(ts, sym, p, size="-3"),
        "seq_overflow": lambda: line(ts, sym, p, seq=str(2**70)),
        "unbalanced_quote": lambda: f'{ts},"{sym},{p},,,,,',
        "spike": lambda: line(ts + 1, sym, p * 10),
        "future_ts": lambda: line(now_ms + 2 * 86_400_000, sym, p),
        "duplicate": lambda: last_line or line(ts, sym, p),  # the same line: the same seq
        "late": lambda: line(ts - rng.randint(3_000, 60_000), sym, p),
        "out_of_order": lambda: line(ts - rng.randint(1, 1_500), sym, p),
    }
    feed.add_csv(makers[kind](), kind)


def write_csv(feed: Feed, path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(CSV_HEADER + "\n")
        for text in feed.csv_lines:
            fh.write(text + "\n")


def seq_key(fields: Mapping[str, Any] | None) -> int | None:
    """The ``seq`` an input would carry into ``ticks``, when it is a plain one."""
    if fields is None:
        return None
    value = fields.get("seq")
    if type(value) is int:
        return value
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return None


class RecordingValidator(Validator):
    """The real validator, recording each decision in the order the publisher ships it:
    accepted rows (as published) and rejections."""

    def __init__(self, config: ValidationConfig | None = None) -> None:
        super().__init__(config)
        self.accepted_rows: list[Row] = []
        self.rejections: list[Rejection] = []

    def feed_row(self, raw: RawTick, accepted: list[Row], rejected: list[Rejection]) -> Row | None:
        n_accepted, n_rejected = len(accepted), len(rejected)
        row = super().feed_row(raw, accepted, rejected)
        if row is not None:
            self.accepted_rows.append(row)
        else:
            self.accepted_rows.extend(accepted[n_accepted:])
        self.rejections.extend(rejected[n_rejected:])
        return row

    def finish_rows(self, accepted: list[Row], rejected: list[Rejection]) -> None:
        n_accepted, n_rejected = len(accepted), len(rejected)
        super().finish_rows(accepted, rejected)
        self.accepted_rows.extend(accepted[n_accepted:])
        self.rejections.extend(rejected[n_rejected:])


# ---------------------------------------------------------------- the run


@dataclass(slots=True)
class Figures:
    kills: Counter[str] = field(default_factory=Counter)
    crashes: Counter[str] = field(default_factory=Counter)
    crash_notes: list[str] = field(default_factory=list)
    broker_outages_s: list[float] = field(default_factory=list)  # from the kill until it answers
    publish_s: float = 0.0
    drain_s: float = 0.0
    drained: bool = False
    publisher_error: str | None = None
    report: PublishReport | None = None


class Soak:
    def __init__(self, options: SoakOptions, workdir: Path, out: Callable[[str], None]) -> None:
        self.options = options
        self.workdir = workdir
        self.out = out
        self.rng = random.Random(options.seed ^ 0x5EED)
        port = options.kafka_port or free_port_pair()
        self.broker = LocalBroker(port, workdir / "kafka")
        self.settings = Settings(
            kafka_bootstrap=self.broker.bootstrap,
            namespace="soak" + uuid.uuid4().hex[:8],
            clickhouse_url=f"chdb://{workdir / 'chdb'}",
            clickhouse_database=DATABASE,  # the accounting reads it by name
            metrics_port=0,
            partitions=options.partitions,
        )
        env = {**os.environ, **self.settings.to_env()}
        self.children = {
            "processor": Child(
                "processor",
                ["process", "--no-seed-from-clickhouse"],
                env,
                workdir,
                workdir / "processor.log",
            ),
            "sink": Child("sink", ["sink"], env, workdir, workdir / "sink.log"),
        }
        self.down: set[str] = set()  # components the soak itself has taken down
        self.figures = Figures()
        self.validator = RecordingValidator(ValidationConfig())
        self.registry: list[tuple[str, str, int | None]] = []  # (source, position, seq)
        self.started = time.monotonic()
        self.published = asyncio.Event()  # the publisher is done (or failed): kills stop

    def say(self, text: str) -> None:
        self.out(f"[{time.monotonic() - self.started:6.1f}s] {text}")

    # -- the inputs, paced

    async def source(self, feed: Feed, path: Path) -> AsyncIterator[RawTick]:
        rate = self.options.rate
        t0 = time.monotonic()
        n = 0
        json_n = 0
        registry = self.registry

        def json_raw(fields: dict[str, Any]) -> RawTick:
            nonlocal json_n
            json_n += 1
            text = orjson.dumps(fields).decode()
            return RawTick(text, JSON_SOURCE, f"message {json_n}", wall_ms(), fields=fields)

        lines = 0
        pending = list(feed.json_after.get(0, ()))
        reader = read_csv(ReplayConfig(path))
        while True:
            if pending:
                raw = json_raw(pending.pop(0))
            else:
                raw_or_none = next(reader, None)
                if raw_or_none is None:
                    break
                raw = raw_or_none
                lines += 1
                pending = list(feed.json_after.get(lines, ()))
            registry.append((raw.source, raw.position, seq_key(raw.fields)))
            n += 1
            if n % 50 == 0:
                delay = t0 + n / rate - time.monotonic()
                await asyncio.sleep(max(0.0, delay))
            yield raw

    async def publish(self, feed: Feed, path: Path, run_id: str) -> None:
        started = time.monotonic()
        try:
            async with Publisher(
                self.settings, self.validator, on_rejection=lambda _: None
            ) as publisher:
                self.figures.report = await publisher.publish(self.source(feed, path))
                await publisher.end_of_input(run_id)
        except Exception as exc:  # the figures say so; nothing after it can be accounted
            self.figures.publisher_error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.figures.publish_s = time.monotonic() - started
            self.published.set()

    # -- faults

    async def kill_loop(self) -> None:
        every = self.options.kill_every_s
        if every <= 0:
            return
        turn: list[str] = []
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.published.wait(), self.rng.uniform(0.5, 1.5) * every)
            if self.published.is_set():
                return
            if not turn:
                turn = list(COMPONENTS)
                self.rng.shuffle(turn)
            await self.kill(turn.pop())

    async def kill(self, name: str) -> None:
        pause = self.rng.uniform(0.0, 3.0)
        self.down.add(name)
        try:
            if name == "broker":
                killed = time.monotonic()
                pid = await asyncio.to_thread(self.broker.kill)
                self.say(f"kill -9 broker (java pid {pid}); restarting in {pause:.1f}s")
                await asyncio.sleep(pause)
                t = time.monotonic()
                await self.broker_up()
                now = time.monotonic()
                self.figures.broker_outages_s.append(now - killed)
                self.say(f"broker up again ({now - t:.1f}s to start, {now - killed:.1f}s away)")
            else:
                child = self.children[name]
                pid = child.kill9()
                self.say(f"kill -9 {name} (pid {pid}); restarting in {pause:.1f}s")
                await asyncio.sleep(pause)
                child.start()
            self.figures.kills[name] += 1
        finally:
            self.down.discard(name)

    async def broker_up(self, attempts: int = 3) -> None:
        for attempt in range(1, attempts + 1):
            try:
                await asyncio.to_thread(self.broker.up)
                return
            except RuntimeError as exc:
                if attempt == attempts:
                    raise
                self.say(f"the broker did not start ({exc}); trying again")
                await asyncio.to_thread(self.broker.down)

    async def watch(self) -> None:
        """Restart a component that exited by itself (a crash), and count it."""
        while True:
            await asyncio.sleep(0.5)
            pid = self.broker.pid()
            if "broker" not in self.down and pid is not None and _gone(pid):
                self.figures.crashes["broker"] += 1
                self.figures.crash_notes.append(f"the broker (pid {pid}) exited by itself")
                self.say("the broker exited by itself: restarting")
                self.down.add("broker")
                try:
                    self.broker.pidfile.unlink(missing_ok=True)
                    await self.broker_up()
                finally:
                    self.down.discard("broker")
            for name, child in self.children.items():
                if name in self.down:
                    continue
                code = child.exited()
                if code is None:
                    continue
                self.figures.crashes[name] += 1
                note = f"{name} exited by itself with code {code}; last lines of its log:\n"
                note += "\n".join("    " + s for s in child.tail().splitlines())
                self.figures.crash_notes.append(note)
                self.say(f"{name} exited by itself (code {code}): restarting")
                await asyncio.sleep(1.0)
                if name not in self.down and child.exited() is not None:  # not restarted by a kill
                    child.start()

    async def report_loop(self, total: int) -> None:
        every = self.options.report_every_s
        while True:
            await asyncio.sleep(every)
            kills = ", ".join(f"{c} {self.figures.kills[c]}" for c in COMPONENTS)
            self.say(f"{len(self.registry):,}/{total:,} inputs published; kills: {kills}")

    # -- drain

    async def wait_drained(self, run_id: str) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        topics = Topics(self.settings.namespace)
        partitions = self.settings.partitions
        outputs = topics.processor_outputs()
        needle = run_id.encode()
        consumer = AIOKafkaConsumer(
            *outputs,
            bootstrap_servers=self.settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            seen: set[tuple[str, int]] = set()
            while len(seen) < len(outputs) * partitions:
                batches = await consumer.getmany(timeout_ms=500, max_records=5_000)
                for tp, records in batches.items():
                    for record in records:
                        value = record.value or b""
                        if needle not in value:
                            continue
                        doc = orjson.loads(value)
                        if isinstance(doc, dict) and doc.get("run_id") == run_id:
                            seen.add((tp.topic, tp.partition))
            parts = [TopicPartition(t, p) for t in topics.sink_inputs() for p in range(partitions)]
            ends = await consumer.end_offsets(parts)
        finally:
            await consumer.stop()
        self.say("the processor passed the end marker on; waiting for the sink")
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        await admin.start()
        try:
            while True:
                committed = await admin.list_consumer_group_offsets(topics.group("sink"))
                if all(
                    committed.get(tp) is not None and committed[tp].offset >= ends[tp]
                    for tp in parts
                    if ends[tp] > 0
                ):
                    return
                await asyncio.sleep(0.5)
        finally:
            await admin.close()

    # -- everything

    async def run(self) -> None:
        o = self.options
        feed = make_feed(o.inputs, o.seed, o.hostile_share, wall_ms())
        path = self.workdir / CSV_NAME
        write_csv(feed, path)
        hostile = feed.size - feed.planned["tick"] - feed.planned["json"]
        self.say(
            f"{feed.size:,} inputs generated ({hostile:,} hostile); broker on "
            f"{self.broker.bootstrap}, namespace {self.settings.namespace}, work directory "
            f"{self.workdir}"
        )
        from tickstream.kafka_io import ensure_topics

        await asyncio.to_thread(self.broker.up)
        await ensure_topics(self.settings)
        for child in self.children.values():
            child.start()
        self.started = time.monotonic()
        run_id = uuid.uuid4().hex
        helpers = [
            asyncio.create_task(self.watch(), name="watch"),
            asyncio.create_task(self.report_loop(feed.size), name="report"),
        ]
        killer = asyncio.create_task(self.kill_loop(), name="kills")
        try:
            publishing = asyncio.create_task(self.publish(feed, path, run_id))
            await asyncio.wait({publishing})
            await killer  # a kill under way completes (its component is restarted)
            publishing.result()
            self.say(f"published in {self.figures.publish_s:.0f}s; waiting for the drain")
            started = time.monotonic()
            try:
                await asyncio.wait_for(self.wait_drained(run_id), o.drain_timeout_s)
                self.figures.drained = True
            except TimeoutError:
                self.say(f"NOT drained within {o.drain_timeout_s:.0f}s")
            self.figures.drain_s = time.monotonic() - started
        finally:
            for task in (*helpers, killer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for child in self.children.values():
                await asyncio.to_thread(child.stop)
            await asyncio.to_thread(self.broker.down)


# ---------------------------------------------------------------- the accounting


@dataclass(slots=True)
class TableCheck:
    table: str
    expected: int = 0
    got: int = 0
    lost: int = 0  # expected identities missing
    extra: int = 0  # identities nobody expected (doubled or made up)
    doubled: int = 0  # an identity more than once: in FINAL, or in a plain read after the merge
    differ: int = 0  # same identity, other values
    copies_before_merge: int = 0  # plain count minus FINAL count before the final merge
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < 3 * EXAMPLES:
            self.examples.append(text)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.extra or self.doubled or self.differ)


@dataclass(slots=True)
class Accounting:
    inputs: int = 0
    in_ticks: int = 0
    in_rejected: int = 0
    lost: int = 0  # in neither
    doubled: int = 0  # in both, or in one of them twice
    unexplained: int = 0  # rows of ticks / rejected_ticks matching no input
    examples: list[str] = field(default_factory=list)
    by_reason: Counter[str] = field(default_factory=Counter)
    processor_rejections: int = 0


def _select(client: Any, table: str, columns: Iterable[str], final: bool) -> list[tuple[Any, ...]]:
    types = dict(
        client.query(
            "SELECT name, type FROM system.columns WHERE database = {db:String} "
            "AND table = {t:String}",
            parameters={"db": DATABASE, "t": table},
        ).result_rows
    )
    exprs = [
        f"toUnixTimestamp64Milli(`{c}`)" if "DateTime64" in types[c] else f"`{c}`" for c in columns
    ]
    sql = f"SELECT {', '.join(exprs)} FROM {DATABASE}.{table}{' FINAL' if final else ''}"
    return [tuple(r) for r in client.query(sql).result_rows]


def _count(client: Any, table: str, final: bool) -> int:
    sql = f"SELECT count() FROM {DATABASE}.{table}{' FINAL' if final else ''}"
    return int(client.command(sql))


def reference(
    accepted: list[Row], settings: Settings
) -> tuple[dict[str, dict[tuple[Any, ...], tuple[Any, ...]]], list[Tick]]:
    """Each analytic table's rows by identity (the last version wins, as in the tables),
    and the late ticks: the pure kernels over the accepted ticks in publication order."""
    from processors.config import analytics_config
    from processors.kernels.analytics import Analytics

    analytics = Analytics(analytics_config(settings, {}))
    ticks = [Tick(*row) for row in accepted]
    rows: list[Any] = []
    late: list[Tick] = []
    for i in range(0, len(ticks), 5_000):
        step = analytics.update(ticks[i : i + 5_000])
        rows.extend(step.rows)
        late.extend(step.late)
    rows.extend(analytics.flush().rows)
    tables: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {t: {} for t in ANALYTIC_TABLES}
    for row in rows:
        spec: RowSpec = row.SPEC
        if spec.table not in tables:
            continue
        values = tuple(spec.values(row.to_doc()))
        tables[spec.table][_identity(spec, values)] = values
    return tables, late


def _identity(spec: RowSpec, values: tuple[Any, ...]) -> tuple[Any, ...]:
    columns = spec.columns
    return tuple(values[columns.index(spec.column(f))] for f in spec.identity)


def _tick_values(t: Tick | Row) -> tuple[Any, ...]:
    return tuple(t) if isinstance(t, tuple) else (
        t.symbol, t.ts_ms, t.price, t.bid, t.ask, t.size, t.venue, t.seq, t.recv_ms
    )  # fmt: skip


def compare(
    check: TableCheck,
    expected: Mapping[tuple[Any, ...], tuple[Any, ...]],
    final_rows: list[tuple[Any, ...]],
    plain_count: int,
    identity: Callable[[tuple[Any, ...]], tuple[Any, ...]],
) -> None:
    check.expected = len(expected)
    check.got = len(final_rows)
    got: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in final_rows:
        key = identity(row)
        if key in got:
            check.doubled += 1
            check.note(f"twice in FINAL: {row}")
        got[key] = row
    check.doubled += max(0, plain_count - len(final_rows))
    for key, want in expected.items():
        have = got.get(key)
        if have is None:
            check.lost += 1
            check.note(f"missing: {want}")
        elif have != want:
            check.differ += 1
            check.note(f"differs: table {have} != reference {want}")
    for key, have in got.items():
        if key not in expected:
            check.extra += 1
            check.note(f"not expected: {have}")


def verify(soak: Soak) -> tuple[list[TableCheck], Accounting]:
    """Open the chDB directory (nothing else holds it now), merge, compare."""
    import clickhouse_connect

    from sinks.clickhouse_sink import merge_partitions_since
    from sinks.rows import TABLES

    client = clickhouse_connect.get_client(dsn=soak.settings.clickhouse_url)
    try:
        tables = ("ticks", "late_ticks", "rejected_ticks", *ANALYTIC_TABLES)
        copies = {t: _count(client, t, False) - _count(client, t, True) for t in tables}
        merge_partitions_since(client, DATABASE, 0)  # every partition: plain reads exact too
        ref, late = reference(soak.validator.accepted_rows, soak.settings)
        checks: list[TableCheck] = []

        def tick_identity(row: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(row[i] for i in TICK_IDENTITY)

        expected_ticks = {
            tick_identity(v): v for v in map(_tick_values, soak.validator.accepted_rows)
        }
        expected_late = {tick_identity(v): v for v in map(_tick_values, late)}
        ticks_rows = _select(client, "ticks", TICK_COLUMNS, final=True)
        for table, expected, rows in (
            ("ticks", expected_ticks, ticks_rows),
            ("late_ticks", expected_late, _select(client, "late_ticks", TICK_COLUMNS, True)),
        ):
            check = TableCheck(table, copies_before_merge=copies[table])
            compare(check, expected, rows, _count(client, table, False), tick_identity)
            checks.append(check)
        specs = {spec.table: spec for spec in ROW_SPECS}
        for table in ANALYTIC_TABLES:
            spec = specs[table]
            check = TableCheck(table, copies_before_merge=copies[table])
            rows = _select(client, table, spec.columns, final=True)
            compare(
                check,
                ref[table],
                rows,
                _count(client, table, False),
                lambda row, spec=spec: _identity(spec, row),  # type: ignore[misc]
            )
            checks.append(check)
        rejected_cols = ("source", "position", "reason")
        assert all(c in TABLES["rejected_ticks"].columns for c in rejected_cols)
        rejected_rows = _select(client, "rejected_ticks", rejected_cols, final=True)
        check = TableCheck("rejected_ticks", copies_before_merge=copies["rejected_ticks"])
        expected_rejected = {
            (r.source, r.position): (r.source, r.position, r.reason)
            for r in soak.validator.rejections
        }
        from_processor = [r for r in rejected_rows if r[0] == "processor"]
        compare(
            check,
            expected_rejected,
            [r for r in rejected_rows if r[0] != "processor"],
            _count(client, "rejected_ticks", False) - len(from_processor),
            lambda row: row[:2],
        )
        checks.append(check)
        accounting = account(soak.registry, ticks_rows, rejected_rows)
        accounting.processor_rejections = len(from_processor)
        return checks, accounting
    finally:
        client.close()


def account(
    registry: list[tuple[str, str, int | None]],
    ticks_rows: list[tuple[Any, ...]],
    rejected_rows: list[tuple[Any, ...]],
) -> Accounting:
    """Every input in ``ticks`` (by its seq) xor in ``rejected_ticks`` (by position).

    Inputs sharing a seq (an exact duplicate and its original) are one group: the group's
    inputs found among the rejections plus its rows in ``ticks`` must be the group's size.
    """
    acc = Accounting(inputs=len(registry))
    rejected: Counter[tuple[str, str]] = Counter((r[0], r[1]) for r in rejected_rows)
    acc.by_reason.update(r[2] for r in rejected_rows)
    in_ticks: Counter[int | None] = Counter(row[7] for row in ticks_rows)
    groups: dict[int, list[tuple[str, str]]] = {}
    known = set()
    for source, position, seq in registry:
        key = (source, position)
        known.add(key)
        if rejected[key] > 1:
            acc.doubled += rejected[key] - 1
            acc.examples.append(f"{source} {position}: {rejected[key]} times in rejected_ticks")
        if seq is None:
            if rejected[key]:
                acc.in_rejected += 1
            else:
                acc.lost += 1
                acc.examples.append(f"{source} {position}: in neither table")
            continue
        groups.setdefault(seq, []).append(key)
    for seq, keys in groups.items():
        r = sum(1 for k in keys if rejected[k])
        t = in_ticks.get(seq, 0)
        acc.in_rejected += r
        acc.in_ticks += t
        if r + t < len(keys):
            acc.lost += len(keys) - r - t
            acc.examples.append(f"seq {seq} ({', '.join(' '.join(k) for k in keys)}): lost")
        elif r + t > len(keys):
            acc.doubled += r + t - len(keys)
            acc.examples.append(
                f"seq {seq} ({', '.join(' '.join(k) for k in keys)}): {t} in ticks, {r} rejected"
            )
    acc.unexplained += sum(n for seq, n in in_ticks.items() if seq not in groups)
    acc.unexplained += sum(
        n for key, n in rejected.items() if key not in known and key[0] != "processor"
    )
    return acc


# ---------------------------------------------------------------- figures


def print_figures(
    soak: Soak, checks: list[TableCheck], acc: Accounting, out: Callable[[str], None]
) -> bool:
    f = soak.figures
    o = soak.options
    ok = True
    out("")
    out(f"soak figures ({o.minutes:g} min at {o.rate:,.0f} inputs/s, seed {o.seed})")
    sources = ", ".join(
        f"{s} {n:,}" for s, n in sorted(Counter(r[0] for r in soak.registry).items())
    )
    out(f"  inputs            {acc.inputs:,} ({sources})")
    out(f"  in ticks          {acc.in_ticks:,}")
    out(f"  rejected          {acc.in_rejected:,}")
    for reason, n in sorted(acc.by_reason.items(), key=lambda kv: -kv[1]):
        out(f"    {reason:<16}{n:,}")
    if acc.processor_rejections:
        n = acc.processor_rejections
        out(f"  rejected by the processor after validation accepted them: {n}")
    kills = ", ".join(f"{c} {f.kills[c]}" for c in COMPONENTS)
    out(f"  kills survived    {kills} (total {f.kills.total()})")
    crashes = ", ".join(f"{c} {n}" for c, n in sorted(f.crashes.items())) or "none"
    out(f"  exited by itself  {crashes} (restarted)")
    if f.broker_outages_s:
        out(
            f"  broker away       {len(f.broker_outages_s)} times, longest "
            f"{max(f.broker_outages_s):.0f}s (the producers' request timeout: 30s)"
        )
    out(f"  publish {f.publish_s:.0f}s, drain {f.drain_s:.0f}s")
    if f.report is not None:
        out(f"  the publisher's report: {f.report.summary()}")
    out("")
    out(f"  {'table':<20}{'expected':>10}{'got':>10}{'lost':>7}{'extra':>7}{'doubled':>9}"
        f"{'differ':>8}{'copies*':>9}")  # fmt: skip
    for c in checks:
        out(
            f"  {c.table:<20}{c.expected:>10,}{c.got:>10,}{c.lost:>7}{c.extra:>7}{c.doubled:>9}"
            f"{c.differ:>8}{c.copies_before_merge:>9,}"
        )
    out("  * rows a plain read saw beyond FINAL before the final merge: older versions and")
    out("    copies re-sent after a kill, which FINAL and merges collapse by design")
    lost = acc.lost + sum(c.lost for c in checks)
    doubled = acc.doubled + acc.unexplained + sum(c.doubled + c.extra for c in checks)
    differ = sum(c.differ for c in checks)
    out("")
    out(f"  inputs in neither table        {acc.lost}")
    out(f"  inputs in both / twice         {acc.doubled}")
    out(f"  rows matching no input         {acc.unexplained}")
    out(f"  rows lost                      {lost}")
    out(f"  rows doubled                   {doubled}")
    out(f"  rows differing                 {differ}")
    for example in acc.examples[: 3 * EXAMPLES]:
        out(f"    {example}")
    for c in checks:
        for example in c.examples:
            out(f"    {c.table}: {example}")
    if f.publisher_error:
        out(f"  PUBLISHER FAILED: {f.publisher_error}")
        ok = False
    if not f.drained:
        out("  NOT DRAINED: the sink had not committed everything when the soak gave up")
        ok = False
    for note in f.crash_notes:
        out(f"  {note}")
    if lost or doubled or differ or acc.processor_rejections:
        ok = False
    out("")
    out("soak: OK" if ok else "soak: FAILED")
    return ok


def run_soak(options: SoakOptions, out: Callable[[str], None] = print) -> int:
    """Run the soak; 0 when nothing was lost, doubled or different, else 1."""
    workdir = options.workdir
    made = workdir is None
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="tickstream-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    for noisy in ("aiokafka", "kafka"):  # the in-process publisher, while the broker is away
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    soak = Soak(options, workdir, out)
    ok = False
    try:
        try:
            asyncio.run(soak.run())
        except Exception as exc:
            if soak.figures.publisher_error is None:
                raise
            out(f"the publisher failed: {exc}")
        checks, accounting = verify(soak)
        ok = print_figures(soak, checks, accounting, out)
    finally:
        if ok and made and not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            out(f"work directory (logs, chDB, broker storage): {workdir}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=1_500.0)
    parser.add_argument("--kill-every", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--kafka-port", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    return run_soak(
        SoakOptions(
            minutes=args.minutes,
            rate=args.rate,
            kill_every_s=args.kill_every,
            seed=seed,
            kafka_port=args.kafka_port,
            workdir=args.workdir,
            keep=args.keep,
        )
    )


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-5s %(name)s: %(message)s"
    )
    sys.exit(main())
