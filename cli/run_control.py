"""How a `tickstream run` ends early: a signal, or a child it cannot keep running.

Both end it the same way, by cancelling what the run is doing, so that every ``finally``
on the way out runs (children stopped, the sink flushed, the broker it started stopped)
and the outcome is decided once, from the first reason recorded.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("cli.runner")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class RunFailed(RuntimeError):
    """The run cannot go on; its message is the one line the user reads after ``Error:``."""


class Stopper:
    """SIGINT, SIGTERM and SIGHUP, and a child given up on, as the cancellation of the run.

    Created first thing in the run, before a topic, a port or a child: a signal during
    start-up then stops the run through its ``finally`` blocks like one during the
    replay, where the default action would kill it with its children half started.
    The children run in sessions of their own, so a terminal's Ctrl-C reaches only the
    run, which stops them in order (and never mistakes their exit for a crash).
    """

    def __init__(self) -> None:
        self.reason: RunFailed | signal.Signals | None = None
        self._main = asyncio.current_task()
        self._work: asyncio.Future[int] | None = None
        self._settled = False  # the work is over: what comes now is the orderly stop
        self._loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            self._loop.add_signal_handler(sig, self._on_signal, sig)

    def close(self) -> None:
        for sig in STOP_SIGNALS:
            self._loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.reason is not None or self._settled:
            log.warning(
                "%s: the run is stopping already (SIGKILL ends it at once, its children with it)",
                sig.name,
            )
            return
        log.info("%s: stopping the run", sig.name)
        self.stop(sig)

    def fail(self, error: RunFailed) -> None:
        """A child that cannot be kept running ends the run with its error."""
        if self._settled:  # the run is stopping its children anyway
            log.warning("%s", error)
            return
        self.stop(error)

    def stop(self, reason: RunFailed | signal.Signals) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        work = self._work
        target = work if work is not None and not work.done() else self._main
        if target is not None:
            target.cancel()

    def caught(self, on_interrupt: Callable[[], int]) -> int:
        """After a CancelledError reached the run's own task: the run's exit code (a
        signal), its RunFailed raised, or the cancellation passed on when it is not ours."""
        if self.reason is None:
            raise asyncio.CancelledError
        if self._main is not None:
            self._main.uncancel()
        return self.outcome(on_interrupt)

    def outcome(self, on_interrupt: Callable[[], int]) -> int:
        self._settled = True
        if isinstance(self.reason, RunFailed):
            raise self.reason
        return on_interrupt()

    async def until_stopped(
        self, work: Coroutine[Any, Any, int], on_interrupt: Callable[[], int]
    ) -> int:
        """Await ``work``; a stop cancels it (not the run), then the code comes from
        ``on_interrupt`` (a signal) or the child's RunFailed is raised."""
        self._work = asyncio.ensure_future(work)
        try:
            return await self._work
        except asyncio.CancelledError:
            if self.reason is None:
                raise
            return self.outcome(on_interrupt)
        finally:
            self._work = None
            self._settled = True
