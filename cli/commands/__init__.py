"""Sub-commands, one module each; imported lazily so `--help` stays fast."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    from cli.commands import bench, gateway, kafka, produce, query, run, soak

    group.add_command(kafka.kafka)
    group.add_command(run.run)
    group.add_command(run.process)
    group.add_command(run.sink)
    group.add_command(query.query)
    group.add_command(gateway.gateway)
    group.add_command(produce.produce)
    group.add_command(bench.bench)
    group.add_command(soak.soak)
