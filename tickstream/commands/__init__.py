"""Sub-commands, one module each; imported lazily so `--help` stays fast."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    from tickstream.commands import kafka

    cli.add_command(kafka.kafka)
