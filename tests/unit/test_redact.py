from __future__ import annotations

import pytest

from tickstream.redact import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://writer:s3cret@clickhouse:8123", "http://writer:***@clickhouse:8123"),
        ("http://clickhouse:8123", "http://clickhouse:8123"),
        ("http://writer@clickhouse:8123/db", "http://writer@clickhouse:8123/db"),
        (
            "wss://feed.example/v1?apikey=ABC123&symbols=XAU,XAG&Token=t",
            "wss://feed.example/v1?apikey=***&symbols=XAU%2CXAG&Token=***",
        ),
        ("chdb:///data/chdb", "chdb:///data/chdb"),
    ],
)
def test_credentials_never_show(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url) and "ABC123" not in redact_url(url)
