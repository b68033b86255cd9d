"""The child processes of `tickstream run`: the stream processors and the gateway.

Each is a `tickstream` subcommand in a process of its own, built from the run's one
Settings (``Settings.to_env``). The run supervises them rather than giving up when one
dies: a processor killed mid-replay resumes exactly from its state topic, so starting it
again is all it takes for the run to drain with exact tables, and running the command
again would publish the file a second time. What a restart cannot fix is told apart:

* a child that *refuses to start* (an ``Error:`` line and an exit code within its first
  seconds: a bad setting, a port taken) would refuse again; the run stops with its line;
* a child that keeps dying soon after each start (``RestartPolicy.give_up_after`` in a
  row) is given up on, with its last exit; one that ran a while starts the count anew.

Restarts wait with exponential backoff, are logged, and are counted in
``tickstream_child_restarts_total{child}`` on the run's metrics endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from cli.parent_death import PARENT_PID_ENV
from cli.run_control import RunFailed
from tickstream import metrics
from tickstream.settings import Settings, default_of, flag

log = logging.getLogger("cli.runner")


def child_command(subcommand: str, settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of a `tickstream SUBCOMMAND` child that builds ``settings``.

    Every setting travels as its TICKSTREAM_* variable (``Settings.to_env``), so there is
    no list of names to keep in step with the dataclass. click reads an empty variable as
    unset, though: a setting emptied on purpose (``--sync-groups ''``) also goes as a flag,
    which the child has (sections only on their own command, `tickstream gateway`).
    """
    argv = [sys.executable, "-m", "cli", subcommand]
    for name, value in settings.flat().items():
        section = name.partition(".")[0] if "." in name else None
        if value == "" and default_of(name) != "" and section in (None, subcommand):
            argv.append(f"{flag(name)}=")
    return argv, {**os.environ, **settings.to_env()}


def processor_metrics_port(settings: Settings, index: int = 0) -> int:
    """Processor ``index`` (from 0) serves its metrics on ``metrics_port + 1 + index``:
    the run's own endpoint keeps ``metrics_port``, and each worker needs a port of its own."""
    return settings.metrics_port + 1 + index if settings.metrics_port else 0


def processor_command(settings: Settings, index: int = 0) -> tuple[list[str], dict[str, str]]:
    """The child process running Faust worker ``index``; its metrics on a port of its own."""
    port = processor_metrics_port(settings, index)
    return child_command("process", settings.replace(metrics_port=port))


def gateway_command(settings: Settings, token: str) -> tuple[list[str], dict[str, str]]:
    """The child process serving the desk feed and the live board for this run's namespace."""
    return child_command(
        "gateway", settings.replace(gateway=settings.gateway.replace(tokens=token))
    )


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    first_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    # a child up this long had a real run: its next exit starts the count of quick ones anew
    stable_after_s: float = 60.0
    give_up_after: int = 5  # quick exits in a row
    # an exit code and an ``Error:`` line this soon after the start: it refused to start.
    # Shorter than the 30 s a child waits for a broker at start, so that a broker away
    # (which may come back) reads as a death to restart, not as a setting to fix.
    refusal_window_s: float = 20.0
    stop_timeout_s: float = 30.0  # after SIGTERM, then SIGKILL


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


# the gateway names its settings as its own command does (--tls-cert); `tickstream run`
# spells them with the section's prefix (--gateway-tls-cert); the variable is the same
_SECTION_FLAG = re.compile(r"--(?!gateway-)([a-z0-9-]+) / TICKSTREAM_GATEWAY_")


def _as_run_spells(line: str) -> str:
    return _SECTION_FLAG.sub(r"--gateway-\1 / TICKSTREAM_GATEWAY_", line)


class Child:
    """One supervised child: started, watched, started again, stopped.

    Its standard error goes through the run (a thread relays it line by line) so that
    the run knows the ``Error:`` line a refusing child ends with.
    """

    def __init__(
        self,
        name: str,
        label: str,
        command: tuple[list[str], dict[str, str]],
        policy: RestartPolicy,
        out: IO[str] | None = None,
    ) -> None:
        self.name = name  # as the run's lines say it: "the stream processor"
        self.label = label  # the metric's child label: processor-0, gateway
        self.argv, self.env = command
        self.policy = policy
        self.out = out
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.error_line = ""
        self.restarts = 0
        self.quick_exits = 0
        self.restart_at: float | None = None  # waiting out its backoff
        self._relay: threading.Thread | None = None
        metrics.CHILD_RESTARTS.labels(label)  # a series at 0 from the start, for rate()

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def start(self) -> None:
        """Start it (called from the run's main thread: the kernel ties a child's death
        signal to the thread that forked it, see cli/parent_death.py)."""
        env = {**self.env, PARENT_PID_ENV: str(os.getpid())}
        self.error_line = ""
        self.popen = subprocess.Popen(
            self.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches the run only; the run stops it
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        assert self.popen.stderr is not None
        self._relay = threading.Thread(
            target=self._relay_lines,
            args=(self.popen.stderr,),
            name=f"{self.label} stderr",
            daemon=True,
        )
        self._relay.start()

    def _relay_lines(self, pipe: IO[bytes]) -> None:
        out = self.out or sys.stderr
        with pipe:
            for raw in iter(pipe.readline, b""):
                line = raw.decode(errors="replace")
                if line.startswith("Error:"):
                    self.error_line = line.removeprefix("Error:").strip()
                try:
                    out.write(line)
                    out.flush()
                except (OSError, ValueError):  # the run's stderr closed: keep draining
                    pass

    def check(self, now: float) -> None:
        """Start it again when its backoff is over; notice an exit. RunFailed when a
        restart would not help (it refused to start, or keeps dying at once)."""
        if self.popen is None:
            if self.restart_at is not None and now >= self.restart_at:
                self.start()
                self.restarts += 1
                metrics.CHILD_RESTARTS.labels(self.label).inc()
                log.warning(
                    "%s started again (pid %d, restart %d)", self.name, self.pid, self.restarts
                )
            return
        code = self.popen.poll()
        if code is None:
            return
        pid, uptime = self.popen.pid, now - self.started_at
        if self._relay is not None:  # its last line (the Error: one) is read by now
            self._relay.join(timeout=2.0)
        self.popen = None
        exit_ = describe_exit(code)
        if code > 0 and self.error_line and uptime < self.policy.refusal_window_s:
            raise RunFailed(f"{self.name} could not start: {_as_run_spells(self.error_line)}")
        self.quick_exits = self.quick_exits + 1 if uptime < self.policy.stable_after_s else 0
        if self.quick_exits >= self.policy.give_up_after:
            last = f"; its last error: {self.error_line}" if self.error_line else ""
            raise RunFailed(
                f"{self.name} stopped {self.quick_exits} times in a row, each within "
                f"{self.policy.stable_after_s:.0f}s of its start (the last time it {exit_}"
                f"{last}); not starting it again (see its log above)"
            )
        backoff = self.policy.first_backoff_s * 2 ** max(0, self.quick_exits - 1)
        delay = min(self.policy.max_backoff_s, backoff)
        self.restart_at = now + delay
        log.warning(
            "%s (pid %d) %s after %.1fs; starting it again in %.1fs",
            self.name,
            pid,
            exit_,
            uptime,
            delay,
        )

    def terminate(self) -> None:
        self.restart_at = None
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def wait_stopped(self) -> None:
        if self.popen is None:
            return
        try:
            self.popen.wait(timeout=self.policy.stop_timeout_s)
        except subprocess.TimeoutExpired:
            limit = self.policy.stop_timeout_s
            log.warning("%s did not stop within %.0fs of SIGTERM: killing it", self.name, limit)
            self.popen.kill()
            self.popen.wait()
        if self._relay is not None:
            self._relay.join(timeout=2.0)


class Children:
    """The run's children under supervision: started together, watched while the run
    lasts, stopped together (and never started again once stopping)."""

    def __init__(self, policy: RestartPolicy | None = None) -> None:
        self.policy = policy or RestartPolicy()
        self.gateway: Child | None = None
        self.processors: list[Child] = []
        self.stopping = False

    def __iter__(self) -> Iterator[Child]:
        if self.gateway is not None:
            yield self.gateway
        yield from self.processors

    def start_gateway(self, command: tuple[list[str], dict[str, str]]) -> Child:
        self.gateway = Child("the gateway", "gateway", command, self.policy)
        self.gateway.start()
        return self.gateway

    def start_processors(self, commands: list[tuple[list[str], dict[str, str]]]) -> None:
        for index, command in enumerate(commands):
            name = "the stream processor"
            if len(commands) > 1:  # numbered from 0, as their metrics ports and labels are
                name = f"stream processor {index}"
            child = Child(name, f"processor-{index}", command, self.policy)
            child.start()
            self.processors.append(child)

    def check(self) -> None:
        if self.stopping:
            return
        now = time.monotonic()
        for child in self:
            child.check(now)

    async def watch(self, on_failure: Callable[[RunFailed], None], every_s: float = 0.2) -> None:
        """Check the children until cancelled; a child given up on goes to ``on_failure``."""
        while not self.stopping:
            try:
                self.check()
            except RunFailed as exc:
                on_failure(exc)
                return
            except Exception as exc:  # a restart that cannot even fork: no use going on
                on_failure(RunFailed(f"could not supervise the run's children: {exc}"))
                return
            await asyncio.sleep(every_s)

    def stop(self) -> None:
        """SIGTERM to all at once (the gateway closes its clients meanwhile), then wait."""
        self.stopping = True
        children = list(self)
        for child in children:
            child.terminate()
        for child in children:
            child.wait_stopped()
