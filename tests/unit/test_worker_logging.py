"""The processor's Faust worker keeps the command's log filters when it sets up logging,
and a broker lost while it starts reaches the user in one line, without a traceback."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest
from aiokafka.errors import KafkaConnectionError

from cli.kafka_log import quiet_kafka_start_up
from processors.app import create_app
from processors.config import analytics_config
from processors.fetching import _ConsumerThread, _InLoop
from processors.worker import _Worker
from tickstream.settings import Settings


def test_faust_logging_setup_keeps_the_start_up_noise_filter(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = logging.root.handlers[:]
    command_handler = logging.StreamHandler()
    command_handler.addFilter(quiet_kafka_start_up)
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
        lost, failed = (
            record_with(KafkaConnectionError("Unable to bootstrap")),
            record_with(ValueError("a bug")),
        )
        assert faust_handler.filter(lost) and faust_handler.filter(failed)
        lost_text, failed_text = faust_handler.format(lost), faust_handler.format(failed)
        assert "Unable to bootstrap" in lost_text and "Traceback" not in lost_text
        assert "Traceback" in failed_text  # any other crash keeps its traceback
    finally:
        logging.root.handlers = before


def record_with(exc: BaseException) -> logging.LogRecord:
    """A crash report as mode logs it: the error with its traceback attached."""
    try:
        raise exc
    except BaseException:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        "mode.threads", logging.ERROR, __file__, 1, f"Crashed reason={exc!r}", None, exc_info
    )


def test_a_consumer_that_fails_to_start_leaves_no_stray_task_error() -> None:
    """The consumer's service runs as a task of the app's loop: its failure is reported where
    it is started (the worker's start), so the task itself ends quietly, shut down."""

    class Failing:
        shut_down = False

        async def _serve(self) -> None:
            raise KafkaConnectionError("Unable to bootstrap")

        def set_shutdown(self) -> None:
            self.shut_down = True

    async def run() -> tuple[bool, BaseException | None, bool]:
        service = Failing()
        worker = _InLoop(service)  # type: ignore[arg-type]
        worker.start()
        assert worker.is_alive()
        task = worker._task
        assert task is not None
        await asyncio.wait({task})
        return service.shut_down, task.exception(), worker.is_alive()

    assert asyncio.run(run()) == (True, None, False)


def test_the_consumer_runs_in_the_apps_loop(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(namespace="inloop", metrics_port=0)

    async def build() -> bool:
        app = create_app(settings, analytics_config(settings, {}))
        thread = app.consumer._new_consumer_thread()
        return thread.thread_loop is asyncio.get_running_loop() and thread.Worker is _InLoop

    assert asyncio.run(build())


@pytest.mark.parametrize(
    ("exc", "printed"), [(KafkaConnectionError("Unable to bootstrap"), False), (ValueError(), True)]
)
def test_consumer_thread_crash_lost_to_the_broker_prints_no_traceback(
    capfd: pytest.CaptureFixture[str], exc: Exception, printed: bool
) -> None:
    thread = object.__new__(_ConsumerThread)  # on_crash uses nothing of a started thread
    try:
        raise exc
    except Exception:
        thread.on_crash("{0!r} crashed: {1!r}", "_ConsumerThread", exc)  # as mode calls it
    assert ("Traceback" in capfd.readouterr().err) is printed
