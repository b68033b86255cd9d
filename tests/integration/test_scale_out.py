"""Scale-out: processor workers in one consumer group, sinks in one group, identical tables.

A market of five symbol groups (two pairs, three symbols alone), out of order, on four
partitions (tests/group_stream.py) goes through the real pipeline: `tickstream process`
workers as subprocesses, a `tickstream sink`, a real broker. One worker, two, three, a
worker SIGKILLed mid-replay and a worker added mid-replay must all leave the tables the
one-worker run leaves, and the sink must report the run drained exactly once. Several
sinks (one of them SIGKILLed) must leave them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import clickhouse_connect
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import GroupCoordinatorNotAvailableError
from group_stream import SETTINGS, ticks, write_csv

from processors.core import decode_state
from processors.state_store import load_snapshots
from tests.integration.test_chdb_http import PASSWORD, start_owner, stop_owner
from tests.integration.test_processor_restart import LEDGER, TABLES, publish_lines
from tickstream import contracts
from tickstream.kafka_io import ensure_topics
from tickstream.settings import Settings
from tickstream.topics import Topics

pytestmark = pytest.mark.kafka
FIRST = 5_000  # replay lines published before anything happens to the workers
CHUNKS = 6  # the rest, in chunks a second apart: the rebalance happens mid-replay


@dataclass
class Pipeline:
    settings: Settings
    folder: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    sinks: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """A component with the pipeline's settings; its log in the folder."""
        log = (self.folder / f"{name}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            env={**os.environ, **self.settings.to_env()},
            cwd=self.folder,  # Faust's data folder: shared by the workers, as on one host
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def add_worker(self) -> subprocess.Popen[bytes]:
        n = len(self.workers)
        worker = self.start(f"worker{n}", "process", "--no-seed-from-clickhouse")
        self.workers.append(worker)
        return worker

    def add_sink(self) -> subprocess.Popen[bytes]:
        sink = self.start(f"sink{len(self.sinks)}", "sink")  # INFO: its "drained" line
        self.sinks.append(sink)
        return sink

    def stop(self) -> None:
        for proc in [*self.workers, *self.sinks]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers, *self.sinks]:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.folder.glob("*.log"))
        )

    def drained_lines(self) -> list[str]:
        mark = f"run {self.run_id} drained"
        return [
            line
            for log in sorted(self.folder.glob("sink*.log"))
            for line in log.read_text(errors="replace").splitlines()
            if mark in line
        ]


@pytest.fixture(scope="module")
def replay_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("stream") / "groups.csv", ticks())


def pipeline(bootstrap: str, folder: Path, clickhouse_url: str | None = None) -> Pipeline:
    folder.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        kafka_bootstrap=bootstrap,
        namespace="s" + uuid.uuid4().hex[:10],
        clickhouse_url=clickhouse_url or f"chdb://{folder / 'chdb'}",
        clickhouse_database="tickstream",  # the tables are read as tickstream.*
        metrics_port=0,
        processor_batch_ms=100,
        **SETTINGS,
    )
    asyncio.run(ensure_topics(settings))
    return Pipeline(settings, folder)


def publish(p: Pipeline, path: Path, start: int, stop: int | None, end: bool = False) -> None:
    asyncio.run(publish_lines(p.settings, path, start, stop, p.run_id if end else None))


def publish_rest_slowly(p: Pipeline, path: Path, midway: Callable[[], None] = lambda: None) -> None:
    """The lines after FIRST in CHUNKS chunks a second apart, the end marker last;
    ``midway`` (a rebalance to wait for) between the halves."""
    total = sum(1 for _ in path.open()) - 1
    bounds = [FIRST + (total - FIRST) * i // CHUNKS for i in range(CHUNKS + 1)]
    for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        if i == CHUNKS // 2:
            midway()
        publish(p, path, a, b if i < CHUNKS - 1 else None, end=i == CHUNKS - 1)
        time.sleep(1.0)


async def group_members(settings: Settings, component: str) -> tuple[str, int]:
    """(state, member count) of a component's consumer group."""
    state, owned = await group_assignment(settings, component)
    return state, len(owned)


async def group_assignment(settings: Settings, component: str) -> tuple[str, list[set[int]]]:
    """(state, the ticks partitions of each member) of a component's consumer group."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(GroupCoordinatorNotAvailableError):  # a broker just started
            topics = Topics(settings.namespace)
            (response,) = await admin.describe_consumer_groups([topics.group(component)])
            (group,) = response.groups
            owned = []
            for member in group[5]:
                assignment = member[-1]
                tps = (
                    ConsumerProtocolMemberAssignment.decode(assignment).assignment
                    if assignment
                    else []
                )
                owned.append({q for t, parts in tps if t == topics.ticks for q in parts})
            return str(group[2]), owned
        return "", []
    finally:
        await admin.close()


def wait_for_group(
    p: Pipeline,
    component: str,
    members: int,
    timeout_s: float = 120,
    alive: list[subprocess.Popen[bytes]] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while asyncio.run(group_members(p.settings, component)) != ("Stable", members):
        for proc in alive if alive is not None else [*p.workers, *p.sinks]:
            assert proc.poll() is None, f"a component exited ({proc.returncode})\n{p.logs()}"
        assert time.monotonic() < deadline, f"{component} group never stable\n{p.logs()}"
        time.sleep(0.5)


def wait_for_state_of_every_partition(p: Pipeline, timeout_s: float = 120) -> None:
    """Every ticks partition has a snapshot that reflects some of its input."""
    topic = Topics(p.settings.namespace).processor_state
    deadline = time.monotonic() + timeout_s
    while True:
        blobs = asyncio.run(load_snapshots(p.settings.kafka_bootstrap, topic))
        progress = {q: decode_state(b)["applied"].get(str(q), -1) for q, b in blobs.items()}
        if len(progress) == p.settings.partitions and min(progress.values()) >= 0:
            return
        assert time.monotonic() < deadline, f"no state for every partition\n{p.logs()}"
        time.sleep(0.3)


async def markers_and_ends(settings: Settings, run_id: str) -> tuple[set[int], dict[Any, int]]:
    """The partitions of the aggregates topic holding the run's end marker; every sink
    input's end offsets."""
    topics = Topics(settings.namespace)
    consumer = AIOKafkaConsumer(
        topics.aggregates,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        parts = [
            TopicPartition(t, q) for t in topics.sink_inputs() for q in range(settings.partitions)
        ]
        ends = await consumer.end_offsets(parts)
        marked: set[int] = set()
        while True:
            got = await consumer.getmany(timeout_ms=300)
            if not got:
                return marked, ends
            for tp, records in got.items():
                for r in records:
                    doc = orjson.loads(r.value)
                    if contracts.is_end_of_input(doc) and doc["run_id"] == run_id:
                        marked.add(tp.partition)
    finally:
        await consumer.stop()


async def committed(settings: Settings) -> dict[Any, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(Topics(settings.namespace).group("sink"))
        return {tp: meta.offset for tp, meta in offsets.items()}
    finally:
        await admin.close()


def wait_until_sunk(p: Pipeline, timeout_s: float = 240) -> None:
    """Every partition's end marker passed on, and the sink group committed everything."""
    deadline = time.monotonic() + timeout_s
    while True:
        marked, ends = asyncio.run(markers_and_ends(p.settings, p.run_id))
        if len(marked) == p.settings.partitions:
            done = asyncio.run(committed(p.settings))
            if all(done.get(tp, -1) >= end for tp, end in ends.items() if end > 0):
                return
        for proc in p.sinks:
            assert proc.poll() in (None, -signal.SIGKILL), f"a sink exited\n{p.logs()}"
        assert time.monotonic() < deadline, f"not sunk: markers on {marked}\n{p.logs()}"
        time.sleep(0.5)


def read_tables(client: Any) -> dict[str, list[tuple]]:
    tables = {
        table: sorted(client.query(f"SELECT {cols} FROM tickstream.{table} FINAL").result_rows)
        for table, cols in TABLES.items()
    }
    tables[LEDGER] = sorted(
        (i, tuple(sorted(s)))
        for i, s in client.query(
            f"SELECT id, groupUniqArray(status) FROM tickstream.{LEDGER} FINAL GROUP BY id"
        ).result_rows
    )
    return tables


def chdb_tables(p: Pipeline) -> dict[str, list[tuple]]:
    client = clickhouse_connect.get_client(dsn=p.settings.clickhouse_url)
    try:
        return read_tables(client)
    finally:
        client.close()


def run_workers(
    bootstrap: str, folder: Path, path: Path, workers: int, event: str = ""
) -> Pipeline:
    """The whole replay through ``workers`` workers and one sink; ``event`` ("kill" or
    "add") happens once every partition has state, while the rest is published."""
    p = pipeline(bootstrap, folder)
    try:
        p.add_sink()
        for _ in range(workers):
            p.add_worker()
        wait_for_group(p, "processor", workers)
        _, owned = asyncio.run(group_assignment(p.settings, "processor"))
        assert all(owned) and set().union(*owned) == set(range(4)), owned  # each works
        publish(p, path, 0, FIRST)
        wait_for_state_of_every_partition(p)
        now = workers
        if event == "kill":  # with the group stable, every worker owns partitions
            p.workers[0].send_signal(signal.SIGKILL)
            p.workers[0].wait()
            now -= 1
        elif event == "add":
            p.add_worker()
            now += 1

        def moved() -> None:  # the partitions moved while the replay goes on
            wait_for_group(p, "processor", now, alive=p.workers[-now:])
            _, owned = asyncio.run(group_assignment(p.settings, "processor"))
            assert all(owned) and set().union(*owned) == set(range(4)), owned

        publish_rest_slowly(p, path, moved if event else lambda: None)
        wait_until_sunk(p)
    finally:
        p.stop()
    return p


def assert_same_tables(got: dict[str, list[tuple]], want: dict[str, list[tuple]]) -> None:
    for table in TABLES:
        assert got[table] == want[table], table
    # the desk path: every provisional id ends confirmed or retracted, and the confirmed
    # ids are exactly those of the one-worker run
    for run in (got, want):
        dangling = [i for i, s in run[LEDGER] if not {"confirmed", "retracted"} & set(s)]
        assert not dangling, f"provisional ids never confirmed nor retracted: {dangling[:5]}"
    confirmed = [{i for i, s in run[LEDGER] if "confirmed" in s} for run in (got, want)]
    assert confirmed[0] and confirmed[0] == confirmed[1]


@pytest.fixture(scope="module")
def one_worker(
    kafka_bootstrap: str, replay_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, list[tuple]]]:
    p = run_workers(kafka_bootstrap, tmp_path_factory.mktemp("one"), replay_file, 1)
    assert len(p.drained_lines()) == 1, p.logs()
    tables = chdb_tables(p)
    assert len(tables["ticks"]) == len(ticks())
    assert tables["late_ticks"] and tables["record_breaks"] and tables["rolling_highs"]
    pairs = {row[0] for row in tables["divergence_windows"]}
    assert pairs == {"XAU/XAG", "XPT/XPD"}, "both pairs met in their group's core"
    yield tables


@pytest.mark.parametrize(
    ("workers", "event"),
    [(2, ""), (3, ""), (3, "kill"), (1, "add")],
    ids=["two", "three", "one-of-three-killed", "one-added"],
)
def test_workers_leave_the_one_worker_tables(
    kafka_bootstrap: str,
    replay_file: Path,
    tmp_path: Path,
    one_worker: dict[str, list[tuple]],
    workers: int,
    event: str,
) -> None:
    p = run_workers(kafka_bootstrap, tmp_path, replay_file, workers, event)
    lines = p.drained_lines()
    assert len(lines) == 1, f"drained reported {len(lines)} times\n{p.logs()}"
    assert_same_tables(chdb_tables(p), one_worker)


def test_several_sinks_one_killed_leave_the_same_tables(
    kafka_bootstrap: str, replay_file: Path, tmp_path: Path, one_worker: dict[str, list[tuple]]
) -> None:
    """Three sinks in one group over one ClickHouse (a chDB directory served over HTTP):
    one is SIGKILLed mid-replay; every row is in the tables once, as with one sink."""
    owner = start_owner(tmp_path / "chdb", "rw")
    try:
        url = f"http://default:{PASSWORD}@127.0.0.1:{owner.port}"
        p = pipeline(kafka_bootstrap, tmp_path / "run", url)
        try:
            p.add_sink()
            wait_for_group(p, "sink", 1)  # the schema migrated once, before the others
            p.add_sink()
            p.add_sink()
            p.add_worker()
            wait_for_group(p, "sink", 3)
            publish(p, replay_file, 0, FIRST)
            wait_for_state_of_every_partition(p)
            p.sinks[1].send_signal(signal.SIGKILL)
            p.sinks[1].wait()
            survivors = [p.sinks[0], p.sinks[2], *p.workers]
            publish_rest_slowly(
                p, replay_file, lambda: wait_for_group(p, "sink", 2, alive=survivors)
            )
            wait_until_sunk(p)
        finally:
            p.stop()
        client = owner.client()
        try:
            assert_same_tables(read_tables(client), one_worker)
        finally:
            client.close()
    finally:
        stop_owner(owner)


def test_gateways_each_read_the_whole_feed(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Gateways are no consumer group: two of them each take every partition (a desk on
    either sees every symbol), each partition once (a gateway's consumers do not read one
    twice), and neither moves the other's position."""
    from sinks.gateway.access import TokenTable
    from sinks.gateway.config import GatewayConfig
    from sinks.gateway.feed import Feed
    from sinks.gateway.session import Sessions
    from sinks.gateway.state import BoardState, SignalLog

    p = pipeline(kafka_bootstrap, tmp_path)
    config = GatewayConfig(
        kafka_bootstrap, p.settings.namespace, TokenTable({"desk-token": None}), partitions=4
    )

    async def assignments() -> list[list[TopicPartition]]:
        feeds = []
        for _ in range(2):
            state, log, counts = BoardState(None), SignalLog(100), {}
            sessions = Sessions(config, state, log, counts)
            feed = Feed(config, state, log, sessions, counts, asyncio.Event())
            await feed.start()
            feeds.append(feed)
        try:
            return [sorted(f.assignment()) for f in feeds]
        finally:
            for feed in feeds:
                await feed.stop()

    topics = Topics(p.settings.namespace)
    every = {
        TopicPartition(t, q)
        for t in (topics.ticks, topics.aggregates, topics.signals)
        for q in range(4)
    }
    assert asyncio.run(assignments()) == [sorted(every), sorted(every)]  # each once


def test_other_groups_in_a_running_namespace_are_refused(
    kafka_bootstrap: str, replay_file: Path, tmp_path: Path
) -> None:
    """Pairs that regroup the symbols of a namespace with state: one line, the way out."""
    p = pipeline(kafka_bootstrap, tmp_path)
    try:
        p.add_worker()
        publish(p, replay_file, 0, 2_000)
        wait_for_state_of_every_partition(p)
    finally:
        p.stop()
    regrouped = p.settings.replace(divergence_pairs="XAU/XAG,XPT/BTC")
    refused = subprocess.run(
        [sys.executable, "-m", "cli", "-q", "process", "--no-seed-from-clickhouse"],
        env={**os.environ, **regrouped.to_env()},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2, refused.stderr[-3000:]
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("Error: bad setting --divergence-pairs / TICKSTREAM_DIVERGENCE_PAIRS:")
    assert "groups BTC+XPT, XAG+XAU, but" in line and "groups XAG+XAU, XPD+XPT;" in line
    assert "new --namespace" in line
