"""A child of `tickstream run` dies with the run, however the run ends.

A run killed with SIGKILL (the OOM killer, ``kill -9``, a CI runner's timeout) gets no
chance to stop its children. Left running, the stream processor and the gateway keep
their ports, their consumer group membership and their Kafka connections, and the next
`tickstream run` fails on a port they hold. So the child asks the kernel to kill it when
its parent goes (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``).

Why here, in the child, and not in a ``preexec_fn`` of the parent's ``Popen``: the run
has threads when it starts (and restarts) children (the Prometheus server, chDB's
executor, the ClickHouse HTTP interface, the children's log relays), and Python runs a
``preexec_fn`` between fork and exec, where a thread-holding parent can deadlock the
child; without it ``Popen`` also keeps its fast spawn path. The price is a window
between the fork and this call, closed by comparing the parent with the one the run
named: a parent already gone means exit at once.

Why SIGKILL and not SIGTERM: nobody is left to escalate a SIGTERM that a child does not
act on (a worker waiting for a broker that went away too), and both children are built
to be killed at any point (the processor resumes exactly from its state topic; the
gateway keeps no state).

Elsewhere than Linux a thread watches the parent's pid instead (a second's delay).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PARENT_PID_ENV = "_TICKSTREAM_PARENT_PID"  # not a setting: no TICKSTREAM_ prefix
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """If `tickstream run` started this process, end it when the run's process ends.

    The variable is removed at once, so that a process this one starts never takes this
    one's parent for its own.
    """
    named = os.environ.pop(PARENT_PID_ENV, "")
    if not named.isdigit():
        return
    parent = int(named)
    if not _kernel_kills_orphan() and sys.platform != "win32":
        threading.Thread(target=_watch, args=(parent,), name="parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the run died before the kernel was asked
        os.kill(os.getpid(), signal.SIGKILL)


def _kernel_kills_orphan() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGKILL)
