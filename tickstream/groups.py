"""Symbol groups: the unit of parallelism, shared by the publisher and the processor.

Some analytics read several symbols at once: a divergence pair (XAU/XAG), a sync group
(XAU+XAG). Those symbols must meet in one processor core, so they must share one ticks
partition. A *group* is a connected set of symbols tied by pairs and sync groups (XAU/XAG
and XAG/XPT make one group of three); a symbol no pair or sync group names is a group of
its own. The publisher partitions ticks by their group's name and the processor runs one
core per partition, so any number of workers computes what one would.

The layout is fixed for the life of a namespace: a group split across partitions would
never meet again, so the processor refuses state written under another layout
(``describe_change``) rather than produce quietly wrong divergences.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiokafka.partitioner import murmur2

from tickstream.settings import Settings

JOIN = "+"


@dataclass(frozen=True, slots=True)
class GroupLayout:
    """The groups of two or more symbols; every other symbol is alone.

    ``groups`` is canonical (members sorted, groups sorted), so two layouts are equal
    exactly when they group the same symbols, whatever order the settings named them in.
    """

    groups: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def of(cls, links: Iterable[Sequence[str]]) -> GroupLayout:
        """The connected components of the symbols that ``links`` tie together."""
        parent: dict[str, str] = {}

        def root(s: str) -> str:
            parent.setdefault(s, s)
            while parent[s] != s:
                parent[s] = parent[parent[s]]  # path halving keeps the trees flat
                s = parent[s]
            return s

        for link in links:
            members = list(link)
            for other in members[1:]:
                a, b = root(members[0]), root(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
        components: dict[str, list[str]] = {}
        for symbol in parent:
            components.setdefault(root(symbol), []).append(symbol)
        groups = (tuple(sorted(m)) for m in components.values() if len(m) > 1)
        return cls(tuple(sorted(groups)))

    @classmethod
    def from_settings(cls, settings: Settings) -> GroupLayout:
        return _layout(settings.divergence_pairs, settings.sync_groups)

    def group_of(self, symbol: str) -> str:
        """The group's name: its members joined by '+', or the symbol alone."""
        return self._names().get(symbol, symbol)

    def partition_of(self, symbol: str, partitions: int) -> int:
        """The ticks partition of the symbol's group, as Kafka's default partitioner picks
        it for the group's name as key (so any Kafka producer can key ticks the same way)."""
        return partition_for(self.group_of(symbol), partitions)

    def to_json(self) -> list[list[str]]:
        return [list(g) for g in self.groups]

    @classmethod
    def from_json(cls, doc: Iterable[Iterable[str]]) -> GroupLayout:
        return cls.of(doc)

    def describe(self) -> str:
        return ", ".join(JOIN.join(g) for g in self.groups) or "none (every symbol alone)"

    def _names(self) -> dict[str, str]:
        return _names(self.groups)


@functools.lru_cache(maxsize=64)
def _names(groups: tuple[tuple[str, ...], ...]) -> dict[str, str]:
    return {symbol: JOIN.join(g) for g in groups for symbol in g}


@functools.lru_cache(maxsize=16)
def _layout(divergence_pairs: str, sync_groups: str) -> GroupLayout:
    probe = Settings(divergence_pairs=divergence_pairs, sync_groups=sync_groups, metrics_port=0)
    return GroupLayout.of([*probe.parsed_divergence_pairs(), *probe.parsed_sync_groups()])


def partition_for(key: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key, positive, modulo the count)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def describe_change(namespace: str, stored: GroupLayout, current: GroupLayout) -> str:
    """Why a namespace refuses another layout, and the ways out."""
    return (
        f"with --sync-groups they tie symbols into the groups {current.describe()}, but "
        f"namespace {namespace!r} was processed with the groups {stored.describe()}; ticks "
        "are partitioned by group, so a namespace keeps its groups: set both settings back, "
        "or start a new --namespace and replay the ticks into it (docs/scaling.md)"
    )
