"""The ``tickstream`` command."""

from __future__ import annotations

import logging
import sys

import click

from cli.kafka_log import RepeatedKafkaErrors, quiet_kafka_start_up
from tickstream import __version__


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose < 0 else logging.INFO if verbose == 0 else logging.DEBUG
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("aiokafka", "faust", "mode", "kafka", "websockets"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if verbose < 2:  # -vv: every line the Kafka client writes (cli/kafka_log.py)
        repeats = RepeatedKafkaErrors()
        for handler in logging.getLogger().handlers:
            handler.addFilter(quiet_kafka_start_up)
            handler.addFilter(repeats)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tickstream")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Debug log output (-vv: also the Kafka client's normal start-up errors, and each "
    "of its repeated errors, which are otherwise shown once every 30 s with a count).",
)
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only (no INFO lines).")
def cli(verbose: int, quiet: bool) -> None:
    """tickstream: market ticks through Kafka and Faust into ClickHouse, with Prometheus metrics.

    Start with `tickstream run` (everything locally, embedded ClickHouse) or
    `tickstream run --replay ticks.csv --until-drained`. Every option also reads
    an environment variable, shown in each command's --help.
    """
    _configure_logging(-1 if quiet else verbose)


def _register() -> None:
    from cli.commands import register

    register(cli)


def main() -> None:
    """Entry point: a bad setting found after start-up still ends in one clear line."""
    from producers.publisher import PublishFailed
    from tickstream.clickhouse import ClickHouseUnavailable
    from tickstream.settings import ConfigError

    _register()
    try:
        cli()
    except ConfigError as exc:
        click.echo(f"Error: bad setting {exc}", err=True)
        sys.exit(2)
    except (ClickHouseUnavailable, PublishFailed) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
