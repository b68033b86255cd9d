"""Which stops of the processor's Faust worker ``run_worker`` waits out as a lost broker.

A service of Faust's (its conductor asking for metadata) can crash of a refused connection
while the worker starts; CI caught the process exiting 1 of it, without a word.
"""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError, NodeNotReadyError

from processors.app import create_app
from processors.config import analytics_config
from processors.worker import _Worker
from tickstream.settings import Settings


@pytest.fixture
def worker(tmp_path, monkeypatch) -> _Worker:
    monkeypatch.chdir(tmp_path)
    settings = Settings(namespace="brokerloss", metrics_port=0)
    app = create_app(settings, analytics_config(settings, {}))
    return _Worker(app, loglevel="warn", quiet=True, redirect_stdouts=False)


def test_a_clean_stop_is_no_broker_loss(worker: _Worker) -> None:
    assert worker.lost_broker() is None


def test_a_service_crashed_of_the_broker_is_a_broker_loss(worker: _Worker) -> None:
    crash = NodeNotReadyError("Attempt to send a request to node which is not ready")
    worker.crash_reason = crash
    assert worker.lost_broker() is crash


def test_a_failed_start_is_a_broker_loss(worker: _Worker) -> None:
    lost = KafkaConnectionError("Unable to bootstrap")
    worker.broker_lost = lost
    assert worker.lost_broker() is lost


def test_any_other_crash_is_not(worker: _Worker) -> None:
    worker.crash_reason = ValueError("a bug")
    assert worker.lost_broker() is None
