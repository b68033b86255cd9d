"""All analytics behind one call: order by event time, then run every kernel.

This is what the Faust agent, the benchmarks and the replay tests drive; it
knows nothing of Kafka. ``update`` takes ticks in arrival order and returns the
rows to publish plus the ticks that came too late.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from processors.kernels.divergence import DivergenceConfig, DivergenceKernel
from processors.kernels.ohlc import OhlcConfig, OhlcKernel
from processors.kernels.ordering import Reorderer
from processors.kernels.records import RecordConfig, RecordKernel
from processors.kernels.rolling import RollingConfig, RollingKernel
from tickstream.contracts import OutputRow
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
    allowed_lateness_ms: int = 2_000
    ohlc: OhlcConfig = field(default_factory=OhlcConfig)
    rolling: RollingConfig = field(default_factory=RollingConfig)
    records: RecordConfig = field(default_factory=RecordConfig)
    divergence: DivergenceConfig = field(default_factory=DivergenceConfig)


@dataclass(slots=True)
class StepResult:
    rows: list[OutputRow]
    late: list[Tick]


class Analytics:
    """The event-time ordering stage followed by every kernel, in a fixed order."""

    def __init__(self, config: AnalyticsConfig | None = None) -> None:
        self.config = config or AnalyticsConfig()
        self.ordering = Reorderer(self.config.allowed_lateness_ms)
        self.kernels: dict[str, Kernel] = {
            "ohlc": OhlcKernel(self.config.ohlc),
            "rolling": RollingKernel(self.config.rolling),
            "records": RecordKernel(self.config.records),
            "divergence": DivergenceKernel(self.config.divergence),
        }

    def update(self, ticks: Iterable[Tick]) -> StepResult:
        released, late = self.ordering.push(ticks)
        watermarks = self.ordering.watermarks()
        rows: list[OutputRow] = []
        for kernel in self.kernels.values():
            rows.extend(kernel.update(released, watermarks))
        return StepResult(rows, late)

    def flush(self) -> StepResult:
        """End of input: release every held tick and emit what is still open."""
        watermarks = self.ordering.watermarks()
        released = self.ordering.flush()
        rows: list[OutputRow] = []
        for kernel in self.kernels.values():
            rows.extend(kernel.update(released, watermarks))
            rows.extend(kernel.flush())
        return StepResult(rows, [])

    def snapshot(self) -> dict[str, Any]:
        return {
            "ordering": self.ordering.snapshot(),
            "kernels": {name: k.snapshot() for name, k in self.kernels.items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.ordering.restore(state["ordering"])
        for name, kernel in self.kernels.items():
            if name in state["kernels"]:
                kernel.restore(state["kernels"][name])
