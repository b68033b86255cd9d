from __future__ import annotations

import socket

import pytest

from tickstream import metrics
from tickstream.settings import ConfigError


def test_a_busy_metrics_port_names_its_flag() -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match="--metrics-port / TICKSTREAM_METRICS_PORT"):
            metrics.serve_metrics(port, "sink")
