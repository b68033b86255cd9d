"""`tickstream run` and its children, end to end (real broker, real Faust workers, chDB).

(a) The run SIGKILLed: its children (two processors and the gateway) are gone within
    seconds, and the same command started again comes up on the same ports. (Before, the
    children lived on, holding their ports, and the next run died on them.)
(b) The processor SIGKILLed mid-replay: the run starts it again, drains, exits 0, and the
    tables equal those of an uninterrupted run. (Before, the run ended with
    ``the stream processor exited with code -9``, and running it again published the file
    a second time.)
(c) A port the run needs is taken: one line naming its flag, before anything starts.
(d) A child that cannot start (a gateway certificate that is not one): the run stops with
    the child's error line, and does not start it again and again.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.replaying import replay_until_drained
from tickstream.topics import Topics

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "gold_silver_2026-01-26.csv"
WALL_CLOCK = {"recv_ts", "received_at", "inserted_at"}
TABLES = (
    "ticks",
    "late_ticks",
    "rejected_ticks",
    "bars_1m",
    "rolling_highs",
    "record_breaks",
    "divergence_windows",
    "rolling_breaks",
)
LEDGER = "signal_ledger"  # emission times differ between runs: each id's statuses


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free ports."""
    candidates = list(range(20_100, 20_900, 8))
    random.shuffle(candidates)
    for first in candidates:
        if all(_free(port) for port in range(first, first + n)):
            return first
    raise RuntimeError(f"no {n} consecutive free ports")


def _free(port: int) -> bool:
    try:
        socket.create_server(("0.0.0.0", port)).close()
    except OSError:
        return False
    return True


def children_of(pid: int) -> dict[int, str]:
    """The live processes whose parent is ``pid``, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _parent(int(entry.name)) == pid:
            with_args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            found[int(entry.name)] = with_args
    return found


def _parent(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]) if fields[0] != "Z" else None


def alive(pid: int) -> bool:
    """Runs (a zombie waiting for its reaper runs nothing and holds no port)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run_command(bootstrap: str, namespace: str, chdb: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "cli", "run",
        "--kafka-bootstrap", bootstrap, "--namespace", namespace,
        "--clickhouse-url", f"chdb://{chdb}", "--clickhouse-database", "tickstream",
        *extra,
    ]  # fmt: skip


def wait_for(proc: subprocess.Popen[bytes], log: Path, text: str, timeout_s: float = 180) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        said = log.read_text(errors="replace")
        if text in said:
            return said
        assert proc.poll() is None, f"the run ended before {text!r}:\n{said[-4000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in {timeout_s:.0f}s:\n{said[-4000:]}"
        time.sleep(0.1)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start(command: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)


# ---------------------------------------------------------------- (a) the run killed


def test_children_die_with_a_killed_run_and_the_next_run_gets_their_ports(
    kafka_bootstrap: str, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    metrics_port = free_ports(3)  # the run's, then processor 0's and 1's
    gateway_port = free_ports(1)
    namespace = "sv" + uuid.uuid4().hex[:10]
    command = run_command(
        kafka_bootstrap, namespace, tmp_path / "chdb",
        "--processors", "2", "--metrics-port", str(metrics_port),
        "--gateway-port", str(gateway_port), "--clickhouse-http-port", "0", "--sim-rate", "50",
    )  # fmt: skip
    first = start(command, tmp_path / "first.log", tmp_path)
    started.append(first)
    wait_for(first, tmp_path / "first.log", "running; Ctrl-C to stop")
    children = children_of(first.pid)
    assert sorted(c.split(" -m cli ")[1].split()[0] for c in children.values()) == [
        "gateway",
        "process",
        "process",
    ], children
    first.send_signal(signal.SIGKILL)
    first.wait()
    deadline = time.monotonic() + 5
    while left := [pid for pid in children if alive(pid)]:
        assert time.monotonic() < deadline, f"children of the killed run still alive: {left}"
        time.sleep(0.05)

    second = start(command, tmp_path / "second.log", tmp_path)
    started.append(second)
    said = wait_for(second, tmp_path / "second.log", "running; Ctrl-C to stop")
    assert f"live board: http://127.0.0.1:{gateway_port}/" in said
    assert len(children_of(second.pid)) == 3
    second.send_signal(signal.SIGINT)
    assert second.wait(timeout=120) == 0
    said = (tmp_path / "second.log").read_text()
    assert "Traceback" not in said and "Address already in use" not in said
    assert said.rstrip().splitlines()[-1].startswith("stopped; late ticks: ")


# ---------------------------------------------------------------- (b) the processor killed


def tables(chdb: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table with FINAL, without the columns holding the run's wall-clock times."""
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb}")
    try:
        out = {}
        for table in TABLES:
            names = [
                name
                for (name,) in client.query(
                    "SELECT name FROM system.columns WHERE database = 'tickstream' "
                    "AND table = {t:String} ORDER BY position",
                    parameters={"t": table},
                ).result_rows
                if name not in WALL_CLOCK
            ]
            sql = f"SELECT {', '.join(f'`{n}`' for n in names)} FROM tickstream.{table} FINAL"
            out[table] = sorted(map(tuple, client.query(sql).result_rows), key=repr)
        out[LEDGER] = sorted(
            client.query(
                f"SELECT id, arraySort(groupUniqArray(status)) FROM tickstream.{LEDGER} FINAL "
                "GROUP BY id"
            ).result_rows
        )
        return out
    finally:
        client.close()


async def _aggregates_written(bootstrap: str, namespace: str, partitions: int = 3) -> int:
    topic = Topics(namespace).aggregates
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return sum(ends.values())
    finally:
        await consumer.stop()


def processor_at_work(bootstrap: str, namespace: str) -> bool:
    """It has sent rows on (a bar, a rolling high): it is mid-way through the file."""
    try:
        return asyncio.run(_aggregates_written(bootstrap, namespace)) > 0
    except Exception:  # the topic not there yet
        return False


def test_a_processor_killed_mid_replay_is_started_again_and_the_run_drains_exactly(
    kafka_bootstrap: str, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    reference = tmp_path / "reference" / "chdb"
    replay_until_drained(EXAMPLE, reference, kafka_bootstrap, "ref" + uuid.uuid4().hex[:10])
    want = tables(reference)
    assert len(want["ticks"]) == 10_000 and want["bars_1m"] and want["record_breaks"]

    workdir = tmp_path / "killed"
    workdir.mkdir()
    log = workdir / "run.log"
    namespace = "pk" + uuid.uuid4().hex[:10]
    command = run_command(
        kafka_bootstrap, namespace, workdir / "chdb",
        "--replay", str(EXAMPLE), "--until-drained", "--metrics-port", "0",
        "--speed", "1000",  # the file's eight hours in about 30 s: time to kill mid-way
    )  # fmt: skip
    run = start(command, log, workdir)
    started.append(run)
    wait_for(run, log, "replay 1,000/10,000")
    deadline = time.monotonic() + 120
    while not processor_at_work(kafka_bootstrap, namespace):
        assert time.monotonic() < deadline, "the processor sent nothing on"
        time.sleep(0.2)
    said = log.read_text()
    assert "published:" not in said, "the file was all published before the kill"
    (processor,) = [p for p, c in children_of(run.pid).items() if " -m cli process" in c]
    os.kill(processor, signal.SIGKILL)

    assert run.wait(timeout=400) == 0, log.read_text()[-4000:]
    said = log.read_text()
    assert f"the stream processor (pid {processor}) was killed by SIGKILL after" in said
    assert "the stream processor started again (pid " in said and "restart 1)" in said
    assert "drained: everything derived from" in said
    got = tables(workdir / "chdb")
    for table, rows in want.items():
        if table == LEDGER:
            continue
        assert got[table] == rows, (table, len(got[table]), len(rows))
    # the desk path: no provisional id left dangling by the kill; the confirmed ids are the
    # uninterrupted run's
    for run_tables in (want, got):
        statuses = dict(run_tables[LEDGER])
        dangling = [i for i, s in statuses.items() if not {"confirmed", "retracted"} & set(s)]
        assert not dangling, f"provisional ids never confirmed nor retracted: {dangling[:5]}"
    confirmed = [{i for i, s in t[LEDGER] if "confirmed" in s} for t in (want, got)]
    assert confirmed[0] and confirmed[1] == confirmed[0]


# ---------------------------------------------------------------- (c) a port taken


@pytest.mark.parametrize(
    ("host", "taken", "args", "named"),
    [
        ("0.0.0.0", 0, ["--metrics-port", "{port}"], "--metrics-port / TICKSTREAM_METRICS_PORT"),
        ("0.0.0.0", 1, ["--metrics-port", "{port}"], "--metrics-port / TICKSTREAM_METRICS_PORT"),
        (
            "127.0.0.1",
            0,
            ["--metrics-port", "0", "--gateway-port", "{port}"],
            "--gateway-port / TICKSTREAM_GATEWAY_PORT",
        ),
        (
            "127.0.0.1",
            0,
            ["--metrics-port", "0", "--clickhouse-http-port", "{port}"],
            "--clickhouse-http-port / TICKSTREAM_CLICKHOUSE_HTTP_PORT",
        ),
    ],
    ids=["run-metrics", "processor-metrics", "gateway", "clickhouse-http"],
)
def test_a_taken_port_is_one_line_naming_its_flag(
    kafka_bootstrap: str, tmp_path: Path, host: str, taken: int, args: list[str], named: str
) -> None:
    """``taken``: how far past the given port the busy one is (1: processor 0's metrics)."""
    port = free_ports(2)
    command = run_command(
        kafka_bootstrap, "bp" + uuid.uuid4().hex[:10], tmp_path / "chdb",
        "--replay", str(EXAMPLE), "--until-drained", "--clickhouse-http-password", "pw",
        *[a.format(port=port) for a in args],
    )  # fmt: skip
    with socket.create_server((host, port + taken)):
        proc = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("Error: ") and named in lines[0] and str(port + taken) in lines[0]


# ---------------------------------------------------------------- (d) a child that cannot start


def test_a_child_that_cannot_start_stops_the_run_with_its_error(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    bogus = tmp_path / "cert.pem"
    bogus.write_text("not a certificate\n")
    command = run_command(
        kafka_bootstrap, "bc" + uuid.uuid4().hex[:10], tmp_path / "chdb",
        "--replay", str(EXAMPLE), "--until-drained", "--metrics-port", "0",
        "--gateway-port", str(free_ports(1)), "--gateway-tls-cert", str(bogus),
    )  # fmt: skip
    started_at = time.monotonic()
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    took = time.monotonic() - started_at
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert last.startswith(
        "Error: the gateway could not start: bad setting --gateway-tls-cert / "
        "TICKSTREAM_GATEWAY_TLS_CERT: cannot load the certificate"
    ), proc.stderr[-3000:]
    assert "started again" not in proc.stderr and "Traceback" not in proc.stderr
    assert took < 120
