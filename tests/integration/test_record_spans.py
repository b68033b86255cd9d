"""A jump across several levels, written to ClickHouse and read back as record seeds.

One tick that crosses 5,000 .. 5,300 on gold's grid of 100 gives one row (level 5,300,
``from_level`` 5,000). A processor seeded from ClickHouse afterwards (a restart without
its snapshot, a new deployment, `tickstream run`'s seed file) must know 5,100 and 5,200
as crossed by that tick: their next crossing is no first (``first_time`` 0) and the
milestone velocity of the level above counts from that tick. The reference is a kernel
that saw every tick: the seeded one must give the same level rows after the seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from processors.kernels.records import RecordConfig, RecordKernel, RecordSeed
from processors.seeds import seeds_from_clickhouse, seeds_from_file, seeds_to_json
from sinks.rows import TABLES
from sinks.schema import migrate
from tickstream.contracts import RecordBreak
from tickstream.model import Tick

DB = "spans"
T0 = 1_769_385_600_000  # 2026-01-26T00:00:00Z
STEPS = {"XAU": (100.0, 1_000.0)}
BEFORE = [  # what ClickHouse holds: a rise, then one tick jumping four levels of 100
    Tick("XAU", T0, 4_950.0),
    Tick("XAU", T0 + 1_000, 4_990.0),
    Tick("XAU", T0 + 2_000, 5_350.0),  # 5,000 .. 5,300 (and 5,000 of the grid of 1,000)
    Tick("XAU", T0 + 3_000, 5_149.0),  # down through 5,300 and 5,200: one row, a span too
]
AFTER = [  # a processor seeded as of T0 + 10 s sees these
    Tick("XAU", T0 + 10_000, 5_150.0),  # the first tick: sides set silently (no last price)
    Tick("XAU", T0 + 11_000, 5_201.0),  # 5,200 up again: passed over by the jump
    Tick("XAU", T0 + 12_000, 5_099.0),  # 5,100 down: never crossed down before, a first
    Tick("XAU", T0 + 13_000, 5_420.0),  # 5,200 .. 5,400 up: 5,400 is new
]


def kernel(seeds: dict[str, RecordSeed] | None = None) -> RecordKernel:
    return RecordKernel(RecordConfig(level_steps=STEPS, sync_groups=(), seeds=seeds or {}))


def level_rows(rows: list[RecordBreak]) -> list[tuple[Any, ...]]:
    return [
        (r.record, r.ts_ms, r.step, r.level, r.from_level, r.prev_ts_ms, r.first_time)
        for r in rows
        if r.record in ("level_up", "level_down")
    ]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Any]:
    c = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'chdb'}")
    try:
        yield c
    finally:
        c.close()


def store(client: Any, rows: list[RecordBreak], until: int | None = None) -> None:
    """The ticks and rows as the sink writes them (columns from the contract)."""
    migrate(client, DB, until=until)
    client.insert(
        f"{DB}.ticks",
        [[t.symbol, t.ts_ms, t.price, None, None, None, None, None, None] for t in BEFORE],
        column_names=list(TABLES["ticks"].columns),
    )
    columns = list(TABLES["record_breaks"].columns)
    if until is not None and until < 7:
        columns.remove("from_level")  # the table as an older tickstream left it
    values = [RecordBreak.SPEC.values(r.to_doc()) for r in rows]
    client.insert(
        f"{DB}.record_breaks",
        [v[: len(columns)] for v in values],
        column_names=columns,
    )


def test_a_jump_is_one_row_that_shows_its_span() -> None:
    rows = kernel().update(BEFORE, {})
    assert level_rows(rows) == [
        ("level_up", T0 + 2_000, 100.0, 5_300.0, 5_000.0, T0 + 2_000, 1),
        ("level_up", T0 + 2_000, 1_000.0, 5_000.0, 5_000.0, None, 1),
        ("level_down", T0 + 3_000, 100.0, 5_200.0, 5_300.0, T0 + 3_000, 1),
    ]
    assert {r.from_level for r in rows if r.record in ("ath", "atl")} == {None}


def test_seeds_from_clickhouse_learn_every_level_of_a_span(client: Any, tmp_path: Path) -> None:
    seen = kernel()
    store(client, seen.update(BEFORE, {}))
    reference = level_rows(seen.update(AFTER, {}))

    seeds = seeds_from_clickhouse(client, DB, T0 + 10_000)
    xau = seeds["XAU"]
    assert xau.first_runs == ((100.0, 5_000.0, 5_300.0, T0 + 2_000),)
    assert xau.first_runs_down == ((100.0, 5_300.0, 5_200.0, T0 + 3_000),)
    assert xau.first_crossings == {(1_000.0, 5_000.0): T0 + 2_000}
    assert xau.first_crossings_down == {}
    got = level_rows(kernel(seeds).update(AFTER, {}))
    assert got == reference
    assert got == [
        ("level_up", T0 + 11_000, 100.0, 5_200.0, 5_200.0, T0 + 2_000, 0),  # no false first
        ("level_down", T0 + 12_000, 100.0, 5_100.0, 5_100.0, T0 + 3_000, 1),
        ("level_up", T0 + 13_000, 100.0, 5_400.0, 5_200.0, T0 + 2_000, 1),
    ]

    # `tickstream run` hands the seeds over as a file: the spans survive it
    path = tmp_path / "seeds.json"
    path.write_bytes(seeds_to_json(seeds))
    assert seeds_from_file(path) == seeds


def test_without_the_span_a_passed_over_level_would_be_a_false_first(client: Any) -> None:
    """What the span is for: the same seed without its runs calls 5,200 a first."""
    store(client, kernel().update(BEFORE, {}))
    seed = seeds_from_clickhouse(client, DB, T0 + 10_000)["XAU"]
    bare = RecordSeed(seed.ath, seed.ath_ts_ms, seed.atl, seed.atl_ts_ms, seed.first_crossings)
    (first, *_) = level_rows(kernel({"XAU": bare}).update(AFTER, {}))
    assert first[:4] == ("level_up", T0 + 11_000, 100.0, 5_200.0) and first[-1] == 1


def test_a_database_before_migration_7_gives_single_crossings(client: Any) -> None:
    """A processor upgraded before its sink migrated reads the table as it is."""
    store(client, kernel().update(BEFORE, {}), until=6)
    xau = seeds_from_clickhouse(client, DB, T0 + 10_000)["XAU"]
    assert xau.first_runs == () and xau.first_runs_down == ()
    assert xau.first_crossings == {(100.0, 5_300.0): T0 + 2_000, (1_000.0, 5_000.0): T0 + 2_000}
    assert xau.first_crossings_down == {(100.0, 5_200.0): T0 + 3_000}
    migrate(client, DB)  # the sink's next start-up: older rows have no span (NULL)
    again = seeds_from_clickhouse(client, DB, T0 + 10_000)["XAU"]
    assert again.first_crossings == xau.first_crossings and again.first_runs == ()
