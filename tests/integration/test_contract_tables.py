"""The ClickHouse DDL against the contracts: every field has a column, every column a field.

The sink's insert columns come from the contracts (sinks/rows.py); this reads the
tables the migrations actually made, so a field added to a row without a migration, or
a column added without a field, fails here instead of being dropped silently.
"""

from __future__ import annotations

from pathlib import Path

import clickhouse_connect

from sinks.rows import TABLES
from sinks.schema import migrate
from tickstream.contracts import DEAD_LETTER_COLUMNS, ROW_SPECS, TICK_COLUMNS, TICK_FIELDS

DB = "contracts"
# columns ClickHouse fills itself, which no producer writes
STORAGE_ONLY = {"ticks": {"inserted_at"}, "late_ticks": {"inserted_at"}}


def test_every_contract_field_has_a_column_and_every_column_a_field(tmp_path: Path) -> None:
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'chdb'}")
    migrate(client, DB)
    expected = {
        "ticks": tuple(TICK_COLUMNS[f] for f in TICK_FIELDS),
        "late_ticks": tuple(TICK_COLUMNS[f] for f in TICK_FIELDS),
        "rejected_ticks": tuple(DEAD_LETTER_COLUMNS.values()),
        **{spec.table: spec.columns for spec in ROW_SPECS},
    }
    assert set(expected) == set(TABLES), "the sink writes exactly the contract's tables"
    for table, columns in expected.items():
        assert TABLES[table].columns == columns, table
        actual = [
            name
            for (name,) in client.query(
                "SELECT name FROM system.columns WHERE database = {db:String} "
                "AND table = {t:String} ORDER BY position",
                parameters={"db": DB, "t": table},
            ).result_rows
        ]
        stored = [c for c in actual if c not in STORAGE_ONLY.get(table, set())]
        assert sorted(stored) == sorted(columns), (
            f"{table}: columns without a contract field "
            f"{sorted(set(stored) - set(columns))}, fields without a column "
            f"{sorted(set(columns) - set(stored))}"
        )
