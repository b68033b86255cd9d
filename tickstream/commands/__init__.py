"""Sub-commands, one module each; imported lazily so `--help` stays fast."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    from tickstream.commands import bench, kafka, pipeline, produce, query

    cli.add_command(kafka.kafka)
    cli.add_command(pipeline.run)
    cli.add_command(pipeline.process)
    cli.add_command(pipeline.sink)
    cli.add_command(query.query)
    cli.add_command(__import__("tickstream.commands.gateway").commands.gateway.gateway)
    cli.add_command(produce.produce)
    cli.add_command(bench.bench)
