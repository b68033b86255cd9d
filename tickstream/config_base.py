"""What every section of the settings shares: how a setting is named, and how it is wrong.

A separate module so that the gateway's section (gateway_settings.py) and the whole
(settings.py) spell flags, variables and errors the same way without importing each other.
"""

from __future__ import annotations

from pathlib import Path

ENV_PREFIX = "TICKSTREAM_"


class ConfigError(ValueError):
    """A setting is wrong; the message names it as flag and environment variable."""

    def __init__(self, name: str, problem: str) -> None:
        self.setting = name  # qualified: "namespace", "gateway.port"
        self.problem = problem
        super().__init__(f"{flag(name)} / {envvar(name)}: {problem}")


def flag(name: str) -> str:
    """``level_steps`` -> ``--level-steps``; ``gateway.tls_cert`` -> ``--tls-cert``.

    A section's settings are spelled as on the section's own command (`tickstream gateway`).
    """
    return "--" + name.rpartition(".")[2].replace("_", "-")


def envvar(name: str) -> str:
    """``gateway.port`` -> ``TICKSTREAM_GATEWAY_PORT``: one variable whatever the command."""
    return ENV_PREFIX + name.replace(".", "_").upper()


def check_file(name: str, path: str) -> None:
    if path and not Path(path).is_file():
        raise ConfigError(name, f"{path!r} is not a file")
