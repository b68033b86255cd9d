"""``python -m bench NAME [ARGS]``: run bench/NAME.py as its own script, with one line for a
setting it cannot use (no broker at --kafka-bootstrap, say) instead of a traceback."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from tickstream.settings import ConfigError


def main() -> None:
    name, *args = sys.argv[1:]
    script = Path(__file__).resolve().parent / f"{name}.py"
    sys.argv = [str(script), *args]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except ConfigError as exc:
        sys.exit(f"Error: bad setting {exc}")


if __name__ == "__main__":
    main()
