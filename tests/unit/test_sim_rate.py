"""`tickstream run --sim-rate` / TICKSTREAM_SIM_RATE: the simulated market's pace."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from click.testing import CliRunner

from producers.simulator import SimulatorConfig, simulate
from tickstream.settings import ConfigError, Settings


def test_default_is_twenty_ticks_a_second() -> None:
    assert Settings().sim_rate == 20.0
    assert Settings().to_env()["TICKSTREAM_SIM_RATE"] == "20.0"  # reaches the children


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_rate_names_flag_and_variable(bad: float) -> None:
    with pytest.raises(ConfigError) as err:
        Settings(sim_rate=bad)
    assert str(err.value).startswith("--sim-rate / TICKSTREAM_SIM_RATE")


def test_zero_means_as_fast_as_possible_as_for_produce_simulate() -> None:
    assert Settings(sim_rate=0).sim_rate == 0


def test_run_refuses_a_bad_rate_from_the_environment() -> None:
    from cli.main import _register, cli

    _register()
    result = CliRunner().invoke(cli, ["run"], env={"TICKSTREAM_SIM_RATE": "-5"})
    assert result.exit_code == 2
    assert "TICKSTREAM_SIM_RATE" in result.output


def test_runner_simulates_at_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    import producers.simulator
    from cli import runner

    seen: list[SimulatorConfig] = []

    def fake_simulate(config: SimulatorConfig, *args: Any) -> AsyncIterator[Any]:
        seen.append(config)

        async def nothing() -> AsyncIterator[Any]:
            return
            yield

        return nothing()

    class FakePublisher:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        async def __aenter__(self) -> FakePublisher:
            return self

        async def __aexit__(self, *exc: object) -> None:
            pass

        async def publish(self, source: AsyncIterator[Any]) -> None:
            async for _ in source:
                pass

    monkeypatch.setattr(producers.simulator, "simulate", fake_simulate)
    monkeypatch.setattr(runner, "Publisher", FakePublisher)
    run = runner.Runner(Settings(sim_rate=750.0, metrics_port=0), runner.RunOptions())
    asyncio.run(run._simulate())
    assert [c.rate_per_s for c in seen] == [750.0]


def test_paced_simulator_behind_its_rate_still_yields_to_the_loop() -> None:
    """A rate above what the machine can do must not starve the rest of `tickstream run`."""

    async def main() -> int:
        turns = 0
        stop = asyncio.Event()

        async def other() -> None:
            nonlocal turns
            while not stop.is_set():
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(other())
        await asyncio.sleep(0)
        before = turns
        config = SimulatorConfig(count=20_000, rate_per_s=1_000.0)
        clock = itertools.count(2**40, 1_000)  # a second passes at every look at the clock:
        n = 0
        async for _ in simulate(config, now_ms=lambda: next(clock)):
            n += 1  # no tick is ever early, so the source never sleeps for its pace
        stop.set()
        await task
        assert n == 20_000
        return turns - before

    assert asyncio.run(main()) >= 10
