"""A replay file behind its namespace's clock is backfilled or refused, never silently late.

The clock itself is read from Kafka (tests/integration/test_backfill.py); here: how a file
is measured against it, what a refusal says, and what `--backfill` changes in the run.
"""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import pytest

from cli import backfill, runner
from cli.backfill import FileCheck, SymbolClock, command_line
from cli.commands.run import run as run_command
from producers.replay import ReplayConfig, SymbolSpan, time_spans
from tickstream.settings import Settings

T0 = 1_769_385_600_000  # 2026-01-26T00:00:00Z
NOVEMBER = 1_796_000_000_000


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("ts,symbol,price\n" + "\n".join(lines) + "\n")
    return path


def test_time_spans_per_symbol_with_the_ticks_behind_each_cutoff(tmp_path: Path) -> None:
    path = write(
        tmp_path / "f.csv",
        [
            f"{T0 + 5_000},XAU,5000",
            f"{T0 + 1_000},XAG,107",
            "not,a,tick",
            f"{T0 + 3_000},XAU,5001",  # out of order: still the earliest
            f"{T0 + 9_000},XAU,5002",
            "2026-01-26T00:00:02Z, XAG ,107.1",
            "bad-time,XAU,1",
            f"{T0 + 4_000},,1",
        ],
    )
    spans = time_spans(ReplayConfig(path), {"XAU": T0 + 5_000})
    assert spans == {
        "XAU": SymbolSpan(T0 + 3_000, T0 + 9_000, ticks=3, behind=2),
        "XAG": SymbolSpan(T0 + 1_000, T0 + 2_000, ticks=2, behind=0),
    }
    resumed = time_spans(ReplayConfig(path, start_ts_ms=T0 + 4_000))  # what a resume sends
    assert resumed["XAU"].ticks == 2 and "XAG" not in resumed


def check(path: Path, behind: int = 10_000) -> FileCheck:
    return FileCheck(
        path,
        {"XAU": SymbolSpan(T0 + 5_772, T0 + 28_628_670, ticks=5_486, behind=min(behind, 5_486))}
        | {"XAG": SymbolSpan(T0 + 1_094, T0 + 28_628_205, 4_514, max(0, behind - 5_486))},
        {"XAU": SymbolClock(NOVEMBER, NOVEMBER - 2_000), "XAG": SymbolClock(NOVEMBER, NOVEMBER)},
    )


def test_command_lines_replace_or_add_flags() -> None:
    argv = ["-q", "run", "--namespace", "example", "--replay", "a b.csv", "--until-drained"]
    assert command_line(argv, backfill=None) == (
        "tickstream -q run --namespace example --replay 'a b.csv' --until-drained --backfill"
    )
    assert command_line(argv, namespace="example-20260126").split()[4] == "example-20260126"
    assert command_line(["run", "--namespace=x"], namespace="y") == "tickstream run --namespace=y"
    assert command_line(["run"], namespace="y") == "tickstream run --namespace y"
    assert command_line(["run", "--allow-late"], drop=["allow-late"]) == "tickstream run"


def refused(tmp_path: Path, argv: tuple[str, ...], settings: Settings) -> str:
    run = runner.Runner(
        settings, runner.RunOptions(replay=tmp_path / "f.csv", until_drained=True, argv=argv)
    )
    return run._refusal(check(tmp_path / "f.csv"))


def test_a_refusal_names_the_file_the_clock_and_the_commands_to_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "f.csv", [f"{T0},XAU,5000"])
    argv = ("run", "--namespace", "example", "--replay", "f.csv", "--until-drained")
    text = refused(tmp_path, argv, Settings(namespace="example", metrics_port=0))
    assert "behind namespace 'example''s clock: all 10,000 of its ticks are stamped" in text
    assert "XAG from 2026-01-26 00:00:01.094 UTC, XAU from 2026-01-26 00:00:05.772 UTC" in text
    assert "XAG up to 2026-11-30 " in text and "XAU up to 2026-11-30 " in text
    assert "into database tickstream_example with a clock of its own" in text
    commands = [line.strip() for line in text.splitlines() if line.startswith("  tickstream")]
    assert commands == [
        "tickstream run --namespace example --replay f.csv --until-drained --backfill",
        "tickstream run --namespace example-20260126 --replay f.csv --until-drained",
    ]
    assert "database tickstream_example_20260126" in text
    assert "--allow-late" in text
    for command in commands:  # each one parses as the run command it claims to be
        args = shlex.split(command)
        assert args[:2] == ["tickstream", "run"]
        assert run_command.make_context("run", args[2:]).params["replay"] == Path("f.csv")


def test_a_partial_overlap_says_how_many(tmp_path: Path) -> None:
    run = runner.Runner(Settings(metrics_port=0), runner.RunOptions(replay=tmp_path / "f.csv"))
    assert "3,000 of its 10,000 ticks are stamped" in run._refusal(
        check(tmp_path / "f.csv", behind=3_000)
    )


def check_replay(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, found: FileCheck, **options: bool
) -> runner.Runner:
    async def fake_check(settings: Settings, config: ReplayConfig, scan: bool = False) -> FileCheck:
        return found

    async def no_topics(settings: Settings) -> None:
        made.append(settings.namespace)

    made: list[str] = []
    monkeypatch.setattr(backfill, "check_file", fake_check)
    monkeypatch.setattr(runner, "ensure_topics", no_topics)
    settings = Settings(namespace="example", metrics_port=0)
    run = runner.Runner(settings, runner.RunOptions(replay=found.path, **options))
    asyncio.run(run._check_replay(found.path))
    run.made_topics = made  # type: ignore[attr-defined]
    return run


def test_a_file_behind_the_clock_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(runner.RunFailed, match="--backfill"):
        check_replay(monkeypatch, tmp_path, check(tmp_path / "f.csv"))


def test_allow_late_publishes_it_in_the_namespace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run = check_replay(monkeypatch, tmp_path, check(tmp_path / "f.csv"), allow_late=True)
    assert run.settings.namespace == "example" and run.backfill_of is None


def test_a_file_ahead_of_the_clock_goes_on_in_the_namespace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run = check_replay(monkeypatch, tmp_path, check(tmp_path / "f.csv", behind=0))
    assert run.settings.namespace == "example" and run.check is not None


def test_a_backfill_gets_a_namespace_of_its_own_and_keeps_the_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run = check_replay(monkeypatch, tmp_path, check(tmp_path / "f.csv"), backfill=True)
    own = run.settings.namespace
    assert own == f"example-backfill-{run.run_id[:8]}"
    assert run.backfill_of == "example"
    assert run.settings.clickhouse_database == "tickstream_example"
    assert run.sink.topics.namespace == own  # the sink reads the backfill's topics
    assert run.made_topics == [own]  # type: ignore[attr-defined]
    assert len(backfill.backfill_namespace("n" * 64, run.run_id)) <= 64
    Settings(namespace=backfill.backfill_namespace("n" * 64, run.run_id))  # a valid name


def test_the_clock_is_the_restored_processors_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The clock comes from the snapshot through the processor's own restore: a file's end
    of input makes its whole range final (the floor), beyond the lateness."""
    import processors.app
    from processors.config import analytics_config
    from processors.core import Incoming, ProcessorCore
    from tickstream.contracts import encode_end_of_input, encode_ticks
    from tickstream.model import Tick
    from tickstream.topics import Topics

    settings = Settings(namespace="example", partitions=1, metrics_port=0)
    core = ProcessorCore(Topics("example"), analytics_config(settings), 1)
    ticks = [Tick("XAU", T0 + i * 1_000, 5_000.0 + i) for i in range(10)]
    core.step([Incoming(0, 0, encode_ticks(ticks))])
    before_end = core.snapshot()
    core.step([Incoming(0, 1, encode_end_of_input("run", 0, 1))])
    after_end = core.snapshot()

    async def state(bootstrap: str, topic: str) -> dict[int, bytes]:
        assert topic == "example.processor.state"
        blob = blobs.pop(0)
        return {} if blob is None else {0: blob}  # one snapshot per ticks partition

    blobs: list[bytes | None] = [before_end, after_end, None]
    monkeypatch.setattr(processors.app, "load_snapshots", state)
    held = asyncio.run(backfill.namespace_clock(settings))
    assert held == {"XAU": SymbolClock(T0 + 9_000, T0 + 7_000)}  # newest - 2 s lateness
    final = asyncio.run(backfill.namespace_clock(settings))
    assert final == {"XAU": SymbolClock(T0 + 9_000, T0 + 9_000)}  # the end made it final
    assert asyncio.run(backfill.namespace_clock(settings)) == {}  # never ran: no clock
