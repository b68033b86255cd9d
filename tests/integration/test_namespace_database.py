"""Two namespaces, two databases: no row of one is in the other's tables.

Before, a namespace had its own topics but shared database ``tickstream``: the ticks of
`--namespace nc` landed in ``tickstream.ticks`` beside the default namespace's, with
nothing to tell them apart. Now each namespace but the default writes to
``tickstream_<namespace>`` unless --clickhouse-database says otherwise. Both runs here share
one chDB directory (and broker), as two runs on one machine do.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import clickhouse_connect
import pytest

pytestmark = pytest.mark.kafka

T0 = 1_769_385_600_000  # 2026-01-26T00:00:00Z


def market(path: Path, base: float) -> list[tuple[str, int, float]]:
    """300 ticks of XAU a second apart around ``base``; both files cover the same minutes."""
    ticks = [("XAU", T0 + i * 1_000, round(base + (i % 17) * 0.25, 2)) for i in range(300)]
    path.write_text("ts,symbol,price\n" + "".join(f"{t},{s},{p}\n" for s, t, p in ticks))
    return ticks


def tickstream(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


def test_two_namespaces_write_two_databases(kafka_bootstrap: str, tmp_path: Path) -> None:
    chdb = tmp_path / "chdb"
    tag = uuid.uuid4().hex[:8]
    runs = {f"gold{tag}": market(tmp_path / "a.csv", 5_000.0)}
    runs[f"nc-{tag}"] = market(tmp_path / "b.csv", 2_000.0)  # '-' in a name: '_' in its database
    for (namespace, _), csv in zip(runs.items(), ("a.csv", "b.csv"), strict=True):
        proc = tickstream(
            [
                "run",
                "--replay",
                str(tmp_path / csv),
                "--until-drained",
                "--kafka-bootstrap",
                kafka_bootstrap,
                "--namespace",
                namespace,
                "--clickhouse-url",
                f"chdb://{chdb}",
                "--metrics-port",
                "0",
            ],
            tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        database = "tickstream_" + namespace.replace("-", "_")
        assert f"(database {database})" in proc.stderr  # the banner says where rows go
        assert f"late ticks: 0 (rows of {database}.late_ticks" in proc.stderr.splitlines()[-1]

    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb}")
    try:
        databases = {d for (d,) in client.query("SHOW DATABASES").result_rows}
        assert {f"tickstream_gold{tag}", f"tickstream_nc_{tag}"} <= databases
        assert "tickstream" not in databases  # the default namespace's stays untouched
        for namespace, ticks in runs.items():
            db = "tickstream_" + namespace.replace("-", "_")
            got = client.query(
                f"SELECT symbol, toUnixTimestamp64Milli(ts), price FROM {db}.ticks FINAL "
                "ORDER BY ts"
            ).result_rows
            assert [tuple(r) for r in got] == ticks, namespace
            bars = client.query(f"SELECT sum(ticks), min(low) FROM {db}.bars_1m FINAL")
            assert bars.result_rows == [(300, min(p for _, _, p in ticks))], namespace
    finally:
        client.close()

    # `tickstream query --namespace` reads the namespace's tables without naming the database
    for namespace, ticks in runs.items():
        proc = tickstream(
            [
                "query",
                "--namespace",
                namespace,
                "--clickhouse-url",
                f"chdb://{chdb}",
                "SELECT count(), min(price) FROM ticks",
            ],
            tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["300", str(min(p for _, _, p in ticks))]
