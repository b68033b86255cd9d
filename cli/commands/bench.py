"""`tickstream bench ...`: run a benchmark from bench/ and print its figures."""

from __future__ import annotations

import subprocess
import sys

import click

from tickstream.kafka_local import ROOT

NAMES = ("analytics", "gateway", "kernels", "latency", "publisher", "scale", "sink")


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("name", type=click.Choice(NAMES))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(name: str, args: tuple[str, ...]) -> None:
    """Run a benchmark (figures are printed, never asserted); extra ARGS go to it.

    \b
    analytics  pure kernels vs the Faust processor vs a naive per-event agent
    publisher  publisher vs raw aiokafka send_batch to the broker
    sink       ticks/s through the sink's insert path into chDB and the bytes on disk
               per tick of each table (--broker: Kafka -> sink vs a bare insert)
    kernels    each analytic kernel alone on a seeded random stream
    gateway    desk feed: 500 clients at 10,000 ticks/s, latency and CPU
    latency    tick receipt -> desk client through the whole pipeline, at 1k/5k/20k ticks/s
    scale      the processor with 1 and 2 workers on one load, and recovery from a kill

    Most need a broker: `tickstream kafka up` first (default 127.0.0.1:9092).
    """
    script = ROOT / "bench" / f"{name}.py"
    if not script.exists():
        raise click.ClickException(f"{script} is not there (yet)")
    command = [sys.executable, "-m", "bench", name, *args]  # a bad setting: one line
    sys.exit(subprocess.call(command, cwd=ROOT, env=_env_with_root()))


def _env_with_root() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env
