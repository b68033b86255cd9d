"""Known record history, so a fresh processor does not call its first tick a record.

From a JSON file (hand-written for a new deployment) or from what ClickHouse
already holds (the same SQL on chDB and on a server). File format::

    {"XAU": {"ath": 5051.9, "ath_ts": "2026-01-26T07:41:00Z", "atl": 1045.0,
             "atl_ts": "2015-12-17T00:00:00Z",
             "first_up": [[1000, 4000, "2025-10-08T00:00:00Z"]],
             "first_down": []}}

Timestamps are ISO-8601 or epoch milliseconds; ``first_up``/``first_down`` list
``[step, level, ts]`` of the first crossing of a level in that direction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from processors.kernels.records import RecordSeed
from tickstream.timestamps import parse_ts_ms


class SeedError(ValueError):
    pass


def seeds_from_file(path: Path) -> dict[str, RecordSeed]:
    try:
        doc = orjson.loads(path.read_bytes())
        return {symbol: _seed(entry) for symbol, entry in doc.items()}
    except Exception as exc:  # any shape or value problem: name the file
        raise SeedError(f"{path}: not a record seed file ({exc})") from exc


def _seed(entry: dict[str, Any]) -> RecordSeed:
    def crossings(key: str) -> dict[tuple[float, float], int]:
        return {(float(s), float(lv)): parse_ts_ms(ts) for s, lv, ts in entry.get(key, [])}

    return RecordSeed(
        ath=float(entry["ath"]),
        ath_ts_ms=parse_ts_ms(entry["ath_ts"]),
        atl=float(entry["atl"]),
        atl_ts_ms=parse_ts_ms(entry["atl_ts"]),
        first_crossings=crossings("first_up"),
        first_crossings_down=crossings("first_down"),
    )


def seeds_to_json(seeds: dict[str, RecordSeed]) -> bytes:
    return orjson.dumps(
        {
            symbol: {
                "ath": s.ath,
                "ath_ts": s.ath_ts_ms,
                "atl": s.atl,
                "atl_ts": s.atl_ts_ms,
                "first_up": [[st, lv, ts] for (st, lv), ts in sorted(s.first_crossings.items())],
                "first_down": [
                    [st, lv, ts] for (st, lv), ts in sorted(s.first_crossings_down.items())
                ],
            }
            for symbol, s in seeds.items()
        },
        option=orjson.OPT_INDENT_2,
    )


def seeds_from_clickhouse(
    client: Client, db: str, before_ts_ms: int | None = None
) -> dict[str, RecordSeed]:
    """Records and first crossings from what ClickHouse holds, as of ``before_ts_ms``.

    A replay is seeded with the history *before* its first tick: replaying the
    same file again then reproduces exactly the rows of the first replay instead
    of judging old ticks against records they set themselves. Extremes come from the
    daily record states (schema migration 5), which outlive raw ticks, so an expired
    all-time high is never called a new one.
    """
    before = (
        "" if before_ts_ms is None else f"AND ts < fromUnixTimestamp64Milli({int(before_ts_ms)})"
    )
    # whole days before the "as of" day from the daily record states (never expired),
    # that day's ticks up to "as of" from ticks (a replay's own day: not expired yet)
    if before_ts_ms is None:
        days, today = "", "AND 0"
    else:
        start = f"toDate(fromUnixTimestamp64Milli({int(before_ts_ms)}))"
        days, today = f"AND day < {start}", f"AND ts >= {start} {before}"
    extremes = client.query(
        f"""SELECT symbol, max(hi), toUnixTimestamp64Milli(argMin(hi_ts, (-hi, hi_ts))),
                   min(lo), toUnixTimestamp64Milli(argMin(lo_ts, (lo, lo_ts)))
            FROM (
                SELECT symbol, max(high) AS hi, argMinMerge(high_ts) AS hi_ts,
                       min(low) AS lo, argMinMerge(low_ts) AS lo_ts
                FROM {db}.records_1d_state WHERE 1 {days} GROUP BY symbol, day
                UNION ALL
                SELECT symbol, max(price), argMin(ts, (-price, ts)),
                       min(price), argMin(ts, (price, ts))
                FROM {db}.ticks FINAL WHERE 1 {today} GROUP BY symbol
            )
            GROUP BY symbol""",
    ).result_rows
    crossings = client.query(
        f"""SELECT symbol, kind, step, level, toUnixTimestamp64Milli(min(ts))
            FROM {db}.record_breaks FINAL
            WHERE kind IN ('level_up', 'level_down') {before}
            GROUP BY symbol, kind, step, level""",
    ).result_rows
    up: dict[str, dict[tuple[float, float], int]] = {}
    down: dict[str, dict[tuple[float, float], int]] = {}
    for symbol, kind, step, level, ts in crossings:
        (up if kind == "level_up" else down).setdefault(symbol, {})[(step, level)] = int(ts)
    return {
        symbol: RecordSeed(hi, int(hi_ts), lo, int(lo_ts), up.get(symbol, {}), down.get(symbol, {}))
        for symbol, hi, hi_ts, lo, lo_ts in extremes
    }
