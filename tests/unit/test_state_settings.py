"""Settings changed after a restore: those folded into the kernels' state are refused with a
message that says what to do; those read afresh on every tick (lateness) are applied."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

import processors.partitions
from processors.config import analytics_config, state_settings
from processors.core import Incoming, ProcessorCore, StateSettingsChanged, decode_state
from processors.partitions import check_state
from tickstream import contracts
from tickstream.groups import GroupLayout
from tickstream.model import Tick
from tickstream.settings import ConfigError, Settings
from tickstream.topics import Topics

TOPICS = Topics("shaped")
BASE: dict[str, Any] = {"namespace": "shaped", "metrics_port": 0}


def core(**changes: Any) -> ProcessorCore:
    settings = Settings(**{**BASE, **changes})
    return ProcessorCore(
        TOPICS,
        analytics_config(settings),
        1,
        partition=0,
        layout=GroupLayout.from_settings(settings),
        state_settings=state_settings(settings),
    )


def snapshot_after_ticks(**changes: Any) -> bytes:
    first = core(**changes)
    ticks = [Tick("XAU", 1_769_400_000_000 + i * 1_000, 5000.0 + i) for i in range(20)]
    first.step([Incoming(0, 0, contracts.encode_ticks(ticks))])
    return first.snapshot()


@pytest.mark.parametrize(
    ("name", "before", "after"),
    [
        ("rolling_windows", "1h,1d,7d,52w", "1h,1d,7d,52w,30m"),
        ("level_steps", "XAU:100,1000;XAG:1,10", "XAU:50,100,1000;XAG:1,10"),
        ("level_hysteresis", 0.001, 0.002),
        ("divergence_lookback_ms", 20 * 86_400_000, 10 * 86_400_000),
    ],
)
def test_a_state_shaping_setting_changed_is_refused_naming_it(
    name: str, before: object, after: object
) -> None:
    blob = snapshot_after_ticks(**{name: before})
    with pytest.raises(StateSettingsChanged) as refused:
        core(**{name: after}).restore(blob)
    message = str(refused.value)
    flag = "--" + name.replace("_", "-")
    assert message.startswith(f"{flag} / TICKSTREAM_{name.upper()}: ")
    assert "Set it back, or start a new --namespace and replay" in message
    assert isinstance(refused.value, ConfigError)  # the CLI prints it as one line


def test_the_same_settings_spelt_differently_and_applied_ones_restore() -> None:
    blob = snapshot_after_ticks(rolling_windows="1h,1d,7d,52w")
    restored = core(rolling_windows=" 1h, 1d ,7d,52w", allowed_lateness_ms=0)
    restored.restore(blob)  # spelling is no change; lateness is applied, not refused
    assert restored.applied == {0: 0}


def test_a_snapshot_from_before_the_check_restores() -> None:
    blob = snapshot_after_ticks()
    state = decode_state(blob)
    del state["settings"]
    core(level_steps="XAU:50").restore(orjson.dumps(state))


def test_start_up_refuses_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    blob = snapshot_after_ticks()

    async def snapshots(bootstrap: str, topic: str) -> dict[int, bytes]:
        return {0: blob}

    monkeypatch.setattr(processors.partitions, "load_snapshots", snapshots)
    assert asyncio.run(check_state(Settings(**BASE))) == 1
    with pytest.raises(StateSettingsChanged, match="--rolling-windows"):
        asyncio.run(check_state(Settings(**BASE, rolling_windows="1h,2d")))


def test_the_records_warm_up_is_wired_and_a_change_applies_after_a_restore() -> None:
    assert analytics_config(Settings(**BASE)).records.warmup_ms == 86_400_000
    assert analytics_config(Settings(**BASE, record_warmup_ms=0)).records.warmup_ms == 0
    assert "record_warmup_ms" not in state_settings(Settings(**BASE))
    blob = snapshot_after_ticks(record_warmup_ms=86_400_000)
    restored = core(record_warmup_ms=0)
    restored.restore(blob)  # not state-shaping: the state keeps the first tick, not the end
    assert restored.applied == {0: 0}
