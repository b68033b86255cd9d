"""`tickstream kafka up|down|status`: the local broker."""

from __future__ import annotations

import sys

import click

from cli.options import pop_settings, settings_options
from tickstream import kafka_local


@click.group()
def kafka() -> None:
    """Start, stop or inspect the local Apache Kafka broker (KRaft, single node, 127.0.0.1).

    The broker's jars come from Maven Central (kafka/pom.xml) into .cache/kafka;
    its data, log and pid live in .tickstream/kafka-<port>. The port is the one
    in --kafka-bootstrap.
    """


def _action(name: str, doc: str):  # type: ignore[no-untyped-def]
    @kafka.command(name=name, help=doc)
    @settings_options("kafka_bootstrap")
    def command(**values: object) -> None:
        settings = pop_settings(values)
        if not kafka_local.is_loopback(settings.kafka_bootstrap):
            raise click.UsageError(
                "--kafka-bootstrap / TICKSTREAM_KAFKA_BOOTSTRAP: the local broker runs on "
                f"127.0.0.1 only, not {settings.kafka_bootstrap}"
            )
        sys.exit(kafka_local.broker(name, settings.kafka_port, check=False))

    return command


_action("up", "Fetch the jars if needed, format storage once, start the broker, wait for it.")
_action("down", "Stop the broker cleanly.")
_action("status", "Say whether the broker runs (exit 3 when it does not).")
