"""The record seeds `tickstream run` gives its processors.

The sink holds the chDB directory, so the processors cannot read the known records from
it themselves: the run reads them and hands them over as a --record-seeds file. A replay
is seeded with the history before its first tick; the simulated market with the history
its instruments come with, and what this database knows on top, so that its first
minutes are not all records.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from producers.records import wall_ms
from producers.simulator import SimulatorConfig
from sinks.clickhouse_sink import ClickHouseSink
from tickstream.settings import Settings
from tickstream.timestamps import parse_ts_ms


async def write_seeds(
    settings: Settings,
    sink: ClickHouseSink,
    as_of_ms: int | None,
    simulated: SimulatorConfig | None,
) -> Settings:
    """``settings`` with --record-seeds naming the file written (as they are when it is
    given already). ``as_of_ms``: the replay's first tick (history before the file, not
    what it set itself); ``simulated``: the simulated market whose history joins in."""
    if settings.record_seeds:
        return settings
    from processors.seeds import seeds_from_clickhouse, seeds_to_json

    ch = sink.ch
    seeds = await ch.run(seeds_from_clickhouse, ch.client, settings.clickhouse_database, as_of_ms)
    doc = orjson.loads(seeds_to_json(seeds))
    if simulated is not None:
        from producers.simulator import record_seeds

        doc = merge_seed_docs(record_seeds(simulated, wall_ms()), doc)
    path = Path(".tickstream") / f"record-seeds-{settings.namespace}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return settings.replace(record_seeds=str(path))


def merge_seed_docs(*docs: Mapping[str, Any]) -> dict[str, Any]:
    """Record seed documents (the --record-seeds format) merged: per symbol the highest
    high, the lowest low and each level's earliest first crossing, whichever knew it.

    The simulated market's instruments come with a history, and the database may know
    more (earlier runs): neither alone is everything that is known.
    """
    merged: dict[str, dict[str, Any]] = {}
    for doc in docs:
        for symbol, entry in doc.items():
            have = merged.get(symbol)
            if have is None:
                merged[symbol] = _seed_entry(entry)
                continue
            new = _seed_entry(entry)
            if (new["ath"], -new["ath_ts"]) > (have["ath"], -have["ath_ts"]):
                have["ath"], have["ath_ts"] = new["ath"], new["ath_ts"]
            if (new["atl"], new["atl_ts"]) < (have["atl"], have["atl_ts"]):
                have["atl"], have["atl_ts"] = new["atl"], new["atl_ts"]
            for key in ("first_up", "first_down"):
                firsts = {(st, lv): ts for st, lv, ts in have[key]}
                for st, lv, ts in new[key]:
                    firsts[(st, lv)] = min(ts, firsts.get((st, lv), ts))
                have[key] = [[st, lv, ts] for (st, lv), ts in sorted(firsts.items())]
            for key in ("first_up_runs", "first_down_runs"):  # spans: the kernel keeps the earliest
                have[key] = sorted(have[key] + new[key])
    return merged


def _seed_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One symbol's seed with every time as epoch ms and every level as floats."""

    def crossings(key: str) -> list[list[Any]]:
        return [[float(st), float(lv), parse_ts_ms(ts)] for st, lv, ts in entry.get(key, [])]

    def spans(key: str) -> list[list[Any]]:
        """(step, from_level, level, ts): one multi-level jump's crossings, not expanded."""
        return [
            [float(st), float(a), float(b), parse_ts_ms(ts)] for st, a, b, ts in entry.get(key, [])
        ]

    return {
        "ath": float(entry["ath"]),
        "ath_ts": parse_ts_ms(entry["ath_ts"]),
        "atl": float(entry["atl"]),
        "atl_ts": parse_ts_ms(entry["atl_ts"]),
        "first_up": crossings("first_up"),
        "first_down": crossings("first_down"),
        "first_up_runs": spans("first_up_runs"),
        "first_down_runs": spans("first_down_runs"),
    }
