"""Read-only mode: production's analyst role, enforced by the engine wherever chDB allows.

A query run here must behave as it does against the production server, and an analyst
must not be able to disturb the pipeline whose engine this is. So read-only (the default)
is ClickHouse's own ``readonly=1``, set on the request's connection, with the rest of
production's analyst profile (deploy/clickhouse/users.d/tickstream.xml): ``final=1``, a
memory cap and a run-time cap, the run time being the one setting a client may choose
(within bounds; Grafana sets it on every query). Settings a client sends as URL parameters
are applied after the lock, so the engine itself refuses any change, exactly as it does to
that analyst. Not ``readonly=2``: chDB lets ``INSERT INTO FUNCTION file(...)`` and the
``file`` table function through it (tested).

Three things chDB (clickhouse-local underneath) allows even at ``readonly=1``, unlike a
ClickHouse server, are refused here on the statement as the engine's own parser prints it
(``formatQuerySingleLine``): ``SELECT ... INTO OUTFILE`` (writes on this host; refused in
every mode, as a server refuses it over HTTP), the ``file()`` function (reads any file this
process can) and ``KILL QUERY`` (would stop the sink's inserts).

Read-write is the ``default`` user of a ClickHouse server: everything, for the sink's
``http://`` path.
"""

from __future__ import annotations

import re

from tickstream.chdb_http.messages import QueryError, Request

# deploy/clickhouse/users.d/tickstream.xml, profile tickstream_analyst: the role analysts and
# Grafana have on the production server, so a query behaves the same against both.
READ_ONLY_PROFILE = {"final": "1", "max_memory_usage": "4000000000", "max_execution_time": "120"}
MAX_EXECUTION_TIME_S = (1, 600)  # the profile's changeable_in_readonly bounds

# on the engine's canonical one-line print of the statement (formatQuerySingleLine)
_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE)
_FILE_FUNCTION = re.compile(r"\bfile\s*\(", re.IGNORECASE)
_KILL = re.compile(r"^KILL\b", re.IGNORECASE)


def refuse_outfile(canonical: str) -> None:
    """In every mode, as a ClickHouse server refuses it over HTTP."""
    if _OUTFILE.search(canonical):
        raise QueryError.of(
            486, "INTO_OUTFILE_NOT_ALLOWED", "INTO OUTFILE is not allowed over HTTP"
        )


def check_read_only(canonical: str) -> None:
    """What chDB runs at ``readonly=1`` and a ClickHouse server would not."""
    if _FILE_FUNCTION.search(canonical):
        raise QueryError.of(
            164, "READONLY", "the file() function reads this host's files: not in readonly mode"
        )
    if _KILL.match(canonical):
        raise QueryError.of(164, "READONLY", "KILL is not allowed in readonly mode")


def settings_to_apply(request: Request, writable: bool) -> list[tuple[str, str]]:
    """The SETs to run on the request's connection, in order: the request's settings, then
    (read-only) the profile and the lock first, so that the engine refuses any change."""
    settings = dict(request.settings)
    client_readonly = settings.pop("readonly", None)
    if writable:
        if request.get and client_readonly not in ("1", "2"):
            client_readonly = "2"  # a ClickHouse server runs GET requests read-only
        ordered = list(settings.items())
        if client_readonly is not None:
            ordered.append(("readonly", client_readonly))
        return ordered
    profile = dict(READ_ONLY_PROFILE)
    if "max_execution_time" in settings:
        profile["max_execution_time"] = _bounded_run_time(settings.pop("max_execution_time"))
    return [*profile.items(), ("readonly", "1"), *settings.items()]


def _bounded_run_time(value: str) -> str:
    low, high = MAX_EXECUTION_TIME_S
    try:
        seconds = float(value)
    except ValueError:
        raise QueryError.of(
            452, "SETTING_CONSTRAINT_VIOLATION", f"max_execution_time {value!r} is not a number"
        ) from None
    if not low <= seconds <= high:
        raise QueryError.of(
            452,
            "SETTING_CONSTRAINT_VIOLATION",
            f"Setting max_execution_time shouldn't be outside {low}..{high} in readonly mode",
        )
    return value
