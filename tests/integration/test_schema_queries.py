"""Schema migrations, the analyst views, the raw-tick TTL, every SQL block of
docs/queries.md and the Markets dashboard's desk signal panels, on chDB with known rows
(duplicates included).

Expected values are computed here in Python from the rows inserted, not by ClickHouse.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import orjson
import pytest

from sinks.clickhouse_sink import INGEST_TABLE, TICK_COLUMNS
from sinks.rows import TABLES
from sinks.schema import SchemaTooNew, apply_ticks_ttl, migrate, migrations, ticks_ttl_days
from tests.integration.test_deploy_files import (
    dashboard_sql,
    expand_clickhouse_macros,
    load_dashboard,
)
from tickstream.settings import ConfigError, Settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "queries.md"
DB = "tickstream"
HOUR = 3_600_000


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Any]:
    c = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'chdb'}")
    try:
        yield c
    finally:
        c.close()


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def dt(ts_ms: int) -> datetime:
    """As chDB returns DateTime64(3, 'UTC'): a naive UTC datetime."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).replace(tzinfo=None)


def insert(client: Any, table: str, rows: list[list[Any]]) -> None:
    client.insert(f"{DB}.{table}", rows, column_names=list(TABLES[table].columns))


# ------------------------------------------------------------------ known rows


def tick_rows() -> list[list[Any]]:
    """Two days of XAU and XAG ticks; two XAU ticks share a millisecond (ties)."""
    rows: list[list[Any]] = []
    start = ms("2026-01-26T00:00:00")
    for i in range(2 * 24 * 6):  # every 10 minutes for two days
        ts = start + i * 600_000 + (i * 7919) % 60_000
        xau = round(4_980 + 40 * ((i * 37) % 17) / 17 + i * 0.1, 2)
        xag = round(105 + 3 * ((i * 13) % 11) / 11, 3)
        seq = i if i % 2 else None
        rows.append(["XAU", ts, xau, xau - 0.2, xau + 0.2, 1.0, "v1", seq, ts + 5])
        rows.append(["XAG", ts + 1, xag, None, None, None, None, None, None])
    for tie in (start + 4 * HOUR - 1, start + 5 * HOUR):  # last tick of 03h, first of 05h
        rows.append(["XAU", tie, 4_990.5, None, None, None, None, None, None])
        rows.append(["XAU", tie, 4_989.5, None, None, None, None, None, None])
    return rows


def identity(row: list[Any]) -> tuple[Any, ...]:
    symbol, ts, price, _bid, _ask, size, _venue, seq, _recv = row
    return (symbol, ts, price, -1 if size is None else size, -1 if seq is None else seq)


def load_ticks(client: Any) -> list[list[Any]]:
    """Insert the ticks with duplicates: two overlapping blocks, plus the sink's JSON path."""
    rows = tick_rows()
    half = len(rows) // 2
    insert(client, "ticks", rows[: half + 40])
    insert(client, "ticks", rows[half - 40 :])  # 80 ticks written twice
    client.raw_insert(  # and 30 of them a third time, as the sink sends them
        f"{DB}.{INGEST_TABLE}",
        list(TICK_COLUMNS),
        insert_block=orjson.dumps(rows[:30])[1:-1],
        fmt="JSONCompactEachRow",
    )
    return rows


def expected_ohlc(rows: list[list[Any]], bucket_ms: int) -> list[tuple[Any, ...]]:
    groups: dict[tuple[str, int], dict[tuple[Any, ...], list[Any]]] = defaultdict(dict)
    for row in rows:
        groups[(row[0], row[1] - row[1] % bucket_ms)][identity(row)] = row
    out = []
    for (symbol, start), ticks in sorted(groups.items()):
        by_time = sorted(ticks.values(), key=lambda r: (r[1], r[2]))
        prices = [r[2] for r in by_time]
        out.append(
            (symbol, start, by_time[0][2], max(prices), min(prices), by_time[-1][2], len(ticks))
        )
    return out


GOLD_MILESTONES = [  # (level, first crossing): illustrative test rows
    (1000.0, "2008-03-13T14:00:00"),
    (2000.0, "2020-08-04T09:30:00"),
    (3000.0, "2025-03-14T08:15:00"),
    (4000.0, "2025-10-08T06:45:00"),
    (5000.0, "2026-01-26T02:10:00"),
]


def record_rows() -> list[list[Any]]:
    rows: list[list[Any]] = []
    prev: int | None = None
    for level, when in GOLD_MILESTONES:
        ts = ms(when)
        since = None if prev is None else (ts - prev) / 1000
        rows.append(["XAU", "level_up", ts, level + 1.5, level, 1000.0, prev, since, 1])
        prev = ts
    # a re-crossing of $5,000 the next day (not a first), $100 steps, highs, silver
    rows.append(
        ["XAU", "level_up", ms("2026-01-27T03:00:00"), 5000.2, 5000.0, 1000.0, None, None, 0]
    )
    rows.append(
        ["XAU", "level_up", ms("2026-01-26T01:00:00"), 4900.1, 4900.0, 100.0, None, None, 1]
    )
    rows.append(["XAU", "ath", ms("2026-01-26T02:10:00"), 5001.5, 4999.0, 0.0, None, None, 1])
    rows.append(["XAU", "ath", ms("2026-01-26T07:41:00"), 5051.9, 5050.0, 0.0, None, None, 1])
    rows.append(["XAG", "level_up", ms("2026-01-26T05:00:00"), 107.1, 107.0, 1.0, None, None, 1])
    rows.append(["XAG", "level_down", ms("2025-12-30T11:00:00"), 69.9, 70.0, 10.0, None, None, 1])
    # from_level: single crossings here (the level itself); none on all-time highs
    return [[*r, r[4] if r[1].startswith("level") else None] for r in rows]


def divergence_rows() -> list[list[Any]]:
    """(open version, closed version) pairs; the last window is still open."""
    windows = [  # opened, minutes open (None: still open), direction, peak
        ("2026-01-26T01:00:00", 95, 1, 2.9),
        ("2026-01-26T04:00:00", 10, -1, -2.3),
        ("2026-01-26T06:00:00", 30, 1, 2.5),
        ("2026-01-27T01:00:00", 10, 1, 2.2),
        ("2026-01-27T09:00:00", None, -1, -2.7),
    ]
    rows = []
    for opened, minutes, direction, peak in windows:
        o = ms(opened)
        peak_at = o + 5 * 60_000
        rows.append(
            [
                "XAU/XAG",
                "ratio_z",
                direction,
                o,
                None,
                2.0 * direction,
                peak,
                peak_at,
                None,
                2.0 * direction,
                None,
                peak_at,
            ]
        )
        if minutes is not None:
            c = o + minutes * 60_000
            rows.append(
                [
                    "XAU/XAG",
                    "ratio_z",
                    direction,
                    o,
                    c,
                    2.0 * direction,
                    peak,
                    peak_at,
                    0.8,
                    2.0 * direction,
                    None,
                    c,
                ]
            )
    return rows


def rejected_rows() -> list[list[Any]]:
    rows = []
    reasons = ["malformed"] * 5 + ["invalid_price"] * 3 + ["spike"] * 2 + ["duplicate"] * 3
    for n, reason in enumerate(reasons):
        rows.append(
            [
                ms("2026-01-26T00:00:00") + n,
                "replay:day.csv",
                f"line {n + 2}",
                f"raw {n}",
                reason,
                "",
                None,
            ]
        )
    return rows


SIGNAL_KINDS = ("record_break", "rolling_break")
STATUS_ORDER = ("provisional", "confirmed", "retracted")
_LEDGER = {c: i for i, c in enumerate(TABLES["signal_ledger"].columns)}


def ledger_rows() -> list[list[Any]]:
    """Desk signal events over two days, in the sink's column order (times as epoch ms).

    Each signal, by ``n % 5``: 0 confirmed without a provisional event (announced 0),
    1 provisional then retracted, otherwise provisional then confirmed (announced 1).
    Every 7th tick has no receipt time; one signal is a sync group's (``XAG+XAU``); one
    confirmation says announced but its provisional event is missing from the ledger.
    """
    rows: list[list[Any]] = []
    start = ms("2026-01-26T00:00:00")
    for n in range(60):
        symbol = "XAG+XAU" if n == 15 else ("XAU", "XAG")[n % 2]
        signal = SIGNAL_KINDS[(n // 2) % 2]
        ts = start + n * 45 * 60_000 + (n * 7919) % 60_000  # 45 h: two days
        price = round((5_000.0 if symbol == "XAU" else 105.0) + n * 0.25, 2)
        recv = None if n % 7 == 3 else ts + 2 + (n * 3) % 11
        signal_row = orjson.dumps(
            {"kind": signal, "symbol": symbol, "ts_ms": ts, "price": price}
        ).decode()
        provisional_at = (recv if recv is not None else ts + 6) + 1 + (n * 13) % 40
        final_at = ts + 2_000 + (n * 37) % 900  # after the allowed lateness
        signal_fields = {
            "id": f"{n * 2654435761 % 2**64:016x}", "signal": signal, "symbol": symbol,
            "ts": ts, "price": price, "recv_ts": recv, "row": signal_row,
        }  # fmt: skip
        events: list[tuple[str, int, int, str]] = []
        outcome = n % 5
        if outcome != 0 and n != 42:  # 42: announced, its provisional event lost
            events.append(("provisional", provisional_at, 0, ""))
        if outcome == 1:
            events.append(("retracted", final_at, 0, "late_tick"))
        else:
            events.append(("confirmed", final_at, int(outcome != 0), ""))
        for status, emitted, announced, reason in events:
            values = {
                **signal_fields,
                "status": status,
                "emitted_at": emitted,
                "announced": announced,
                "reason": reason,
            }
            rows.append([values[c] for c in TABLES["signal_ledger"].columns])
    return rows


def quantile_exact(level: float, values: list[int]) -> int | None:
    """ClickHouse's quantileExact: the element at floor(level * n) of the sorted values."""
    if not values:
        return None
    return sorted(values)[int(level * len(values))]


def late_rows() -> list[list[Any]]:
    return [
        ["XAU", ms("2026-01-26T01:00:00"), 4985.0, None, None, None, None, None, None],
        ["XAU", ms("2026-01-26T02:00:00"), 4986.0, None, None, None, None, None, None],
        ["XAG", ms("2026-01-26T03:00:00"), 105.5, None, None, None, None, None, None],
    ]


@pytest.fixture
def loaded(client: Any) -> dict[str, Any]:
    migrate(client, DB)
    client.command(f"SYSTEM STOP MERGES {DB}.ticks")  # plain counts then show every copy
    ticks = load_ticks(client)
    records, windows, rejected, late, ledger = (
        record_rows(),
        divergence_rows(),
        rejected_rows(),
        late_rows(),
        ledger_rows(),
    )
    for table, rows in (
        ("record_breaks", records),
        ("divergence_windows", windows),
        ("rejected_ticks", rejected),
        ("late_ticks", late),
        ("signal_ledger", ledger),
    ):
        insert(client, table, rows)
        insert(client, table, rows[1:] + rows[:1])  # every row twice (another block)
    return {
        "ticks": ticks,
        "records": records,
        "windows": windows,
        "rejected": rejected,
        "late": late,
        "ledger": ledger,
    }


# ------------------------------------------------------------------ schema


def test_migrations_idempotent_and_schema_newer_than_code_refused(client: Any) -> None:
    latest = migrations(DB)[-1].version
    assert migrate(client, DB) == latest
    objects = client.query(
        f"SELECT name, engine FROM system.tables WHERE database = '{DB}' ORDER BY name"
    ).result_rows
    assert migrate(client, DB) == latest  # a second start-up changes nothing
    assert (
        client.query(
            f"SELECT name, engine FROM system.tables WHERE database = '{DB}' ORDER BY name"
        ).result_rows
        == objects
    )
    assert client.query(
        f"SELECT version FROM {DB}.schema_migrations ORDER BY version"
    ).result_rows == [(m.version,) for m in migrations(DB)]
    names = {n for n, _e in objects}
    assert {
        "ohlc_1m",
        "ohlc_1h",
        "ohlc_1d",
        "daily_high_low",
        "latest_price",
        "rolling_breaks",
        "signal_ledger",
        INGEST_TABLE,
    } <= names

    client.insert(
        f"{DB}.schema_migrations",
        [[latest + 1, "from a newer tickstream"]],
        column_names=["version", "description"],
    )
    with pytest.raises(SchemaTooNew, match=f"version {latest + 1}, newer than this tickstream"):
        migrate(client, DB)


def test_migration_2_backfills_ticks_written_under_version_1(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sinks.schema as schema

    monkeypatch.setattr(schema, "migrations", lambda db: migrations(db)[:1])
    assert migrate(client, DB) == 1
    rows = tick_rows()
    insert(client, "ticks", rows)
    monkeypatch.undo()
    assert migrate(client, DB) == migrations(DB)[-1].version
    got = [
        (s, round(t.replace(tzinfo=UTC).timestamp() * 1000), o, h, lo, c, n)
        for s, t, o, h, lo, c, n in client.query(
            f"SELECT * FROM {DB}.ohlc_1h ORDER BY symbol, ts"
        ).result_rows
    ]
    assert got == expected_ohlc(rows, HOUR)


def test_views_match_ticks_whatever_the_duplicates(loaded: dict[str, Any], client: Any) -> None:
    ticks = loaded["ticks"]
    for view, bucket in (("ohlc_1m", 60_000), ("ohlc_1h", HOUR), ("ohlc_1d", 24 * HOUR)):
        got = [
            (s, round(t.replace(tzinfo=UTC).timestamp() * 1000), o, h, lo, c, n)
            for s, t, o, h, lo, c, n in client.query(
                f"SELECT symbol, ts, open, high, low, close, ticks FROM {DB}.{view} "
                "ORDER BY symbol, ts"
            ).result_rows
        ]
        assert got == expected_ohlc(ticks, bucket), view
    # the JSON path converted epoch milliseconds exactly
    first = ticks[0]
    assert client.query(
        f"SELECT symbol, ts, price, recv_ts FROM {DB}.ticks FINAL WHERE symbol = 'XAU' "
        "ORDER BY ts LIMIT 1"
    ).result_rows == [(first[0], dt(first[1]), first[2], dt(first[8]))]


def test_ticks_ttl_expires_raw_ticks_but_not_aggregates(client: Any) -> None:
    migrate(client, DB)
    now = datetime.now(UTC).replace(microsecond=0)
    old = int((now - timedelta(days=40)).timestamp() * 1000)
    recent = int((now - timedelta(days=1)).timestamp() * 1000)
    insert(
        client,
        "ticks",
        [
            ["XAU", old, 4000.0, None, None, None, None, None, None],
            ["XAU", recent, 5000.0, None, None, None, None, None, None],
        ],
    )
    assert ticks_ttl_days(client, DB) == 0
    apply_ticks_ttl(client, DB, 30)
    assert ticks_ttl_days(client, DB) == 30 and ticks_ttl_days(client, DB, "late_ticks") == 30
    apply_ticks_ttl(client, DB, 30)  # unchanged: nothing to do
    client.command(f"OPTIMIZE TABLE {DB}.ticks FINAL")
    assert client.query(f"SELECT price FROM {DB}.ticks").result_rows == [(5000.0,)]
    assert client.command(f"SELECT count() FROM {DB}.ohlc_1d") == 2  # bars outlive their ticks
    apply_ticks_ttl(client, DB, 0)
    assert ticks_ttl_days(client, DB) == 0 and ticks_ttl_days(client, DB, "late_ticks") == 0
    with pytest.raises(ConfigError, match="--ticks-ttl-days"):
        Settings(ticks_ttl_days=-1)


# ------------------------------------------------------------------ docs/queries.md


def doc_queries() -> dict[str, str]:
    blocks = re.findall(r"```sql\n(.*?)```", DOCS.read_text(), flags=re.S)
    named = {}
    for block in blocks:
        match = re.match(r"-- name: (\w+)\n", block)
        assert match, f"every SQL block in docs/queries.md starts with '-- name: ...':\n{block}"
        named[match[1]] = block
    assert len(named) == len(blocks), "duplicate block names"
    return named


def test_every_docs_query_runs_and_key_ones_are_exact(loaded: dict[str, Any], client: Any) -> None:
    queries = doc_queries()
    results = {name: client.query(sql).result_rows for name, sql in queries.items()}
    for name, rows in results.items():
        assert rows, f"{name} returned no rows"

    ticks = loaded["ticks"]
    distinct = {identity(r) for r in ticks}
    assert results["final_vs_plain"] == [(len(ticks) + 80 + 30, len(distinct), len(distinct))]

    milestones = [(lv, ms(w)) for lv, w in GOLD_MILESTONES]
    want = []
    for i, (level, ts) in enumerate(milestones):
        prev = milestones[i - 1][1] if i else None
        days = None if prev is None else round((ts - prev) / 1000 / 86400, 1)
        want.append((level, dt(ts), level + 1.5, None if prev is None else dt(prev), days))
    assert results["gold_milestones"] == want
    assert results["gold_milestone_gaps"] == [
        (
            lv,
            dt(ts).date(),
            None if i == 0 else (dt(ts).date() - dt(milestones[i - 1][1]).date()).days,
        )
        for i, (lv, ts) in enumerate(milestones)
    ]
    assert dict(((lv, d) for lv, _day, d in results["gold_milestone_gaps"]))[5000.0] == 110

    per_month = Counter(
        (date(dt(ts).year, dt(ts).month, 1), sym, kind) for sym, kind, ts, *_ in loaded["records"]
    )
    assert results["record_breaks_per_month"] == [(*k, n) for k, n in sorted(per_month.items())]

    closed = [r for r in loaded["windows"] if r[4] is not None]
    want_div = sorted(
        (
            (p, m, d, dt(o), dt(c), (c - o) / 60_000, peak)
            for p, m, d, o, c, _ov, peak, *_ in closed
        ),
        key=lambda r: (-r[5], r[3]),
    )
    assert results["divergence_by_duration"] == want_div
    assert dict(results["divergence_duration_buckets"]) == {
        "still open": 1,
        "under 15 min": 2,
        "15-60 min": 1,
        "an hour or more": 1,
    }

    latest: dict[str, list[Any]] = {}
    for row in ticks:
        if row[0] not in latest or (row[1], row[2]) > (latest[row[0]][1], latest[row[0]][2]):
            latest[row[0]] = row
    assert results["latest_price"] == [(s, dt(r[1]), r[2]) for s, r in sorted(latest.items())]

    hourly = [
        r for r in expected_ohlc(ticks, HOUR) if r[0] == "XAU" and r[1] < ms("2026-01-27T00:00:00")
    ]
    assert results["ohlc_1h"] == [(dt(t), o, h, lo, c, n) for _s, t, o, h, lo, c, n in hourly]
    assert len(hourly) == 24
    # ticks sharing a millisecond: open takes the lower price, close the higher
    by_hour = {row[0]: row for row in results["ohlc_1h"]}
    assert by_hour[dt(ms("2026-01-26T03:00:00"))][4] == 4_990.5  # close of 03h
    assert by_hour[dt(ms("2026-01-26T05:00:00"))][1] == 4_989.5  # open of 05h

    daily = expected_ohlc(ticks, 24 * HOUR)
    assert results["daily_high_low"] == [
        (s, dt(t).date(), h, lo, round(h - lo, 4)) for s, t, _o, h, lo, _c, _n in daily
    ]
    weekly: dict[tuple[str, date], list[tuple[Any, ...]]] = defaultdict(list)
    for s, t, o, h, lo, c, n in daily:
        day = dt(t).date()
        weekly[(s, day - timedelta(days=day.weekday()))].append((t, o, h, lo, c, n))
    assert results["ohlc_weekly"] == [
        (
            s,
            w,
            days[0][1],
            max(d[2] for d in days),
            min(d[3] for d in days),
            days[-1][4],
            sum(d[5] for d in days),
        )
        for (s, w), days in sorted(weekly.items())
    ]

    reasons = Counter(r[4] for r in loaded["rejected"])
    got = [(reason, n) for reason, n, _first, _example in results["rejected_by_reason"]]
    assert got == sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))

    late = defaultdict(list)
    for sym, ts, *_ in loaded["late"]:
        late[sym].append(ts)
    assert results["late_ticks_per_symbol"] == [
        (s, len(v), dt(min(v)), dt(max(v))) for s, v in sorted(late.items())
    ]

    check_desk_signal_queries(loaded["ledger"], results)


def _events(ledger: list[list[Any]]) -> dict[tuple[str, str], dict[str, list[Any]]]:
    """(symbol, id) -> status -> row: the ledger as FINAL reads it."""
    out: dict[tuple[str, str], dict[str, list[Any]]] = defaultdict(dict)
    for row in ledger:
        out[(row[_LEDGER["symbol"]], row[_LEDGER["id"]])][row[_LEDGER["status"]]] = row
    return out


def check_desk_signal_queries(
    ledger: list[list[Any]], results: dict[str, list[tuple[Any, ...]]]
) -> None:
    """The signal_ledger blocks of docs/queries.md, against the same figures in Python."""
    c = _LEDGER
    by_kind_status: dict[tuple[str, str], list[list[Any]]] = defaultdict(list)
    for row in ledger:
        by_kind_status[(row[c["signal"]], row[c["status"]])].append(row)
    want_latency = []
    for (signal, status), rows in sorted(
        by_kind_status.items(), key=lambda kv: (kv[0][0], STATUS_ORDER.index(kv[0][1]))
    ):
        receipt = [r[c["emitted_at"]] - r[c["recv_ts"]] for r in rows if r[c["recv_ts"]]]
        event = [r[c["emitted_at"]] - r[c["ts"]] for r in rows]
        want_latency.append(
            (
                signal,
                status,
                len(rows),
                quantile_exact(0.5, receipt),
                quantile_exact(0.99, receipt),
                quantile_exact(0.5, event),
                quantile_exact(0.99, event),
            )
        )
    assert results["desk_signal_latency"] == want_latency
    assert len(want_latency) == 6  # both kinds, all three statuses

    per_day: dict[tuple[str, date], Counter[str]] = defaultdict(Counter)
    for row in ledger:
        per_day[(row[c["symbol"]], dt(row[c["ts"]]).date())][row[c["status"]]] += 1
    assert results["signal_retractions_per_day"] == [
        (
            symbol,
            day,
            n["provisional"],
            n["retracted"],
            round(n["retracted"] / n["provisional"], 4) if n["provisional"] else None,
        )
        for (symbol, day), n in sorted(per_day.items())
    ]
    assert any(rate is None for *_, rate in results["signal_retractions_per_day"])

    events = _events(ledger)
    confirmed: dict[str, list[tuple[bool, int]]] = defaultdict(list)
    waits: dict[str, list[int]] = defaultdict(list)
    for statuses in events.values():
        if "confirmed" not in statuses:
            continue
        done = statuses["confirmed"]
        first = statuses.get("provisional")
        confirmed[done[c["signal"]]].append((first is not None, done[c["announced"]]))
        if first is not None:
            waits[done[c["signal"]]].append(done[c["emitted_at"]] - first[c["emitted_at"]])
    assert results["confirmed_without_provisional"] == [
        (
            signal,
            len(rows),
            sum(1 for had, _a in rows if not had),
            sum(1 for _h, announced in rows if not announced),
        )
        for signal, rows in sorted(confirmed.items())
    ]
    assert [r[2] - r[3] for r in results["confirmed_without_provisional"]] == [0, 1]
    assert results["provisional_to_confirmation"] == [
        (signal, len(w), quantile_exact(0.5, w), quantile_exact(0.99, w), max(w))
        for signal, w in sorted(waits.items())
    ]


# ------------------------------------------------------------------ Grafana: desk signals


def test_desk_signal_panels_are_exact_on_known_rows(loaded: dict[str, Any], client: Any) -> None:
    """The Markets dashboard's signal_ledger panels, as Grafana expands them, read with final=1
    as the analyst profile does. (A replay of the example does not write signal_ledger yet,
    so test_observability_live cannot check them for rows; their figures are checked here.)"""
    panels = {
        where: sql
        for where, sql in dashboard_sql(load_dashboard("markets"))
        if "tickstream.signal_ledger" in sql
    }
    assert sorted(panels) == [
        "Desk signal latency by status (tick receipt to emission)/A",
        "Retraction rate (retracted / provisional)/A",
    ]
    (latency_sql,) = (sql for w, sql in panels.items() if w.startswith("Desk signal latency"))
    (retraction_sql,) = (sql for w, sql in panels.items() if w.startswith("Retraction rate"))
    start_s, end_s, day_s = (
        ms("2026-01-26T00:00:00") // 1000,
        ms("2026-01-28T00:00:00") // 1000,
        86_400,
    )
    c = _LEDGER
    ledger = loaded["ledger"]

    def run(sql: str, symbols: list[str]) -> list[tuple[Any, ...]]:
        expanded = expand_clickhouse_macros(sql, start_s, end_s, symbols, interval_s=day_s)
        rows: list[tuple[Any, ...]] = client.query(expanded, settings={"final": 1}).result_rows
        return rows

    def selected(row: list[Any], symbols: list[str]) -> bool:
        return bool(set(row[c["symbol"]].split("+")) & set(symbols))

    # latency: per day of event time and status, receipt to emission (no receipt time: out)
    latencies: dict[tuple[int, str], list[int]] = defaultdict(list)
    for row in ledger:
        if row[c["recv_ts"]] is not None and selected(row, ["XAG", "XAU"]):
            bucket = row[c["ts"]] - row[c["ts"]] % (day_s * 1000)
            latencies[(bucket, row[c["status"]])].append(row[c["emitted_at"]] - row[c["recv_ts"]])
    assert run(latency_sql, ["XAG", "XAU"]) == [
        (dt(bucket), status, quantile_exact(0.5, v), quantile_exact(0.99, v))
        for (bucket, status), v in sorted(latencies.items())
    ]
    assert len(latencies) == 6  # two days, three statuses

    # retraction rate per symbol and kind of signal; XAU selected keeps the XAG+XAU group
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for row in ledger:
        if selected(row, ["XAU"]):
            counts[(row[c["symbol"]], row[c["signal"]])][row[c["status"]]] += 1
    got = run(retraction_sql, ["XAU"])
    assert got == [
        (
            symbol,
            signal,
            n["provisional"],
            n["confirmed"],
            n["retracted"],
            n["retracted"] / n["provisional"] if n["provisional"] else None,
        )
        for (symbol, signal), n in sorted(counts.items())
    ]
    assert {symbol for symbol, *_ in got} == {"XAU", "XAG+XAU"}


def test_record_seeds_outlive_expired_ticks(client: Any) -> None:
    """Seeds come from daily record states: expiring raw ticks (TTL) changes no record."""
    from processors.seeds import seeds_from_clickhouse

    migrate(client, DB)
    rows = tick_rows()
    insert(client, "ticks", rows)

    def expected(before: int | None) -> dict[str, tuple[float, int, float, int]]:
        out: dict[str, tuple[float, int, float, int]] = {}
        for symbol in {r[0] for r in rows}:
            mine = [r for r in rows if r[0] == symbol and (before is None or r[1] < before)]
            hi = min(mine, key=lambda r: (-r[2], r[1]))
            lo = min(mine, key=lambda r: (r[2], r[1]))
            out[symbol] = (hi[2], hi[1], lo[2], lo[1])
        return out

    def got(before: int | None) -> dict[str, tuple[float, int, float, int]]:
        seeds = seeds_from_clickhouse(client, DB, before)
        return {s: (v.ath, v.ath_ts_ms, v.atl, v.atl_ts_ms) for s, v in seeds.items()}

    day2 = ms("2026-01-27T00:00:00")
    mid_day2 = ms("2026-01-27T13:00:00")
    assert got(None) == expected(None)
    assert got(mid_day2) == expected(mid_day2)  # whole day 1 from states, day 2 from ticks
    client.command(f"TRUNCATE TABLE {DB}.ticks")  # what a TTL does to old ticks
    assert got(None) == expected(None)
    assert got(day2) == expected(day2)
