"""Kafka topic and consumer-group names, all prefixed by the namespace.

The namespace keeps two runs against one broker apart: every topic and every
consumer group carries it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    namespace: str

    @property
    def ticks(self) -> str:
        return f"{self.namespace}.ticks"

    @property
    def dlq(self) -> str:
        return f"{self.namespace}.ticks.dlq"

    @property
    def late(self) -> str:
        return f"{self.namespace}.ticks.late"

    @property
    def aggregates(self) -> str:
        return f"{self.namespace}.aggregates"

    @property
    def signals(self) -> str:
        return f"{self.namespace}.signals"

    @property
    def processor_state(self) -> str:
        """Compacted topic holding the processor's kernel snapshots and input offsets."""
        return f"{self.namespace}.processor.state"

    @property
    def quarantine(self) -> str:
        """Rows ClickHouse refused for data reasons, one JSON record each (the sink writes
        them with the reason; not a sink input)."""
        return f"{self.namespace}.quarantine"

    def sink_inputs(self) -> list[str]:
        return [self.ticks, self.dlq, self.late, self.aggregates, self.signals]

    def processor_outputs(self) -> list[str]:
        """The topics the processor writes (and passes end-of-input markers on to)."""
        return [self.dlq, self.late, self.aggregates, self.signals]

    def group(self, component: str) -> str:
        return f"{self.namespace}.{component}"
