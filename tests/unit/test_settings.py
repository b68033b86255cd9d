from __future__ import annotations

import pytest
from click.testing import CliRunner

from tickstream.settings import ConfigError, Settings, normalize_clickhouse_url


def test_defaults_are_valid() -> None:
    s = Settings()
    assert s.kafka_port == 9092
    assert s.clickhouse_url.startswith("chdb:///")


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"namespace": "bad name"}, "--namespace / TICKSTREAM_NAMESPACE"),
        ({"kafka_bootstrap": "localhost"}, "--kafka-bootstrap / TICKSTREAM_KAFKA_BOOTSTRAP"),
        ({"clickhouse_url": "ftp://x"}, "--clickhouse-url / TICKSTREAM_CLICKHOUSE_URL"),
        ({"partitions": 0}, "--partitions / TICKSTREAM_PARTITIONS"),
        ({"allowed_lateness_ms": -1}, "--allowed-lateness-ms / TICKSTREAM_ALLOWED_LATENESS_MS"),
    ],
)
def test_bad_setting_names_itself(changes: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings(**changes)  # type: ignore[arg-type]
    assert str(err.value).startswith(named)


def test_chdb_urls_become_absolute(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert normalize_clickhouse_url("chdb://./data", base=tmp_path) == f"chdb://{tmp_path}/data"
    assert normalize_clickhouse_url("chdb:///abs/x") == "chdb:///abs/x"
    assert normalize_clickhouse_url("http://ch:8123") == "http://ch:8123"
    with pytest.raises(ConfigError):
        normalize_clickhouse_url("chdb://memory")


def test_cli_reports_bad_env_setting() -> None:
    from cli.main import _register, cli

    _register()
    result = CliRunner().invoke(
        cli, ["kafka", "status"], env={"TICKSTREAM_KAFKA_BOOTSTRAP": "nohostport"}
    )
    assert result.exit_code == 2
    assert "TICKSTREAM_KAFKA_BOOTSTRAP" in result.output


def test_readme_documents_every_setting() -> None:
    from pathlib import Path

    from tickstream.settings import envvar, flag, setting_names

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [
        name
        for name in setting_names()  # the gateway section's too
        if f"`{flag(name)}`" not in readme or f"`{envvar(name)}`" not in readme
    ]
    assert missing == []
