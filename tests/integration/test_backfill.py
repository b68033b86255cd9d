"""A replay behind its namespace's clock is refused with what to run, or backfilled.

The worked example replayed into a namespace whose processor had already gone past it
used to send all 10,000 ticks to late_ticks while the run said "drained" and "0 rejected".
Here, in one namespace and chDB directory:

1. the example, replayed once: every analytic table gets rows; the last line counts 0 late;
2. the same file again: refused before anything is published, the message naming the
   file's start, the namespace's clock and the commands to run instead;
3. the first of those commands (``--backfill``): the file gets a clock of its own, the
   tables equal those of step 1, no late tick, and its temporary namespace is gone;
4. `tickstream produce replay` of the file into the namespace: refused likewise.
"""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from aiokafka.admin import AIOKafkaAdminClient

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "gold_silver_2026-01-26.csv"
SEEDS = ROOT / "examples" / "record-seeds.json"
TABLES = {
    "ticks": "symbol, ts, price",
    "bars_1m": "symbol, ts, open, high, low, close, ticks",
    "rolling_highs": "symbol, window, ts, high, high_ts, low, low_ts",
    "record_breaks": "symbol, kind, ts, price, level, step, prev_ts, first_time",
    "divergence_windows": "pair, metric, direction, opened_at, closed_at, peak_value",
    "rolling_breaks": "symbol, window, record, ts, price, prev, prev_ts",
}


def tickstream(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=600, cwd=cwd
    )


def tables(chdb: Path, db: str) -> dict[str, list[tuple[Any, ...]]]:
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb}")
    try:
        return {
            t: sorted(map(tuple, client.query(f"SELECT {c} FROM {db}.{t} FINAL").result_rows))
            for t, c in TABLES.items()
        } | {"late_ticks": client.query(f"SELECT count() FROM {db}.late_ticks").result_rows}
    finally:
        client.close()


async def topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


def test_a_replay_behind_the_clock_is_refused_then_backfilled(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    namespace = "ex" + uuid.uuid4().hex[:8]
    db = f"tickstream_{namespace}"
    chdb = tmp_path / "chdb"
    run = [
        "run", "--kafka-bootstrap", kafka_bootstrap, "--namespace", namespace,
        "--clickhouse-url", f"chdb://{chdb}", "--metrics-port", "0",
        "--replay", str(EXAMPLE), "--record-seeds", str(SEEDS), "--until-drained",
    ]  # fmt: skip

    first = tickstream(run, tmp_path)
    assert first.returncode == 0, first.stderr[-4000:]
    last = first.stderr.splitlines()[-1]
    assert last.startswith(f"drained: everything derived from {EXAMPLE} is in ClickHouse; ")
    assert last.endswith(f"late ticks: 0 (rows of {db}.late_ticks received during this run)")
    once = tables(chdb, db)
    assert all(once[t] for t in TABLES), {t: len(rows) for t, rows in once.items()}
    assert len(once["ticks"]) == 10_000 and once["late_ticks"] == [(0,)]

    again = tickstream(run, tmp_path)
    assert again.returncode == 1
    message = again.stderr
    assert (
        f"{EXAMPLE} is behind namespace {namespace!r}'s clock: all 10,000 of its ticks" in message
    )
    assert "XAG from 2026-01-26 00:00:01.094 UTC, XAU from 2026-01-26 00:00:05.772 UTC" in message
    assert "XAG up to 2026-01-26 07:57:08.205 UTC, XAU up to 2026-01-26 07:57:08.670 UTC" in message
    commands = [line.strip() for line in message.splitlines() if line.startswith("  tickstream")]
    assert len(commands) == 2 and commands[0].endswith(" --backfill")
    assert f"--namespace {namespace}-20260126 " in commands[1]
    assert tables(chdb, db) == once  # refused before anything was published

    backfill = shlex.split(commands[0])[1:]  # the command the refusal printed, as given
    assert backfill == [*run, "--backfill"]
    filled = tickstream(backfill, tmp_path)
    assert filled.returncode == 0, filled.stderr[-4000:]
    last = filled.stderr.splitlines()[-1]
    assert f"(backfilled into database {db} with a clock of its own); late ticks: 0 " in last
    assert tables(chdb, db) == once  # recomputed with the same seeds: the same rows
    left = [t for t in asyncio.run(topics(kafka_bootstrap)) if t.startswith(namespace)]
    assert left and all(t.startswith(f"{namespace}.") for t in left), left  # no backfill's
    assert not [p for p in (tmp_path / ".tickstream" / "faust").iterdir() if "-backfill-" in p.name]

    produce = tickstream(
        ["produce", "replay", str(EXAMPLE), "--kafka-bootstrap", kafka_bootstrap,
         "--namespace", namespace, "--metrics-port", "0"],
        tmp_path,
    )  # fmt: skip
    assert produce.returncode == 1
    assert "behind namespace" in produce.stderr and "--backfill" in produce.stderr
    assert "--allow-late" in produce.stderr
