"""Shared by the tests that drive `tickstream run --replay FILE --until-drained` end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import clickhouse_connect


def replay_until_drained(
    csv: Path, chdb: Path, kafka_bootstrap: str, namespace: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """Run the whole pipeline on a file (in chdb's parent folder, so its state stays there).

    The rows go to database ``tickstream`` whatever the namespace (unless ``extra`` names
    one): the tests read ``tickstream.<table>``, and their chDB directory is their own.
    """
    chdb.parent.mkdir(parents=True, exist_ok=True)
    if "--clickhouse-database" not in extra:
        extra = ("--clickhouse-database", "tickstream", *extra)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "run",
            "--replay",
            str(csv),
            "--until-drained",
            "--kafka-bootstrap",
            kafka_bootstrap,
            "--namespace",
            namespace,
            "--clickhouse-url",
            f"chdb://{chdb}",
            "--metrics-port",
            "0",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=chdb.parent,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def read_tables(chdb: Path, queries: dict[str, str]) -> dict[str, list[tuple]]:
    """Each query's rows, sorted, from a chDB directory no other process holds."""
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb}")
    try:
        return {name: sorted(client.query(sql).result_rows) for name, sql in queries.items()}
    finally:
        client.close()
