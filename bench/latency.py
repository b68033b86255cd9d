"""Desk latency: from a tick's receipt by the producer to a websockets client, per rate.

    tickstream bench latency [--rates 1000,5000,20000] [--seconds 15] [--warm-up-s 10]
                             [--breaks-per-s 20]
                             [--allowed-lateness-ms N] [--processor-batch-ms N]
                             [--conflation-ms 0] [--tick-symbols REF]
                             [--kafka-bootstrap 127.0.0.1:9092]

The whole pipeline, as deployed, on the local broker (started when none answers at
--kafka-bootstrap, a loopback address, and stopped afterwards): the stream processor
(`tickstream process`) and the gateway (`tickstream gateway`) as child processes, this
process publishing through the real Publisher (validation included), and a websockets
client in a process of its own (as a desk would be) subscribed to record breaks of every
symbol and to the ticks of --tick-symbols.

The market: gold (XAU) rising through new highs, paced at each --rates in turn for
--seconds: every Nth tick an all-time high, N chosen for --breaks-per-s highs a second
whatever the rate, each $--ath-step above the last (so the $100 grid is crossed every
few seconds: level_up rows too); the ticks between sit just under the high. A
reference symbol (REF, flat, no records) ticks at --ref-rate, for the plain tick
latency. Each tick's ``recv_ms`` (and ``ts``) is the wall clock when this process's
source hands it to the Publisher, i.e. the producer's receipt.

For each record_break frame: latency = the client's wall clock at receipt − the tick's
``recv_ms`` (the frame's own ``recv_ms`` when it has one; else the recv_ms this process
gave the tick the frame names, found by symbol, ts and price). Split at ``created_ms``
(the Kafka timestamp of the signal's message: the processor's send) into "receipt ->
signals topic" (publisher, ticks topic, processor) and "signals topic -> client"
(gateway). Grouped by ``status`` (a frame without one counts as ``confirmed``: the
behaviour before provisional signals), one count per (signal, status). Retractions are
counted. Plain ticks likewise: producer receipt -> client, split at the ticks message's
Kafka timestamp (the publisher's own wait, then Kafka and the gateway). CPU per process
(this one is the producer) is from /proc, over each rate's run.

Before the first rate, the pipeline runs unmeasured at that rate for --warm-up-s: a
freshly started broker spends its first seconds compiling (80% of a core at 1k ticks/s in
one run, against 20-25% once warm), which is not what a desk meets in a running system.
Between rates the market keeps ticking slowly (no highs) for the allowed lateness plus
two seconds, so the last highs of a rate are confirmed before the next rate starts.
Figures are printed, never asserted; the machine is shared, so they vary from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from array import array
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.scratch import drop_scratch
from producers.publisher import Publisher
from producers.records import RawTick
from producers.validation import ValidationConfig, Validator
from tickstream import kafka_local
from tickstream.kafka_io import ensure_topics
from tickstream.service_runtime import tune_for_latency
from tickstream.settings import Settings, default_of, envvar

ROOT = Path(__file__).resolve().parent.parent

TOKEN = "bench-latency"
SOURCE = "bench"
GOLD = "XAU"
REF = "REF"
GOLD_START = 5050.0

# one observed record_break frame: (client ms, signal id, symbol, record, ts_ms, price,
# status, recv_ms or None, created_ms or None)
Frame = tuple[float, str, str, str, int, float, str, int | None, int | None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float] | array, q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _p50_p99(values: list[float] | array) -> str:
    return f"p50 {_pct(values, 0.5):6.1f} p99 {_pct(values, 0.99):6.1f} ms"


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, every thread) a process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _broker_pid(port: int) -> int | None:
    """The local broker's pid, when it runs as scripts/kafka-local.sh starts it."""
    marker = f"kafka-{port}/server.properties"
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    return int(proc.name)
    return None


def _setting(name: str) -> str:
    """The setting's TICKSTREAM_* variable if set, else its default: as the children read it."""
    return os.environ.get(envvar(name)) or str(default_of(name))


# ---------------------------------------------------------------- the client (own process)


def client_main(url: str, tick_symbols: list[str], ready: Any, stop: Any, out: Any) -> None:
    """Subscribe, record what arrives until ``stop`` is set, send it back over ``out``."""
    out.send(asyncio.run(_client(url, tick_symbols, ready, stop)))
    out.close()


async def _client(url: str, tick_symbols: list[str], ready: Any, stop: Any) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    frames: list[Frame] = []
    tick_now, tick_recv, tick_created = array("d"), array("d"), array("d")
    errors: list[str] = []

    async def breaks() -> None:
        async with connect(url, compression=None, max_queue=None, open_timeout=30) as ws:
            sub = {"op": "subscribe", "symbols": "*", "kinds": ["record_breaks"]}
            await ws.send(orjson.dumps(sub).decode())
            async for raw in ws:
                now = time.time() * 1000
                doc = orjson.loads(raw)
                if doc.get("type") != "record_break":
                    continue
                frames.append(
                    (
                        now,
                        str(doc.get("id")),
                        str(doc.get("symbol")),
                        str(doc.get("record")),
                        int(doc.get("ts_ms") or 0),
                        float(doc.get("price") or 0.0),
                        str(doc.get("status") or "confirmed"),
                        doc.get("recv_ms"),
                        doc.get("created_ms"),
                    )
                )
                ready.set()

    async def ticks() -> None:
        async with connect(url, compression=None, max_queue=None, open_timeout=30) as ws:
            symbols: Any = "*" if "*" in tick_symbols else tick_symbols
            sub = {"op": "subscribe", "symbols": symbols, "kinds": ["ticks"]}
            await ws.send(orjson.dumps(sub).decode())
            async for raw in ws:
                now = time.time() * 1000
                doc = orjson.loads(raw)
                if doc.get("type") != "tick" or doc.get("recv_ms") is None:
                    continue
                tick_now.append(now)
                tick_recv.append(doc["recv_ms"])
                tick_created.append(doc.get("created_ms") or float("nan"))

    tasks = [asyncio.create_task(breaks())]
    if tick_symbols:
        tasks.append(asyncio.create_task(ticks()))
    waiter = asyncio.create_task(asyncio.to_thread(stop.wait))
    done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        if task in done and task.exception() is not None:
            errors.append(repr(task.exception()))
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if waiter not in done:  # a connection failed: stop waiting (the thread ends with stop)
        ready.set()
    return {
        "frames": frames,
        "tick_now": tick_now,
        "tick_recv": tick_recv,
        "tick_created": tick_created,
        "errors": errors,
    }


# ---------------------------------------------------------------- the market (this process)


@dataclass(slots=True)
class Phase:
    name: str
    rate: float  # gold ticks per second
    seconds: float
    breaks_per_s: float  # all-time highs per second (0 = none)
    start_ms: int = 0
    end_ms: int = 0
    ticks: int = 0
    aths: int = 0
    levels: int = 0  # levels crossed upwards, each grid apart (one level_up row each)
    wall_s: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds in the phase


@dataclass(slots=True)
class GoldMarket:
    """Gold rising through new highs; state carries over from phase to phase."""

    ath_step: float
    ref_rate: float
    level_steps: tuple[float, ...]  # gold's level grids, as the processor has them
    hi: float = GOLD_START
    seq: int = 0
    ref_seq: int = 0
    # (symbol, ts_ms, price) of every record-making tick -> its recv_ms
    made: dict[tuple[str, int, float], int] = field(default_factory=dict)

    def _gold(self, now: int, high: bool, phase: Phase) -> RawTick:
        self.seq += 1
        if high:
            before = self.hi
            self.hi = round(self.hi + self.ath_step, 2)
            price = self.hi
            self.made[(GOLD, now, price)] = now
            phase.aths += 1
            phase.levels += sum(self.hi // s > before // s for s in self.level_steps)
        elif self.hi > GOLD_START:
            price = round(self.hi - 0.01 * (1 + self.seq % 97), 2)  # just under the high
        else:
            price = self.hi  # before the first high: equal is no record (nor a low)
        fields = {"symbol": GOLD, "ts": now, "price": price, "size": 1.0, "seq": self.seq}
        return RawTick("", SOURCE, f"n={self.seq}", now, fields)

    def _ref(self, now: int) -> RawTick:
        self.ref_seq += 1
        fields = {"symbol": REF, "ts": now, "price": 100.0, "size": 1.0, "seq": self.ref_seq}
        return RawTick("", SOURCE, f"ref={self.ref_seq}", now, fields)

    async def ticks(
        self, phase: Phase, until: Callable[[], bool] | None = None
    ) -> AsyncIterator[RawTick]:
        """Paced: tick n is due at n / rate seconds; recv_ms = the wall clock at hand-over."""
        every = max(1, round(phase.rate / phase.breaks_per_s)) if phase.breaks_per_s > 0 else 0
        clock = time.perf_counter
        started = clock()
        phase.start_ms = time.time_ns() // 1_000_000
        n = refs = 0
        while True:
            elapsed = clock() - started
            if elapsed >= phase.seconds or (until is not None and until()):
                break
            due = int(elapsed * phase.rate) + 1
            while n < due:
                n += 1
                yield self._gold(time.time_ns() // 1_000_000, bool(every) and n % every == 0, phase)
            ref_due = int(elapsed * self.ref_rate) + 1 if self.ref_rate > 0 else 0
            while refs < ref_due:
                refs += 1
                yield self._ref(time.time_ns() // 1_000_000)
            next_at = started + n / phase.rate
            if self.ref_rate > 0:
                next_at = min(next_at, started + refs / self.ref_rate)
            await asyncio.sleep(max(0.0, next_at - clock()))
        phase.end_ms = time.time_ns() // 1_000_000
        phase.ticks = n
        phase.wall_s = clock() - started


# ---------------------------------------------------------------- the run


@dataclass(slots=True)
class Children:
    processor: subprocess.Popen[bytes] | None = None
    gateway: subprocess.Popen[bytes] | None = None
    pids: dict[str, int] = field(default_factory=dict)  # what CPU is reported for

    def cpu(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids.items():
            seconds = _cpu_s(pid)
            if seconds is not None:
                out[name] = seconds
        return out

    def exited(self) -> bool:
        return any(c is not None and c.poll() is not None for c in (self.processor, self.gateway))

    def check(self) -> None:
        for name, child in (("processor", self.processor), ("gateway", self.gateway)):
            if child is not None and child.poll() is not None:
                sys.exit(f"the {name} exited with code {child.returncode}")

    def stop(self) -> None:
        children = [c for c in (self.gateway, self.processor) if c is not None]
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def start_children(settings: Settings, port: int, conflation_ms: int) -> Children:
    gateway = settings.gateway.replace(port=port, tokens=TOKEN, conflation_ms=conflation_ms)
    env = {**os.environ, **settings.replace(gateway=gateway).to_env()}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    python = [sys.executable, "-m", "cli", "-q"]
    children = Children()
    children.processor = subprocess.Popen(
        [*python, "process", "--no-seed-from-clickhouse"], cwd=ROOT, env=env
    )
    children.gateway = subprocess.Popen([*python, "gateway"], cwd=ROOT, env=env)
    return children


def wait_healthy(base: str, children: Children, timeout_s: float = 90) -> None:
    deadline = time.time() + timeout_s
    while True:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(base + "/healthz", timeout=2) as r,
        ):
            if r.status == 200:
                return
        children.check()
        if time.time() > deadline:
            sys.exit("the gateway did not come up")
        time.sleep(0.2)


async def publish_phases(
    settings: Settings,
    market: GoldMarket,
    phases: list[Phase],
    gap_s: float,
    ready: Any,
    children: Children,
    linger_ms: int | None,
    warm_up_s: float,
) -> tuple[int, int]:
    """Warm up until the client has its first record break, then for ``warm_up_s`` at the
    first phase's rate (unmeasured), then each phase and a gap."""
    options: dict[str, Any] = {} if linger_ms is None else {"linger_ms": linger_ms}
    tune_for_latency()  # as `tickstream produce` does: this process is the producer
    async with Publisher(settings, Validator(ValidationConfig()), **options) as publisher:
        warm = Phase("warm-up", 100, 120, 10)
        # until the client has a record break, or a child failed (said below, at once)
        await publisher.publish(
            market.ticks(warm, until=lambda: ready.is_set() or children.exited())
        )
        if not ready.is_set():
            children.check()
            sys.exit("no record break reached the client within 120 s of warm-up")
        if warm_up_s > 0:
            first = phases[0]
            print(
                f"  warming up: {first.rate:,.0f} ticks/s for {warm_up_s:g} s ...", file=sys.stderr
            )
            steady = Phase("warm-up", first.rate, warm_up_s, first.breaks_per_s)
            await publisher.publish(market.ticks(steady))
            await publisher.publish(market.ticks(Phase("gap", 100, gap_s, 0)))
        else:
            await publisher.publish(market.ticks(Phase("gap", 100, 2, 0)))
        for phase in phases:
            children.check()
            print(f"  {phase.rate:,.0f} ticks/s for {phase.seconds:.0f} s ...", file=sys.stderr)
            before = children.cpu()
            await publisher.publish(market.ticks(phase))
            after = children.cpu()
            phase.cpu = {k: after[k] - before[k] for k in after if k in before}
            await publisher.publish(market.ticks(Phase("gap", 100, gap_s, 0)))
        report = publisher.report
    return report.accepted, report.rejected


def _stats(values: list[float] | array) -> str:
    if not values:
        return "n=0"
    return (
        f"p50 {_pct(values, 0.5):8.1f}  p99 {_pct(values, 0.99):8.1f}  "
        f"max {max(values):8.1f} ms  (n={len(values):,})"
    )


def _phase_of(phases: list[Phase], recv_ms: float) -> Phase | None:
    for phase in phases:
        if phase.start_ms <= recv_ms <= phase.end_ms:
            return phase
    return None


def distinct_frames(frames: list[Frame]) -> tuple[list[Frame], int]:
    """The frames without repeats, and how many repeats there were. A repeat is the same
    signal id in the same status; not the same symbol, record, ts_ms and price, which two
    signals share when gold crosses $6,000: a $100 level and a $1,000 level at once."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for frame in frames:
        key = (frame[1], frame[6])  # (signal id, status): see Frame
        if key not in seen:
            seen.add(key)
            kept.append(frame)
    return kept, len(frames) - len(kept)


def report(
    phases: list[Phase], market: GoldMarket, result: dict[str, Any], args: argparse.Namespace
) -> None:
    by_phase: dict[str, dict[str, Any]] = {p.name: {} for p in phases}
    frames, duplicates = distinct_frames(result["frames"])
    unmatched = 0
    for now, _, symbol, record, ts_ms, price, status, recv, created in frames:
        if recv is None:
            recv = market.made.get((symbol, ts_ms, price))
        phase = _phase_of(phases, recv) if recv is not None else None
        if phase is None:
            unmatched += recv is None
            continue
        slot = by_phase[phase.name].setdefault(status, {"all": [], "up": [], "down": [], "n": {}})
        slot["all"].append(now - recv)
        if created is not None:
            slot["up"].append(created - recv)
            slot["down"].append(now - created)
        slot["n"][record] = slot["n"].get(record, 0) + 1
    ticks: dict[str, tuple[list[float], list[float], list[float]]] = {
        p.name: ([], [], []) for p in phases
    }
    for now, recv, created in zip(
        result["tick_now"], result["tick_recv"], result["tick_created"], strict=True
    ):
        phase = _phase_of(phases, recv)
        if phase is None:
            continue
        lat, up, down = ticks[phase.name]
        lat.append(now - recv)
        if created == created:  # not NaN
            up.append(created - recv)
            down.append(now - created)

    grids = ", ".join(f"${step:,g}" for step in market.level_steps) or "no"  # none set
    for phase in phases:
        print(
            f"\n{phase.rate:,.0f} ticks/s (achieved {phase.ticks / phase.wall_s:,.0f}/s over "
            f"{phase.wall_s:.1f} s): {phase.aths} all-time highs and {phase.levels} level "
            f"crossings ({grids} grids) published"
        )
        statuses = by_phase[phase.name]
        usual = ("provisional", "confirmed")
        for status in (*usual, *sorted(set(statuses) - set(usual))):
            slot = statuses.get(status)
            if slot is None:
                print(f"  record_break {status:11s} n=0")
                continue
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(slot["n"].items()))
            print(f"  record_break {status:11s} {_stats(slot['all'])}  [{kinds}]")
            if slot["up"]:
                print(
                    f"    receipt -> signals topic {_p50_p99(slot['up'])}, "
                    f"signals topic -> client {_p50_p99(slot['down'])}"
                )
        retracted = statuses.get("retracted")
        print(f"  retractions {len(retracted['all']) if retracted else 0}")
        if phase.cpu:
            cpu = ", ".join(f"{k} {100 * v / phase.wall_s:.0f}%" for k, v in phase.cpu.items())
            print(f"  cpu (% of one core): {cpu}")
        lat, up, down = ticks[phase.name]
        print(f"  tick {','.join(args.tick_symbols) or '-':18s} {_stats(lat)}")
        if up:
            print(
                f"    receipt -> ticks topic (publisher) {_p50_p99(up)}, "
                f"ticks topic -> client {_p50_p99(down)}"
            )
    print(
        f"\nframes matched to no tick of this run: {unmatched}; repeated frames: {duplicates}; "
        f"client errors: {result['errors'] or 'none'}"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="1000,5000,20000", help="gold ticks/s, one run each")
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each run")
    ap.add_argument("--breaks-per-s", type=float, default=20.0, help="all-time highs a second")
    ap.add_argument("--ath-step", type=float, default=1.0, help="$ between successive highs")
    ap.add_argument("--ref-rate", type=float, default=100.0, help="REF ticks/s (0 = none)")
    ap.add_argument(
        "--warm-up-s",
        type=float,
        default=10.0,
        help="unmeasured seconds at the first rate before the runs (a fresh broker's JIT)",
    )
    ap.add_argument(
        "--tick-symbols",
        default=REF,
        help="ticks the client subscribes to: REF (default), XAU,REF, * or '' (none)",
    )
    ap.add_argument(
        "--allowed-lateness-ms",
        type=int,
        default=int(_setting("allowed_lateness_ms")),
        help="the processor's (default: TICKSTREAM_ALLOWED_LATENESS_MS or the setting's)",
    )
    ap.add_argument(
        "--processor-batch-ms",
        type=int,
        default=int(_setting("processor_batch_ms")),
        help="the processor's batch window (default: as the setting)",
    )
    ap.add_argument("--conflation-ms", type=int, default=0, help="the gateway's tick conflation")
    ap.add_argument("--linger-ms", type=int, default=None, help="the Publisher's (default: its)")
    ap.add_argument("--partitions", type=int, default=int(_setting("partitions")))
    ap.add_argument("--kafka-bootstrap", default=_setting("kafka_bootstrap"))
    ap.add_argument(
        "--keep-topics",
        action="store_true",
        help="keep the run's topics on the broker (default: deleted at the end)",
    )
    args = ap.parse_args(argv)
    args.tick_symbols = [s for s in args.tick_symbols.split(",") if s.strip()]
    rates = [float(r) for r in args.rates.split(",") if r.strip()]

    started_broker = False
    if not kafka_local.reachable(args.kafka_bootstrap):
        if not kafka_local.is_loopback(args.kafka_bootstrap):
            sys.exit(f"no broker at {args.kafka_bootstrap}")
        print(f"starting the local broker at {args.kafka_bootstrap} ...", file=sys.stderr)
        kafka_local.broker("up", Settings(kafka_bootstrap=args.kafka_bootstrap).kafka_port)
        started_broker = True
    settings = Settings(
        kafka_bootstrap=args.kafka_bootstrap,
        namespace="latency" + uuid.uuid4().hex[:8],
        partitions=args.partitions,
        metrics_port=0,
        allowed_lateness_ms=args.allowed_lateness_ms,
        processor_batch_ms=args.processor_batch_ms,
        record_warmup_ms=0,  # gold has no seed: its all-time highs count from the start
    )
    children = Children()
    try:
        asyncio.run(ensure_topics(settings))
        port = _free_port()
        children = start_children(settings, port, args.conflation_ms)
        wait_healthy(f"http://127.0.0.1:{port}", children)
        ctx = mp.get_context("spawn")
        ready, stop = ctx.Event(), ctx.Event()
        recv_end, send_end = ctx.Pipe(duplex=False)
        client = ctx.Process(
            target=client_main,
            args=(
                f"ws://127.0.0.1:{port}/ws?token={TOKEN}",
                args.tick_symbols,
                ready,
                stop,
                send_end,
            ),
        )
        client.start()
        assert children.processor is not None and children.gateway is not None
        children.pids = {
            "producer": os.getpid(),
            "processor": children.processor.pid,
            "gateway": children.gateway.pid,
            "client": client.pid or 0,
        }
        broker = _broker_pid(settings.kafka_port)
        if broker is not None:
            children.pids["broker"] = broker
        load = os.getloadavg()
        market = GoldMarket(
            args.ath_step, args.ref_rate, settings.parsed_level_steps().get(GOLD, ())
        )
        phases = [Phase(f"{r:g}/s", r, args.seconds, args.breaks_per_s) for r in rates]
        gap_s = args.allowed_lateness_ms / 1000 + 2.0
        accepted, rejected = asyncio.run(
            publish_phases(
                settings, market, phases, gap_s, ready, children, args.linger_ms, args.warm_up_s
            )
        )
        stop.set()
        result = recv_end.recv()
        client.join(30)
    finally:
        children.stop()
        if not args.keep_topics:
            asyncio.run(drop_scratch(settings))
        if started_broker:
            kafka_local.broker("down", settings.kafka_port, check=False)

    print(
        f"latency bench: {GOLD} rising through new highs ({args.breaks_per_s:g} a second, "
        f"${args.ath_step:g} apart), {REF} flat at {args.ref_rate:g} ticks/s; "
        f"{settings.partitions} partitions, namespace {settings.namespace}"
    )
    print(
        f"  allowed lateness {settings.allowed_lateness_ms} ms, processor batch window "
        f"{settings.processor_batch_ms} ms (at most {settings.processor_batch} messages), "
        f"gateway conflation {args.conflation_ms} ms; {accepted:,} ticks published, "
        f"{rejected} rejected"
    )
    print(
        f"  latency = client receipt - tick's recv_ms (the producer's receipt), same clock; "
        f"machine: {os.cpu_count()} cores, shared with other work (load average "
        f"{load[0]:.2f} at start), so figures vary from run to run"
    )
    report(phases, market, result, args)


if __name__ == "__main__":
    main()
