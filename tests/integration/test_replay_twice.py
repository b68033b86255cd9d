"""`tickstream run --replay FILE --until-drained` twice leaves every table as after one replay.

The file is the worked example (gold through $5,000, silver through $107: every
analytic table gets rows) plus three bad lines. Tables are compared in full, with
plain SELECT (the sink merges the touched partitions after a drain) and with FINAL.
Columns holding wall-clock time of the run (``recv_ts`` of ticks, ``received_at`` of
rejections, ``inserted_at``) are left out: a replay receives its lines anew.

* Same namespace, same chDB directory, ``--allow-late`` (without it the second replay is
  refused as behind the namespace's clock: tests/integration/test_backfill.py): the
  processor resumes its state, so every tick of the second copy is late (at or before its
  symbol's flushed watermark): the analytic tables are unchanged and ``late_ticks``, the
  audit of what arrived too late to count, then lists every tick of the file.
* Second run in a fresh namespace, same chDB directory: every table, ``late_ticks`` too,
  equals the first run's.
"""

from __future__ import annotations

import csv
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from tests.replaying import replay_until_drained

pytestmark = pytest.mark.kafka

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gold_silver_2026-01-26.csv"
WALL_CLOCK = {"recv_ts", "received_at", "inserted_at"}
TABLES = (
    "ticks",
    "late_ticks",
    "bars_1m",
    "rolling_highs",
    "record_breaks",
    "divergence_windows",
    "rejected_ticks",
)
ANALYTIC = ("bars_1m", "rolling_highs", "record_breaks", "divergence_windows")
VIEWS = ("ohlc_1m", "ohlc_1h", "ohlc_1d", "daily_high_low", "latest_price")


def replay_file(tmp_path: Path) -> Path:
    path = tmp_path / "gold_silver_with_bad_lines.csv"
    lines = EXAMPLE.read_text().splitlines()
    lines[100:100] = ["not,a,tick,at,all,really"]
    lines[5_000:5_000] = ["1769390000000,XAU,-1,,"]
    lines.append("garbage")
    path.write_text("\n".join(lines) + "\n")
    return path


def run(csv_path: Path, namespace: str, chdb_dir: Path, bootstrap: str, *extra: str) -> None:
    replay_until_drained(csv_path, chdb_dir, bootstrap, namespace, *extra)


def contents(chdb_dir: Path) -> dict[str, dict[str, list[tuple[Any, ...]]]]:
    """{"plain": {table: rows}, "final": {table: rows}} without wall-clock columns."""
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_dir}")
    try:
        out: dict[str, dict[str, list[tuple[Any, ...]]]] = {"plain": {}, "final": {}}
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
            sql = f"SELECT {', '.join(names)} FROM tickstream.{table}"
            out["plain"][table] = sorted(map(tuple, client.query(sql).result_rows), key=repr)
            out["final"][table] = sorted(
                map(tuple, client.query(sql + " FINAL").result_rows), key=repr
            )
        for view in VIEWS:
            rows = sorted(
                map(tuple, client.query(f"SELECT * FROM tickstream.{view}").result_rows), key=repr
            )
            out["plain"][view] = out["final"][view] = rows
        return out
    finally:
        client.close()


def file_ticks(path: Path) -> list[tuple[str, int, float]]:
    """Every valid tick of the file as (symbol, ts_ms, price), read here with csv."""
    out = []
    with path.open() as fh:
        for row in csv.DictReader(fh):
            try:
                price = float(row["price"])
                ts = int(row["ts"])
            except (TypeError, ValueError):
                continue
            if price > 0 and row["symbol"]:
                out.append((row["symbol"], ts, price))
    return sorted(out)


def ms(value: datetime) -> int:
    return round(value.replace(tzinfo=value.tzinfo or UTC).timestamp() * 1000)


def assert_same(got: dict[str, Any], want: dict[str, Any], tables: tuple[str, ...]) -> None:
    for mode in ("plain", "final"):
        for table in tables:
            assert got[mode][table] == want[mode][table], f"{table} ({mode}) changed"


def test_replay_twice_same_namespace(kafka_bootstrap: str, tmp_path: Path) -> None:
    csv_path = replay_file(tmp_path)
    namespace = "t" + uuid.uuid4().hex[:10]
    chdb_dir = tmp_path / "chdb"
    run(csv_path, namespace, chdb_dir, kafka_bootstrap)
    once = contents(chdb_dir)
    assert all(once["final"][t] for t in (*TABLES[:1], *ANALYTIC, "rejected_ticks", *VIEWS))
    assert len(once["final"]["rejected_ticks"]) == 3
    assert once["plain"] == once["final"]  # merged after the drain: plain reads are exact

    run(csv_path, namespace, chdb_dir, kafka_bootstrap, "--allow-late")
    twice = contents(chdb_dir)
    assert_same(twice, once, ("ticks", "rejected_ticks", *ANALYTIC, *VIEWS))
    # the audit: every tick of the second copy came too late (at or before its symbol's
    # flushed watermark), so late_ticks now lists every tick of the file, once
    for mode in ("plain", "final"):
        got = sorted((s, ms(t), p) for s, t, p, *_rest in twice[mode]["late_ticks"])
        assert got == file_ticks(csv_path), mode


def test_replay_twice_fresh_namespace(kafka_bootstrap: str, tmp_path: Path) -> None:
    csv_path = replay_file(tmp_path)
    chdb_dir = tmp_path / "chdb"
    run(csv_path, "t" + uuid.uuid4().hex[:10], chdb_dir, kafka_bootstrap)
    once = contents(chdb_dir)
    run(csv_path, "t" + uuid.uuid4().hex[:10], chdb_dir, kafka_bootstrap)
    twice = contents(chdb_dir)
    # the second processor starts fresh, seeded with the history *before* the file's first
    # tick (none), so it recomputes exactly the rows of the first replay
    assert_same(twice, once, (*TABLES, *VIEWS))
