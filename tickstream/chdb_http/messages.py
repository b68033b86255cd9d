"""What passes between the HTTP side and the engine side, and errors as ClickHouse words them.

Clients branch on ClickHouse's error codes and statuses (clickhouse-connect retries some,
Grafana shows the text), so every refusal of ours, whether the engine's, the read-only
policy's or the HTTP layer's, is a ``QueryError`` with the code a ClickHouse server would
give and the status its HTTP interface would send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# a setting's or a format's name: anything else never reaches the engine's SQL
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CODE = re.compile(r"Code: (\d+)")
# ClickHouse's statuses for the errors a client is most likely to cause; the rest are 500
_STATUS = {516: 401, 62: 400, 73: 400, 115: 400, 36: 400, 457: 400, 27: 400, 60: 404, 81: 404}
_STATUS.update({164: 403, 452: 403, 497: 403, 486: 403})


class QueryError(Exception):
    """An error as ClickHouse reports it: a code, its name, a message, an HTTP status."""

    def __init__(self, code: int, text: str, status: int | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.status = status or _STATUS.get(code, 500)

    @classmethod
    def of(cls, code: int, name: str, message: str, status: int | None = None) -> QueryError:
        return cls(code, f"Code: {code}. DB::Exception: {message}. ({name})", status)

    @classmethod
    def from_engine(cls, exc: BaseException) -> QueryError:
        text = str(exc).strip()
        match = _CODE.search(text)
        return cls(int(match[1]) if match else 1000, text)


@dataclass
class Request:
    """One HTTP request, as the engine side needs it."""

    query_param: str | None
    body: bytes
    get: bool
    database: str | None = None
    default_format: str = "TabSeparated"
    settings: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    client_protocol_version: str = "0"


@dataclass
class Reply:
    body: bytes
    fmt: str | None  # the result's format; None: the statement has no result
    summary: dict[str, str]
