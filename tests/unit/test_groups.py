"""Symbol groups: the connected components of pairs and sync groups, one partition each."""

from __future__ import annotations

import asyncio

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from producers.publisher import Publisher
from producers.validation import ValidationConfig, Validator
from tickstream.groups import GroupLayout, partition_for
from tickstream.settings import Settings
from tickstream.topics import Topics

SYMBOLS = st.sampled_from([f"S{i}" for i in range(12)])
LINKS = st.lists(st.lists(SYMBOLS, min_size=2, max_size=4, unique=True), max_size=10)


def components(links: list[list[str]]) -> set[frozenset[str]]:
    """The oracle: grow each symbol's component by search until nothing joins."""
    neighbours: dict[str, set[str]] = {}
    for link in links:
        for s in link:
            neighbours.setdefault(s, set()).update(link)
    seen: set[str] = set()
    out: set[frozenset[str]] = set()
    for start in neighbours:
        if start in seen:
            continue
        component, todo = {start}, [start]
        while todo:
            for other in neighbours[todo.pop()] - component:
                component.add(other)
                todo.append(other)
        seen |= component
        out.add(frozenset(component))
    return out


@given(LINKS, st.randoms())
def test_groups_are_the_connected_components(links: list[list[str]], rnd) -> None:  # type: ignore[no-untyped-def]
    layout = GroupLayout.of(links)
    expected = {c for c in components(links) if len(c) > 1}
    assert {frozenset(g) for g in layout.groups} == expected
    # the same links in any order, each in any order: the same layout
    shuffled = [rnd.sample(link, len(link)) for link in rnd.sample(links, len(links))]
    assert GroupLayout.of(shuffled) == layout
    # a group's members share one name (and so one partition); other symbols do not
    for a in [f"S{i}" for i in range(12)]:
        for b in [f"S{i}" for i in range(12)]:
            together = any(a in c and b in c for c in expected) or a == b
            assert (layout.group_of(a) == layout.group_of(b)) == together
    assert GroupLayout.from_json(layout.to_json()) == layout


def test_settings_tie_pairs_and_sync_groups_together() -> None:
    layout = GroupLayout.from_settings(
        Settings(divergence_pairs="XAU/XAG,XAG/XPT,BTC/ETH", sync_groups="XPD+XPT", metrics_port=0)
    )
    assert layout.groups == (("BTC", "ETH"), ("XAG", "XAU", "XPD", "XPT"))
    assert layout.group_of("XPD") == "XAG+XAU+XPD+XPT"
    assert layout.group_of("SPX") == "SPX"  # named by no pair: alone
    default = GroupLayout.from_settings(Settings(metrics_port=0))
    assert default.groups == (("XAG", "XAU"),)
    swapped = Settings(divergence_pairs="XAG/XAU", sync_groups="XAG+XAU", metrics_port=0)
    assert GroupLayout.from_settings(swapped) == default


def test_a_groups_partition_is_kafkas_default_for_its_name() -> None:
    partitioner = DefaultPartitioner()
    for name in ("XAG+XAU", "BTC", "SPX", "a-much-longer-group-name"):
        for n in (1, 3, 4, 7):
            assert partition_for(name, n) == partitioner(name.encode(), list(range(n)), None)


def test_the_publisher_puts_a_groups_symbols_on_one_partition() -> None:
    async def partitions() -> dict[str, int]:
        settings = Settings(
            namespace="groups",
            partitions=4,
            divergence_pairs="XAU/XAG,XPT/XPD",
            metrics_port=0,
        )
        publisher = Publisher(settings, Validator(ValidationConfig()))
        publisher._partitions[Topics("groups").ticks] = [0, 1, 2, 3]
        layout = GroupLayout.from_settings(settings)
        out = {}
        for symbol in ("XAU", "XAG", "XPT", "XPD", "BTC", "SPX"):
            out[symbol] = publisher._partition(symbol, symbol.encode())
            assert out[symbol] == layout.partition_of(symbol, 4)
        return out

    got = asyncio.run(partitions())
    assert got["XAU"] == got["XAG"] and got["XPT"] == got["XPD"]
    assert got["BTC"] == partition_for("BTC", 4)  # alone: keyed by its own name, as before
