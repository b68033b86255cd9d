"""The processor's Faust worker keeps the command's log filters when it sets up logging."""

from __future__ import annotations

import logging

from cli.main import _quiet_kafka_start_up
from processors.app import create_app
from processors.config import analytics_config
from processors.worker import _Worker
from tickstream.settings import Settings


def test_faust_logging_setup_keeps_the_start_up_noise_filter(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = logging.root.handlers[:]
    command_handler = logging.StreamHandler()
    command_handler.addFilter(_quiet_kafka_start_up)
    logging.root.handlers = [command_handler]
    try:
        settings = Settings(namespace="logfilter", metrics_port=0)
        app = create_app(settings, analytics_config(settings, {}))
        worker = _Worker(app, loglevel="warn", quiet=True, redirect_stdouts=False)
        faust_handler = logging.StreamHandler()  # what Faust's set-up puts in its place
        logging.root.handlers = [faust_handler]
        worker.on_setup_root_logger(logging.root, logging.WARNING)
        noise = logging.LogRecord(
            "aiokafka.consumer.group_coordinator",
            logging.ERROR,
            __file__,
            1,
            "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError",
            None,
            None,
        )
        other = logging.LogRecord(
            "aiokafka.consumer", logging.ERROR, __file__, 1, "a real failure", None, None
        )
        assert not faust_handler.filter(noise)
        assert faust_handler.filter(other)
    finally:
        logging.root.handlers = before
