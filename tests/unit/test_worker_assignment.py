"""A processor worker that joins a running group takes partitions of its own.

Faust's assignor keeps partitions where they are, up to a capacity per worker; with the
app's settings that capacity must let every worker have some (the processor has no Faust
tables, so nothing to keep standbys of).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from faust.assignor.client_assignment import CopartitionedAssignment
from faust.assignor.copartitioned_assignor import CopartitionedAssignor

from processors.app import create_app
from processors.config import analytics_config
from tickstream.settings import Settings
from tickstream.topics import Topics


def test_a_worker_joining_two_that_share_four_partitions_gets_some(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(namespace="assign", metrics_port=0, partitions=4)
    app = create_app(settings, analytics_config(settings, {}))
    ticks = Topics(settings.namespace).ticks
    for before in ([{0, 2}, {1, 3}, set()], [{0, 1, 2, 3}, set(), set()]):
        clients = {
            f"worker{i}": CopartitionedAssignment(actives=set(owned), topics={ticks})
            for i, owned in enumerate(before)
        }
        assignment = CopartitionedAssignor(
            {ticks}, clients, 4, replicas=app.conf.table_standby_replicas
        ).get_assignment()
        owned = [a.actives for a in assignment.values()]
        assert all(owned), (before, owned)
        assert sorted(p for a in owned for p in a) == [0, 1, 2, 3]
