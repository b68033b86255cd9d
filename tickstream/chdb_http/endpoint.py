"""How `tickstream query` finds the server of another process: a file in the chDB directory.

chDB locks its directory, so a second process cannot open it while a run holds it; it can
still read a file there. The owner writes its URL and credentials beside the data when it
starts serving and removes them when it stops; a reader checks that the writer still
lives, since a killed process leaves its file behind (and then the directory may be free).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote, urlsplit

from tickstream.chdb_http.auth import USER

ENDPOINT_FILE = "tickstream-http.json"  # in the chDB directory: how `tickstream query` finds us


def write_endpoint(chdb_path: Path, *, url: str, password: str, writable: bool) -> None:
    """Owner-only: the file holds the password (often a random one nobody typed)."""
    doc = {
        "url": url,
        "user": USER,
        "password": password,
        "pid": os.getpid(),
        "writable": writable,
    }
    target = chdb_path / ENDPOINT_FILE
    tmp = target.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(doc, out)
    os.replace(tmp, target)


def chdb_directory(clickhouse_url: str) -> Path:
    """The directory of a (normalized, absolute) ``chdb:///dir`` URL."""
    return Path(urlsplit(clickhouse_url).path)


def running_endpoint(clickhouse_url: str) -> str | None:
    """The ``http://`` URL, credentials included, of the server another live process runs
    over this chDB directory; None when there is none (or it is no longer running)."""
    if not clickhouse_url.startswith("chdb:"):
        return None
    try:
        doc = json.loads((chdb_directory(clickhouse_url) / ENDPOINT_FILE).read_text())
        pid = int(doc["pid"])
        url, user, password = urlsplit(str(doc["url"])), str(doc["user"]), str(doc["password"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid == os.getpid() or not _alive(pid):
        return None  # left behind by a killed process: the directory may well be free
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return f"{url.scheme}://{credentials}@{url.netloc}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True
