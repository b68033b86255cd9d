"""The local single-node broker: a thin wrapper around scripts/kafka-local.sh."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "kafka-local.sh"


def reachable(bootstrap: str, timeout_s: float = 1.0) -> bool:
    """True when the first bootstrap server accepts a TCP connection."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def is_loopback(bootstrap: str) -> bool:
    host = bootstrap.split(",")[0].rpartition(":")[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def broker(action: str, port: int, state_dir: Path | None = None, check: bool = True) -> int:
    """Run ``kafka-local.sh up|down|status|fetch`` for the broker on ``port``."""
    env = dict(os.environ, KAFKA_PORT=str(port))
    if state_dir is not None:
        env["KAFKA_DIR"] = str(state_dir)
    proc = subprocess.run(["bash", str(SCRIPT), action], env=env, check=False)
    if check and proc.returncode not in (0, 3):
        raise RuntimeError(f"kafka-local.sh {action} failed with exit code {proc.returncode}")
    return proc.returncode
