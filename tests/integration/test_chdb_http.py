"""ClickHouse's HTTP interface over a chDB directory, served by the process that holds it.

The owner is always another process (as `tickstream run` is for its users): a small script
here that opens a chDB directory through clickhouse-connect, as the sink does, and serves
it with ``tickstream.chdb_http``; or `tickstream sink` / `tickstream run` themselves. The
clients are the real ones: clickhouse-connect's HTTP client, `tickstream query`, the sink's
own ``http://`` path, and plain HTTP requests shaped as Grafana's datasource sends them.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import clickhouse_connect
import pytest
from click.testing import CliRunner
from clickhouse_connect.driver.exceptions import DatabaseError

from cli.main import _register, cli
from tickstream import chdb_http
from tickstream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-for-tests"

# The owner: opens the directory as the sink does (clickhouse-connect's chDB client), writes
# a few typed rows, serves, prints its port, and stops when its standard input closes.
OWNER = r"""
import sys
import clickhouse_connect
from tickstream.chdb_http import ChdbHttpServer

path, password, mode = sys.argv[1:4]
owner = clickhouse_connect.get_client(dsn="chdb://" + path)
owner.command("CREATE DATABASE IF NOT EXISTS tickstream")
if mode == "ro":
    owner.command(
        "CREATE TABLE tickstream.quotes (ts DateTime64(3, 'UTC'), day Date, price Float64, "
        "bid Nullable(Float64), symbol LowCardinality(String)) "
        "ENGINE = ReplacingMergeTree ORDER BY (symbol, ts)"
    )
    for _ in range(2):  # the same rows twice, in two parts: final=1 shows each once
        owner.command(
            "INSERT INTO tickstream.quotes VALUES "
            "('2026-01-26 01:02:03.456', '2026-01-26', 5052.5, NULL, 'XAU'), "
            "('2026-01-26 01:02:04', '2026-01-26', 107.25, 107.2, 'XAG')"
        )
server = ChdbHttpServer(path, password, port=0, writable=mode == "rw")
server.start()
print(server.port, flush=True)
sys.stdin.read()
server.close()
owner.close()
"""


@dataclass
class Owner:
    proc: subprocess.Popen[str]
    port: int
    directory: Path

    def client(
        self, password: str = PASSWORD, **kwargs: object
    ) -> clickhouse_connect.driver.Client:
        return clickhouse_connect.get_client(
            host="127.0.0.1", port=self.port, username="default", password=password, **kwargs
        )


def start_owner(directory: Path, mode: str) -> Owner:
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(directory), PASSWORD, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip().isdigit(), f"the owner did not start (exit {proc.poll()})"
    return Owner(proc, int(line), directory)


def stop_owner(owner: Owner) -> None:
    assert owner.proc.stdin is not None
    owner.proc.stdin.close()
    try:
        owner.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        owner.proc.kill()
        owner.proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Owner]:
    """A read-only server (the default) over a directory with two typed rows, written twice."""
    owner = start_owner(tmp_path_factory.mktemp("served") / "chdb", "ro")
    try:
        yield owner
    finally:
        stop_owner(owner)


def post(
    owner: Owner,
    sql: bytes,
    params: str = "",
    headers: dict[str, str] | None = None,
    password: str | None = PASSWORD,
) -> tuple[int, dict[str, str], bytes]:
    """One request as a client without a ClickHouse library sends it (Grafana, curl)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{owner.port}/?{params}", data=sql, method="POST"
    )
    if password is not None:
        token = base64.b64encode(f"default:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# ---------------------------------------------------------------- reading


def test_clickhouse_connect_reads_typed_rows_of_the_live_engine(served: Owner) -> None:
    client = served.client()
    try:
        assert client.command("SELECT count() FROM tickstream.quotes") == 2  # final=1
        assert client.command("SELECT getSetting('final'), getSetting('readonly')") == ["true", "1"]
        result = client.query(
            "SELECT ts, day, price, bid, symbol FROM tickstream.quotes ORDER BY symbol"
        )
        assert [t.name for t in result.column_types] == [
            "DateTime64(3, 'UTC')",
            "Date",
            "Float64",
            "Nullable(Float64)",
            "LowCardinality(String)",
        ]
        assert result.result_rows == [
            (datetime(2026, 1, 26, 1, 2, 4), date(2026, 1, 26), 107.25, 107.2, "XAG"),
            (datetime(2026, 1, 26, 1, 2, 3, 456_000), date(2026, 1, 26), 5052.5, None, "XAU"),
        ]
        bound = client.query(
            "SELECT price FROM tickstream.quotes WHERE symbol = {s:String}",
            parameters={"s": "XAU"},
        )
        assert bound.result_rows == [(5052.5,)]
        # the format is the engine's: a FORMAT clause, or the client's choice, passes through
        raw = client.raw_query(
            "SELECT symbol FROM tickstream.quotes ORDER BY symbol FORMAT JSONEachRow"
        )
        assert raw == b'{"symbol":"XAG"}\n{"symbol":"XAU"}\n'
        csv = client.raw_query("SELECT symbol, price FROM tickstream.quotes ORDER BY 1", fmt="CSV")
        assert csv == b'"XAG",107.25\n"XAU",5052.5\n'
    finally:
        client.close()


def test_grafana_style_requests(served: Owner) -> None:
    """As clickhouse-go sends them over HTTP (Grafana's datasource): SQL in the body,
    default_format=Native, its query timeout as max_execution_time, basic auth. Recent
    clickhouse-go releases also name their protocol revision, which chDB cannot write
    Native for: they get an error that says so, not blocks they would misread."""
    status, headers, body = post(
        served,
        b"SELECT symbol, price FROM quotes ORDER BY symbol",
        "default_format=Native&max_execution_time=60&database=tickstream",
    )
    assert status == 200, body
    assert headers["X-ClickHouse-Format"] == "Native"
    assert headers["X-ClickHouse-Timezone"]
    assert headers["X-ClickHouse-Query-Id"]
    assert int(json.loads(headers["X-ClickHouse-Summary"])["read_rows"]) >= 2
    assert body[:2] == b"\x02\x02"  # Native: 2 columns, 2 rows
    status, headers, body = post(
        served, b"SELECT 1", "default_format=Native&client_protocol_version=54460"
    )
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "48")
    assert b"client_protocol_version=54460" in body
    # the timeout may only move within production's analyst bounds
    status, headers, body = post(served, b"SELECT 1", "max_execution_time=100000")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "452")
    # no format asked: TabSeparated, as a server answers curl; a gzip body is understood
    status, headers, body = post(
        served, gzip.compress(b"SELECT 'a\\tb', 1"), headers={"Content-Encoding": "gzip"}
    )
    assert (status, body) == (200, b"a\\tb\t1\n")
    assert headers["Content-Type"].startswith("text/tab-separated-values")
    # the query as a URL parameter, and ClickHouse's own headers instead of basic auth
    request = urllib.request.Request(
        f"http://127.0.0.1:{served.port}/?query=SELECT%20version()",
        headers={"X-ClickHouse-User": "default", "X-ClickHouse-Key": PASSWORD},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.read().strip()


def test_requests_run_side_by_side(served: Owner) -> None:
    """A slow query holds its own chDB connection: others (the sink's inserts alike) go on."""
    timings: dict[str, float] = {}

    def slow() -> None:
        started = time.monotonic()
        post(served, b"SELECT sleepEachRow(0.5) FROM numbers(4) FORMAT Null")
        timings["slow"] = time.monotonic() - started

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    status, _headers, body = post(served, b"SELECT count() FROM tickstream.quotes")
    timings["fast"] = time.monotonic() - started
    thread.join()
    assert (status, body) == (200, b"2\n")
    assert timings["slow"] >= 1.9 and timings["fast"] < 1.0, timings


# ---------------------------------------------------------------- refusing


REFUSED = {
    "DROP TABLE tickstream.quotes": "164",
    "CREATE TABLE tickstream.x (a Int8) ENGINE = Memory": "164",
    "INSERT INTO tickstream.quotes (symbol) VALUES ('X')": "164",
    "ALTER TABLE tickstream.quotes DELETE WHERE 1": "164",
    "SELECT count() FROM tickstream.quotes SETTINGS final = 0": "164",  # locked, as in production
    "SELECT * FROM file('/etc/hostname', 'LineAsString')": "164",
    "SELECT file('/etc/hostname')": "164",  # chDB lets this function through readonly=1
    "INSERT INTO FUNCTION file('{dir}/written.csv', 'CSV') SELECT 1": "164",
    "SELECT 1 INTO OUTFILE '{dir}/outfile.tsv'": "486",
    "KILL QUERY WHERE 1": "164",  # would stop the sink's inserts
    "SELECT 1; DROP TABLE tickstream.quotes": "62",  # one statement per request
}


def test_read_only_refuses_writes_and_the_hosts_files(served: Owner, tmp_path: Path) -> None:
    client = served.client()
    try:
        for sql, code in REFUSED.items():
            with pytest.raises(DatabaseError) as caught:
                client.command(sql.format(dir=tmp_path))
            assert str(caught.value.code) == code, (sql, caught.value)
        with pytest.raises(DatabaseError) as caught:  # clickhouse-connect's Native insert
            client.insert("tickstream.quotes", [["XPT", 1.0]], column_names=["symbol", "price"])
        assert caught.value.code == 164
        assert client.command("SELECT count() FROM tickstream.quotes") == 2
    finally:
        client.close()
    assert list(tmp_path.iterdir()) == []  # nothing written on the host


def test_credentials_are_required(served: Owner) -> None:
    with pytest.raises(DatabaseError) as caught:
        served.client(password="wrong")
    assert caught.value.code == 516
    status, headers, _body = post(served, b"SELECT 1", password=None)
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (401, "516")
    with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/ping", timeout=10) as ping:
        assert ping.read() == b"Ok.\n"  # health checks need no password, as on a server


# ---------------------------------------------------------------- tickstream query


def test_tickstream_query_finds_the_server_of_a_held_directory(served: Owner) -> None:
    """`tickstream query` on the held chDB directory asks its owner instead of failing on
    the lock; an http:// URL of the server works as well."""
    _register()
    sql = "SELECT symbol, ts, price, bid, day FROM tickstream.quotes ORDER BY symbol"
    expected = (
        "XAG\t2026-01-26 01:02:04\t107.25\t107.2\t2026-01-26\n"
        "XAU\t2026-01-26 01:02:03.456\t5052.5\t\\N\t2026-01-26\n"
    )
    for url in (
        f"chdb://{served.directory}",
        f"http://default:{PASSWORD}@127.0.0.1:{served.port}",
    ):
        result = CliRunner().invoke(
            cli, ["query", "--clickhouse-url", url, "--clickhouse-database", "tickstream", sql]
        )
        assert result.exit_code == 0, result.output
        assert result.output == expected
    assert chdb_http.running_endpoint(f"chdb://{served.directory}") is not None
    missing = CliRunner().invoke(
        cli,
        [
            "query",
            "--clickhouse-url",
            f"chdb://{served.directory}",
            "--clickhouse-database",
            "nowhere",
            "SELECT 1",
        ],
    )  # a read-only server cannot create it: one line that names the setting
    assert missing.exit_code == 1
    assert "database nowhere (--clickhouse-database" in missing.output
    assert "READONLY" in missing.output and "Traceback" not in missing.output


def test_endpoint_file_of_a_dead_owner_is_ignored(tmp_path: Path) -> None:
    """A killed run leaves its endpoint file behind; the directory is free then."""
    directory = tmp_path / "chdb"
    directory.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = {"url": "http://127.0.0.1:1", "user": "default", "password": "x", "pid": int(dead.stdout)}
    (directory / chdb_http.ENDPOINT_FILE).write_text(json.dumps(doc))
    assert chdb_http.running_endpoint(f"chdb://{directory}") is None


# ---------------------------------------------------------------- the profile


def test_read_only_is_productions_analyst_profile() -> None:
    """The same query gives the same answer (and the same refusals) here and on the server."""
    users = ET.parse(ROOT / "deploy" / "clickhouse" / "users.d" / "tickstream.xml")
    profile = users.getroot().find("profiles/tickstream_analyst")
    assert profile is not None
    assert profile.findtext("readonly") == "1"
    for name, value in chdb_http.READ_ONLY_PROFILE.items():
        assert profile.findtext(name) == value, name
    run_time = profile.find("constraints/max_execution_time")
    assert run_time is not None and run_time.find("changeable_in_readonly") is not None
    bounds = (int(run_time.findtext("min") or 0), int(run_time.findtext("max") or 0))
    assert bounds == chdb_http.MAX_EXECUTION_TIME_S


# ---------------------------------------------------------------- start-up errors


def test_busy_port_and_missing_password_are_one_line_errors(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKSTREAM_")}

    def sink(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "sink",
                "--kafka-bootstrap",
                "127.0.0.1:1",
                "--clickhouse-url",
                f"chdb://{tmp_path / 'chdb'}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**env, **extra},
        )

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = str(busy.getsockname()[1])
        taken = sink("--clickhouse-http-port", port, TICKSTREAM_CLICKHOUSE_HTTP_PASSWORD="x")
    assert taken.returncode == 2
    assert taken.stderr.count("\n") == 1, taken.stderr
    assert "--clickhouse-http-port / TICKSTREAM_CLICKHOUSE_HTTP_PORT" in taken.stderr
    assert f"127.0.0.1:{port}" in taken.stderr
    unprotected = sink("--clickhouse-http-port", port)
    assert unprotected.returncode == 2 and unprotected.stderr.count("\n") == 1
    assert "TICKSTREAM_CLICKHOUSE_HTTP_PASSWORD" in unprotected.stderr


# ---------------------------------------------------------------- writing


def test_writable_server_takes_inserts_as_a_server_does(tmp_path: Path) -> None:
    """Data after the statement in the body, or the statement in the URL and the data in
    the body; inline VALUES rows stay part of the statement."""
    owner = start_owner(tmp_path / "chdb", "rw")
    try:
        client = owner.client()
        try:
            client.command("CREATE TABLE tickstream.t (a Int32, s String) ENGINE = Memory")
            client.command("INSERT INTO tickstream.t VALUES (1, 'a')")
            client.command("INSERT INTO tickstream.t VALUES (2, 'b'),\n(3, 'c')")
            client.insert("tickstream.t", [[4, "d"], [5, "e"]], column_names=["a", "s"])
            client.raw_insert("tickstream.t", ["a", "s"], b"6\tf\n", fmt="TSV")
            status, _h, body = post(owner, b"INSERT INTO tickstream.t VALUES (7, 'g')\n(8, 'h')")
            assert status == 200, body
            status, _h, body = post(
                owner, b"(9, 'i'), (10, 'j')", "query=INSERT%20INTO%20tickstream.t%20VALUES"
            )
            assert status == 200, body
            status, _h, body = post(
                owner,
                gzip.compress(b'{"a": 11, "s": "k"}\n'),
                "query=INSERT%20INTO%20tickstream.t%20FORMAT%20JSONEachRow",
                headers={"Content-Encoding": "gzip"},
            )
            assert status == 200, body
            rows = client.query("SELECT a, s FROM tickstream.t ORDER BY a").result_rows
            assert rows == [(n, chr(ord("a") + n - 1)) for n in range(1, 12)]
            with pytest.raises(DatabaseError) as caught:  # HTTP never writes on the host
                client.command(f"SELECT 1 INTO OUTFILE '{tmp_path}/outfile.tsv'")
            assert caught.value.code == 486
        finally:
            client.close()
    finally:
        stop_owner(owner)


# ---------------------------------------------------------------- writing: the sink's http://


@pytest.mark.kafka
async def test_sink_writes_through_a_writable_server(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    """The sink's http:// path against a real engine: migrations, JSON and lz4 Native
    inserts with deduplication tokens, merges; every published tick lands once."""
    from sinks.clickhouse_sink import ClickHouseSink

    owner = start_owner(tmp_path / "chdb", "rw")
    try:
        settings = Settings(
            kafka_bootstrap=kafka_bootstrap,
            namespace=namespace,
            clickhouse_url=f"http://default:{PASSWORD}@127.0.0.1:{owner.port}",
            clickhouse_database="tickstream",
            metrics_port=0,
            sink_batch_rows=400,
            sink_flush_ms=100,
        )
        ticks, bars = sink_inputs()
        run_id = await publish(settings, ticks, bars)
        sink = ClickHouseSink(settings)
        await sink.start()
        task = asyncio.create_task(sink.run())
        try:
            waiter = asyncio.create_task(sink.wait_drained(run_id))
            done, _ = await asyncio.wait({waiter, task}, timeout=120, return_when="FIRST_COMPLETED")
            if task in done:
                task.result()
            assert waiter in done, "the sink did not drain"
            await sink.merge_touched()
        finally:
            await sink.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            sink.close()
        client = owner.client()
        try:
            rows = client.query(
                "SELECT symbol, toUnixTimestamp64Milli(ts), price, bid, venue "
                "FROM tickstream.ticks FINAL"
            ).result_rows
            assert sorted(rows) == sorted((r[0], r[1], r[2], r[3], r[6]) for r in ticks)
            bars_got = client.query(
                "SELECT symbol, toUnixTimestamp64Milli(ts), close, ticks "
                "FROM tickstream.bars_1m FINAL"
            ).result_rows  # the later version of a bar sent twice wins
            assert sorted(bars_got) == sorted(
                (b["symbol"], b["ts_ms"], b["close"], b["ticks"]) for b in bars.values()
            )
        finally:
            client.close()
    finally:
        stop_owner(owner)


def sink_inputs() -> tuple[list[list[object]], dict[tuple[str, int], dict[str, object]]]:
    """Ticks (some with bid/venue) and bars, a few of them sent twice, the second newer."""
    start = 1_769_385_600_000  # 2026-01-26T00:00:00Z
    ticks: list[list[object]] = []
    bars: dict[tuple[str, int], dict[str, object]] = {}
    for symbol, price in (("XAU", 5_000.0), ("XAG", 107.0)):
        for i in range(900):
            ts = start + i * 1_000
            full = i % 3 == 0
            bid = price + i - 0.5 if full else None
            venue = "venue-a" if full else None
            ticks.append([symbol, ts, price + i, bid, None, None, venue, None, ts + 5])
        for minute in range(15):
            ts = start + minute * 60_000
            bars[(symbol, ts)] = {
                "kind": "bar_1m",
                "symbol": symbol,
                "ts_ms": ts,
                "open": price,
                "high": price + 9,
                "low": price - 9,
                "close": price + minute,
                "ticks": 60,
            }
    return ticks, bars


async def publish(
    settings: Settings, ticks: list[list[object]], bars: dict[tuple[str, int], dict[str, object]]
) -> str:
    """Ticks in batches of one symbol, bars (some twice: an older version first), then an
    end-of-input marker on every partition of every sink input, as the processor sends it."""
    import orjson
    from aiokafka import AIOKafkaProducer

    from tickstream import contracts
    from tickstream.kafka_io import ensure_topics
    from tickstream.topics import Topics

    await ensure_topics(settings)
    topics = Topics(settings.namespace)
    run_id = uuid.uuid4().hex
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for i in range(0, len(ticks), 100):
            batch = ticks[i : i + 100]
            await producer.send(topics.ticks, orjson.dumps(batch), key=str(batch[0][0]).encode())
        for n, bar in enumerate(bars.values()):
            key = str(bar["symbol"]).encode()
            if n % 4 == 0:
                older = {**bar, "close": 0.0, "ticks": 1}
                await producer.send(topics.aggregates, orjson.dumps(older), key=key)
            await producer.send(topics.aggregates, orjson.dumps(bar), key=key)
        n = settings.partitions
        for topic in topics.sink_inputs():
            for p in range(n):
                marker = contracts.encode_end_of_input(run_id, p, n)
                await producer.send_and_wait(topic, marker, partition=p)
    finally:
        await producer.stop()
    return run_id


@pytest.mark.kafka
def test_tickstream_sink_serves_the_directory_it_holds(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    chdb_dir = tmp_path / "chdb"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKSTREAM_")}
    sink = subprocess.Popen(
        [sys.executable, "-m", "cli", "sink", "--kafka-bootstrap", kafka_bootstrap,
         "--namespace", namespace, "--clickhouse-url", f"chdb://{chdb_dir}",
         "--clickhouse-database", "tickstream", "--metrics-port", "0",
         "--clickhouse-http-port", str(port)],
        cwd=ROOT, env={**env, "TICKSTREAM_CLICKHOUSE_HTTP_PASSWORD": PASSWORD},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (chdb_dir / chdb_http.ENDPOINT_FILE).exists():
            assert sink.poll() is None and time.monotonic() < deadline, sink.returncode
            time.sleep(0.3)
        served = Owner(sink, port, chdb_dir)  # type: ignore[arg-type]
        client = served.client()
        try:  # the sink's schema, migrated before it started serving
            assert client.command("SELECT max(version) FROM tickstream.schema_migrations") > 0
            assert client.command("SELECT count() FROM tickstream.ticks") == 0
        finally:
            client.close()
    finally:
        sink.send_signal(signal.SIGTERM)
        _out, err = sink.communicate(timeout=60)
    assert sink.returncode == 0, err[-3000:]
    assert not (chdb_dir / chdb_http.ENDPOINT_FILE).exists()


# ---------------------------------------------------------------- a query during `tickstream run`


@pytest.mark.kafka
def test_query_during_a_run(kafka_bootstrap: str, namespace: str, tmp_path: Path) -> None:
    """The issue as a user meets it: `tickstream query` while `tickstream run` holds chDB."""
    csv = tmp_path / "ticks.csv"
    lines = ["ts,symbol,price"] + [
        f"2026-01-26T00:{i // 60:02d}:{i % 60:02d}Z,XAU,{5000 + i}" for i in range(40)
    ]
    csv.write_text("\n".join(lines) + "\n")
    chdb_dir = tmp_path / "chdb"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKSTREAM_")}
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "run",
            "--replay",
            str(csv),
            "--kafka-bootstrap",
            kafka_bootstrap,
            "--namespace",
            namespace,
            "--clickhouse-url",
            f"chdb://{chdb_dir}",
            "--clickhouse-database",
            "tickstream",
            "--metrics-port",
            "0",
            "--gateway-port",
            "0",
            "--clickhouse-http-port",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(run.stderr or []), daemon=True)
    reader.start()

    def query(sql: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli", "query", "--clickhouse-url", f"chdb://{chdb_dir}", sql],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env=env,
        )

    try:
        # not before: a query that opened the directory first would lock the run out of it
        deadline = time.monotonic() + 240
        while not (chdb_dir / chdb_http.ENDPOINT_FILE).exists():
            assert run.poll() is None and time.monotonic() < deadline, "".join(stderr)[-4000:]
            time.sleep(0.5)
        got = wait_for(lambda: query("SELECT count() FROM tickstream.ticks"), "40\n", run)
        assert got.stdout == "40\n", got.stderr
        denied = query("DROP TABLE tickstream.ticks")
        assert denied.returncode == 1 and "READONLY" in denied.stderr
        assert (chdb_dir / chdb_http.ENDPOINT_FILE).stat().st_mode & 0o077 == 0
    finally:
        run.send_signal(signal.SIGINT)
        code = run.wait(timeout=120)
        reader.join(timeout=10)
    output = "".join(stderr)
    assert code == 0, output[-4000:]
    assert f"ClickHouse HTTP interface (read-only, meanwhile): http://127.0.0.1:{port}" in output
    assert not (chdb_dir / chdb_http.ENDPOINT_FILE).exists()


def wait_for(
    attempt: Callable[[], subprocess.CompletedProcess[str]],
    expected: str,
    run: subprocess.Popen[str],
    timeout_s: float = 240,
) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        got = attempt()
        if got.returncode == 0 and got.stdout == expected:
            return got
        assert run.poll() is None, f"the run exited ({run.returncode})"
        if time.monotonic() > deadline:
            return got
        time.sleep(1)
