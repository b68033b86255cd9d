"""All analytics behind one call: order by event time, then run every kernel.

This is what the Faust agent, the benchmarks and the replay tests drive; it
knows nothing of Kafka. ``update`` takes ticks in arrival order and returns the
rows to publish, the ticks that came too late, and the desk's signal events.

Two paths, one truth (live.py): every accepted tick is evaluated on arrival and its
signals go out at once as ``provisional`` events; the exact kernels then decide at the
watermark, and each provisional id is ``confirmed`` (with the exact row) or
``retracted`` (with a reason); exact signals nobody announced come out ``confirmed``
with ``announced`` 0. The exact rows themselves are in ``rows`` as before.

Time is injected: ``now_ms`` stamps the events (``emitted_ms``); 0 when not given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from processors.kernels.divergence import DivergenceConfig, DivergenceKernel
from processors.kernels.live import LiveSignals
from processors.kernels.ohlc import OhlcConfig, OhlcKernel
from processors.kernels.ordering import JUMP_CONFIRM_TICKS, MAX_JUMP_MS, Reorderer
from processors.kernels.records import RecordConfig, RecordKernel
from processors.kernels.rolling import RollingConfig
from processors.kernels.rolling_breaks import RollingBreakKernel
from tickstream.contracts import OutputRow, SignalEvent
from tickstream.model import Tick


class Kernel(Protocol):
    def update(
        self, ticks: Sequence[Tick], watermarks: Mapping[str, int]
    ) -> Sequence[OutputRow]: ...

    def flush(self) -> Sequence[OutputRow]: ...

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class AnalyticsConfig:
    """``allowed_lateness_ms`` is the default; ``lateness_ms_by_symbol`` overrides it per
    symbol (0 for a feed known to arrive in order: its signals confirm with the tick).

    ``max_jump_ms`` (per symbol: ``max_jump_ms_by_symbol``; 0 = off) and
    ``jump_confirm_ticks`` are the ordering stage's clock-jump rule (ordering.py): a tick
    stamped further than that past its symbol's clock moves the clock only once that
    many later ticks confirm it, so one mis-stamped tick cannot make the good ticks
    after it late."""

    allowed_lateness_ms: int = 2_000
    lateness_ms_by_symbol: Mapping[str, int] = field(default_factory=dict)
    max_jump_ms: int = MAX_JUMP_MS
    max_jump_ms_by_symbol: Mapping[str, int] = field(default_factory=dict)
    jump_confirm_ticks: int = JUMP_CONFIRM_TICKS
    ohlc: OhlcConfig = field(default_factory=OhlcConfig)
    rolling: RollingConfig = field(default_factory=RollingConfig)
    records: RecordConfig = field(default_factory=RecordConfig)
    divergence: DivergenceConfig = field(default_factory=DivergenceConfig)


@dataclass(slots=True)
class StepResult:
    rows: list[OutputRow]
    late: list[Tick]
    events: list[SignalEvent] = field(default_factory=list)


class Analytics:
    """The event-time ordering stage followed by every kernel, in a fixed order, and the
    live stage that announces signals before the kernels confirm them."""

    def __init__(self, config: AnalyticsConfig | None = None) -> None:
        self.config = config or AnalyticsConfig()
        config = self.config
        self.ordering = Reorderer(
            config.allowed_lateness_ms,
            config.lateness_ms_by_symbol,
            config.max_jump_ms,
            config.max_jump_ms_by_symbol,
            config.jump_confirm_ticks,
        )
        # one pair of staircases per symbol serves the rolling highs and the rolling breaks
        rolling = RollingBreakKernel(self.config.rolling, highs=True)
        records = RecordKernel(self.config.records)
        self.kernels: dict[str, Kernel] = {
            "ohlc": OhlcKernel(self.config.ohlc),
            "rolling": rolling,  # type: ignore[dict-item]
            "records": records,
            "divergence": DivergenceKernel(self.config.divergence),
        }
        self.live = LiveSignals(records, rolling, self.ordering)

    def update(self, ticks: Iterable[Tick], now_ms: int = 0) -> StepResult:
        live = self.live
        live.now_ms = now_ms
        late = self.ordering.accept(ticks, live)  # provisional signals, on arrival
        live.announce_syncs()
        released = self.ordering.release()
        watermarks = self.ordering.watermarks()
        rows: list[OutputRow] = []
        for kernel in self.kernels.values():
            rows.extend(kernel.update(released, watermarks))
        return StepResult(rows, late, live.settle(rows, released, watermarks, now_ms))

    def flush(self, now_ms: int = 0) -> StepResult:
        """End of input: release every held tick and emit what is still open; every
        provisional signal is confirmed or retracted."""
        self.live.now_ms = now_ms
        self.live.announce_syncs(final=True)
        watermarks = self.ordering.watermarks()
        released = self.ordering.flush()
        rows: list[OutputRow] = []
        for kernel in self.kernels.values():
            rows.extend(kernel.update(released, watermarks))
            rows.extend(kernel.flush())
        return StepResult(rows, [], self.live.settle(rows, released, None, now_ms))

    def snapshot(self, deferred: bool = False) -> dict[str, Any]:
        """``deferred``: held ticks as captures, for an encoding later (ordering.HeldTicks)."""
        return {
            "ordering": self.ordering.snapshot(deferred),
            "kernels": {name: k.snapshot() for name, k in self.kernels.items()},
            "live": self.live.snapshot(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.ordering.restore(state["ordering"])
        for name, kernel in self.kernels.items():
            if name in state["kernels"]:
                kernel.restore(state["kernels"][name])
        self.live.restore(state.get("live"))
