"""One user, ``default``, and a password: as a client of a ClickHouse server would log in.

chDB has no users of its own (``currentUser()`` is ``default``), and the server never
runs without a password (the endpoint file hands it to `tickstream query`), so the
credentials are checked here, in each of the three ways ClickHouse's HTTP interface takes
them: Basic auth, the ``X-ClickHouse-User``/``X-ClickHouse-Key`` headers, or the ``user``
and ``password`` URL parameters. The comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from contextlib import suppress
from email.message import Message

from tickstream.chdb_http.messages import QueryError

USER = "default"  # chDB's only user (currentUser()), and clickhouse-connect's default name


def authenticate(headers: Message, params: Mapping[str, str], expected_password: str) -> None:
    """Raises ClickHouse's AUTHENTICATION_FAILED unless the request is ``default`` with the
    password."""
    user, password = USER, ""
    header = headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        with suppress(binascii.Error, UnicodeDecodeError):
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
    elif "X-ClickHouse-User" in headers or "X-ClickHouse-Key" in headers:
        user = headers.get("X-ClickHouse-User") or USER
        password = headers.get("X-ClickHouse-Key") or ""
    elif "user" in params or "password" in params:
        user, password = params.get("user") or USER, params.get("password", "")
    good = hmac.compare_digest(password.encode(), expected_password.encode())
    if user != USER or not good:
        raise QueryError.of(
            516,
            "AUTHENTICATION_FAILED",
            f"{user}: Authentication failed: password is incorrect, or there is no user "
            "with such name",
        )
