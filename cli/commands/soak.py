"""`tickstream soak`: the pipeline for N minutes under hostile inputs and kills, then the
accounting (implementation: bench/soak.py)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import click


@click.command()
@click.option(
    "--minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="How long inputs are published (the drain and the checks come after).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=1_500.0,
    show_default=True,
    help="Inputs published per second (about 5% of them hostile).",
)
@click.option(
    "--kill-every",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Mean seconds between two kills (SIGKILL, then a restart) of the processor, the "
    "sink or the broker, in shuffled rounds; 0 = no kills.",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    show_default="a random one (printed)",
    help="Seed of the generated inputs and of the kill schedule.",
)
@click.option(
    "--kafka-port",
    type=click.IntRange(0, 65534),
    default=0,
    show_default="a free pair in 19910-19998",
    help="Port of the soak's own broker (its controller takes the next one).",
)
@click.option(
    "--partitions",
    type=click.IntRange(1, 64),
    default=3,
    show_default=True,
    help="Partitions of the soak's topics.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    show_default="a temporary directory",
    help="Where the broker's storage, the chDB directory, the inputs and the logs go.",
)
@click.option("--keep", is_flag=True, help="Keep the work directory (kept anyway on failure).")
def soak(
    minutes: float,
    rate: float,
    kill_every: float,
    seed: int | None,
    kafka_port: int,
    partitions: int,
    workdir: Path | None,
    keep: bool,
) -> None:
    """Run the pipeline for N minutes on a generated market mixed with hostile inputs,
    killing the processor, the sink and the broker at random, then check the accounting.

    It starts a broker of its own (on a free port), the processor and the sink as child
    processes (restarted after each kill, and after any exit of their own), and publishes
    from this process. Once the run has drained it checks that every input is in `ticks`
    xor in `rejected_ticks`, that those tables hold exactly what validation decided, and
    that every analytic table equals the pure kernels' result over the accepted ticks.
    It prints the figures (inputs, rejections by reason, kills survived, rows lost, rows
    doubled) and exits 1 when anything is lost, doubled or different.
    """
    from tickstream.kafka_local import ROOT

    if str(ROOT) not in sys.path:  # bench/ is part of the checkout, not of the package
        sys.path.insert(0, str(ROOT))
    from bench.soak import SoakOptions, run_soak

    if seed is None:
        seed = random.randrange(1 << 31)
    options = SoakOptions(
        minutes=minutes,
        rate=rate,
        kill_every_s=kill_every,
        seed=seed,
        kafka_port=kafka_port,
        partitions=partitions,
        workdir=workdir,
        keep=keep,
    )
    sys.exit(run_soak(options, out=click.echo))
