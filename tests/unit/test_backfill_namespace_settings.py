"""A namespace selects its own ClickHouse database unless told otherwise.

Topics kept two namespaces apart, the database did not: `--namespace nc` wrote its ticks
into `tickstream.ticks` beside the default namespace's. The end-to-end proof is
tests/integration/test_namespace_database.py; here the rule itself.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cli import runner
from cli.commands.query import query
from tickstream.settings import ConfigError, Settings, database_for


@pytest.mark.parametrize(
    ("namespace", "database"),
    [
        ("tickstream", "tickstream"),  # deployments, grants and dashboards name it
        ("example", "tickstream_example"),
        ("nc", "tickstream_nc"),
        ("a-b", "tickstream_a_b"),
        ("9lives", "tickstream_9lives"),
    ],
)
def test_each_namespace_has_a_database_of_its_own(namespace: str, database: str) -> None:
    assert database_for(namespace) == database
    assert Settings(namespace=namespace).clickhouse_database == database


def test_a_database_given_wins_and_is_still_checked() -> None:
    assert Settings(namespace="nc", clickhouse_database="shared").clickhouse_database == "shared"
    with pytest.raises(ConfigError, match="--clickhouse-database"):
        Settings(namespace="nc", clickhouse_database="no-dashes")


def test_replace_moves_a_derived_database_with_the_namespace_only() -> None:
    derived = Settings(namespace="nc")
    assert derived.replace(namespace="other").clickhouse_database == "tickstream_other"
    assert derived.replace(metrics_port=0).clickhouse_database == "tickstream_nc"
    given = Settings(namespace="nc", clickhouse_database="shared")
    assert given.replace(namespace="other").clickhouse_database == "shared"
    both = derived.replace(namespace="other", clickhouse_database="tickstream_nc")
    assert both.clickhouse_database == "tickstream_nc"  # a backfill's way: keep the database


def test_children_get_the_namespace_database() -> None:
    """`tickstream run` passes its Settings as variables: the child must not derive anew."""
    env = Settings(namespace="nc").to_env()
    assert env["TICKSTREAM_CLICKHOUSE_DATABASE"] == "tickstream_nc"
    argv, child_env = runner.processor_command(Settings(namespace="nc"))
    assert child_env["TICKSTREAM_CLICKHOUSE_DATABASE"] == "tickstream_nc"


def test_the_query_command_follows_the_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Settings] = []

    def fake_connect(settings: Settings) -> object:
        seen.append(settings)
        raise __import__("tickstream.clickhouse").clickhouse.ClickHouseUnavailable("not here")

    monkeypatch.setattr("tickstream.clickhouse.connect", fake_connect)
    for args, database in (
        (["--namespace", "nc"], "tickstream_nc"),
        ([], "tickstream"),
        (["--namespace", "nc", "--clickhouse-database", "x"], "x"),
    ):
        result = CliRunner().invoke(query, [*args, "SELECT 1"], env={})
        assert result.exit_code == 1 and "not here" in result.output
        assert seen[-1].clickhouse_database == database
