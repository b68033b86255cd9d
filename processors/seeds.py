"""Known record history, so a fresh processor does not call its first tick a record.

From a JSON file (hand-written for a new deployment) or from what ClickHouse
already holds (the same SQL on chDB and on a server). File format::

    {"XAU": {"ath": 5051.9, "ath_ts": "2026-01-26T07:41:00Z", "atl": 1045.0,
             "atl_ts": "2015-12-17T00:00:00Z",
             "first_up": [[1000, 4000, "2025-10-08T00:00:00Z"]],
             "first_down": []}}

Timestamps are ISO-8601 or epoch milliseconds; ``first_up``/``first_down`` list
``[step, level, ts]`` of the first crossing of a level in that direction, and the
optional ``first_up_runs``/``first_down_runs`` list ``[step, from_level, level, ts]``:
every level of the step from one to the other first crossed at ts (one tick that jumped
across them, a record_break row's span), kept as one entry however many levels it spans.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError

from processors.kernels.records import RecordSeed, Run
from tickstream.clickhouse import ClickHouseUnavailable
from tickstream.redact import MASK, redact_url
from tickstream.timestamps import parse_ts_ms

log = logging.getLogger(__name__)


class SeedError(ValueError):
    pass


def seeds_from_file(path: Path) -> dict[str, RecordSeed]:
    try:
        doc = orjson.loads(path.read_bytes())
        return {symbol: _seed(entry) for symbol, entry in doc.items()}
    except Exception as exc:  # any shape or value problem: name the file
        raise SeedError(f"{path}: not a record seed file ({exc})") from exc


def _seed(entry: dict[str, Any]) -> RecordSeed:
    def crossings(key: str) -> dict[tuple[float, float], int]:
        return {(float(s), float(lv)): parse_ts_ms(ts) for s, lv, ts in entry.get(key, [])}

    def runs(key: str) -> tuple[Run, ...]:
        return tuple(
            (float(s), float(a), float(b), parse_ts_ms(ts)) for s, a, b, ts in entry.get(key, [])
        )

    return RecordSeed(
        ath=float(entry["ath"]),
        ath_ts_ms=parse_ts_ms(entry["ath_ts"]),
        atl=float(entry["atl"]),
        atl_ts_ms=parse_ts_ms(entry["atl_ts"]),
        first_crossings=crossings("first_up"),
        first_crossings_down=crossings("first_down"),
        first_runs=runs("first_up_runs"),
        first_runs_down=runs("first_down_runs"),
    )


def seeds_to_json(seeds: dict[str, RecordSeed]) -> bytes:
    """The seed file format; the span keys only where there are spans, so a file without
    any stays what older tickstream versions wrote and read."""
    doc: dict[str, dict[str, Any]] = {}
    for symbol, s in seeds.items():
        entry = doc[symbol] = {
            "ath": s.ath,
            "ath_ts": s.ath_ts_ms,
            "atl": s.atl,
            "atl_ts": s.atl_ts_ms,
            "first_up": [[st, lv, ts] for (st, lv), ts in sorted(s.first_crossings.items())],
            "first_down": [[st, lv, ts] for (st, lv), ts in sorted(s.first_crossings_down.items())],
        }
        for key, runs in (("first_up_runs", s.first_runs), ("first_down_runs", s.first_runs_down)):
            if runs:
                entry[key] = [list(run) for run in sorted(runs)]
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)


def seeds_from_clickhouse(
    client: Client, db: str, before_ts_ms: int | None = None
) -> dict[str, RecordSeed]:
    """Records and first crossings from what ClickHouse holds, as of ``before_ts_ms``.

    A replay is seeded with the history *before* its first tick: replaying the
    same file again then reproduces exactly the rows of the first replay instead
    of judging old ticks against records they set themselves. Extremes come from the
    daily record states (schema migration 5), which outlive raw ticks, so an expired
    all-time high is never called a new one.

    A tick that jumped across several levels left one row, of the furthest level; its
    ``from_level`` (schema migration 7) names the nearest, and every level in between was
    crossed by that tick too: the seed learns the whole span (as a run, whatever its
    length), or a level passed over would later be announced as crossed for the first
    time. Rows from before migration 7 (``from_level`` NULL) are single crossings.
    """
    before = (
        "" if before_ts_ms is None else f"AND ts < fromUnixTimestamp64Milli({int(before_ts_ms)})"
    )
    # whole days before the "as of" day from the daily record states (never expired),
    # that day's ticks up to "as of" from ticks (a replay's own day: not expired yet)
    if before_ts_ms is None:
        days, today = "", "AND 0"
    else:
        start = f"toDate(fromUnixTimestamp64Milli({int(before_ts_ms)}))"
        days, today = f"AND day < {start}", f"AND ts >= {start} {before}"
    extremes = client.query(
        f"""SELECT symbol, max(hi), toUnixTimestamp64Milli(argMin(hi_ts, (-hi, hi_ts))),
                   min(lo), toUnixTimestamp64Milli(argMin(lo_ts, (lo, lo_ts)))
            FROM (
                SELECT symbol, max(high) AS hi, argMinMerge(high_ts) AS hi_ts,
                       min(low) AS lo, argMinMerge(low_ts) AS lo_ts
                FROM {db}.records_1d_state WHERE 1 {days} GROUP BY symbol, day
                UNION ALL
                SELECT symbol, max(price), argMin(ts, (-price, ts)),
                       min(price), argMin(ts, (price, ts))
                FROM {db}.ticks FINAL WHERE 1 {today} GROUP BY symbol
            )
            GROUP BY symbol""",
    ).result_rows
    # a database the sink has not migrated to version 7 yet has no spans to give
    nearest = "ifNull(from_level, level)" if _has_from_level(client, db) else "level"
    crossings = client.query(
        f"""SELECT symbol, kind, step, {nearest} AS nearest, level,
                   toUnixTimestamp64Milli(min(ts))
            FROM {db}.record_breaks FINAL
            WHERE kind IN ('level_up', 'level_down') {before}
            GROUP BY symbol, kind, step, nearest, level""",
    ).result_rows
    up: dict[str, dict[tuple[float, float], int]] = {}
    down: dict[str, dict[tuple[float, float], int]] = {}
    up_runs: dict[str, list[Run]] = {}
    down_runs: dict[str, list[Run]] = {}
    for symbol, kind, step, from_level, level, ts in crossings:
        rising = kind == "level_up"
        if from_level == level:
            firsts = (up if rising else down).setdefault(symbol, {})
            firsts[(step, level)] = min(int(ts), firsts.get((step, level), int(ts)))
        else:
            runs = (up_runs if rising else down_runs).setdefault(symbol, [])
            runs.append((float(step), float(from_level), float(level), int(ts)))
    return {
        symbol: RecordSeed(
            hi,
            int(hi_ts),
            lo,
            int(lo_ts),
            up.get(symbol, {}),
            down.get(symbol, {}),
            first_runs=tuple(sorted(up_runs.get(symbol, ()))),
            first_runs_down=tuple(sorted(down_runs.get(symbol, ()))),
        )
        for symbol, hi, hi_ts, lo, lo_ts in extremes
    }


def _has_from_level(client: Client, db: str) -> bool:
    """Whether ``record_breaks`` has its ``from_level`` column (schema migration 7): a
    processor upgraded before its sink reads the older table as it is."""
    found = client.command(  # db is a checked identifier: it is in every query unquoted
        f"SELECT count() FROM system.columns WHERE database = '{db}' "
        "AND table = 'record_breaks' AND name = 'from_level'"
    )
    return bool(int(found or 0))


# --------------------------------------------------------------------------- waiting for it

SETTING = "--clickhouse-url / TICKSTREAM_CLICKHOUSE_URL"
# ClickHouse answered, and there is nothing to read yet: a first deployment
_NOTHING_YET = {60: "UNKNOWN_TABLE", 81: "UNKNOWN_DATABASE"}
# ClickHouse answered, and waiting will not change its answer
_REFUSED = {
    192: "UNKNOWN_USER",
    193: "WRONG_PASSWORD",
    194: "REQUIRED_PASSWORD",
    497: "ACCESS_DENIED",
    516: "AUTHENTICATION_FAILED",
}
# what clickhouse-connect and urllib3 log on every refused attempt: the waiting line says it
_ATTEMPT_NOISE = ("clickhouse_connect", "urllib3")


class _NotAnswering(Exception):
    """ClickHouse is not there yet (or its chDB directory is held): worth another try."""


def seeds_from_url(url: str, database: str, timeout_s: float = 10.0) -> dict[str, RecordSeed]:
    """One attempt: open the URL, read the seeds, close. A chDB directory that another
    process holds raises _NotAnswering before chDB is asked (it would print its own error)."""
    import clickhouse_connect

    kwargs: dict[str, Any] = {}
    if url.startswith("chdb:"):
        holder = _chdb_held(Path(url[len("chdb://") :]))
        if holder:
            raise _NotAnswering(holder)
    else:  # a server that accepts and never answers must not outlast the deadline
        kwargs = {"connect_timeout": timeout_s, "send_receive_timeout": max(timeout_s, 5.0)}
    try:
        client = clickhouse_connect.get_client(dsn=url, **kwargs)
    except OperationalError as exc:
        raise _NotAnswering(_short_reason(exc)) from None
    try:
        return seeds_from_clickhouse(client, database)
    finally:
        client.close()


def _chdb_held(path: Path) -> str | None:
    """Why chDB cannot open ``path`` now, if another process holds its lock (ClickHouse's
    ``status`` file, flock'ed by the process that has the directory open)."""
    try:
        fd = os.open(path / "status", os.O_RDONLY)
    except OSError:
        return None  # no directory or no lock file: nobody has it open
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return (
            "the chDB directory is open in another process (a running "
            "`tickstream run` or `tickstream sink`?)"
        )
    finally:
        os.close(fd)  # closing releases the probe's own lock at once
    return None


def _short_reason(exc: BaseException) -> str:
    """One line a person can read, out of clickhouse-connect's nested urllib3 errors."""
    text = str(exc)
    for pattern, reason in (
        (r"Connection refused", "connection refused"),
        (r"timed out|Timeout", "no answer (timed out)"),
        (r"Name or service not known|Temporary failure in name resolution", "unknown host"),
        (r"HTTP status (\d+)", None),
    ):
        found = re.search(pattern, text)
        if found:
            return reason or f"HTTP status {found[1]}"
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    found = re.search(r"(?:Code:|code:) ?(\d+)", str(exc))
    return int(found[1]) if found else None


def wait_for_seeds(
    url: str,
    database: str,
    wait_s: float,
    attempt: Callable[[str, str, float], dict[str, RecordSeed]] = seeds_from_url,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, RecordSeed]:
    """The seeds from ClickHouse once it answers, trying for up to ``wait_s`` seconds.

    Without them every record ClickHouse already knows would be announced again as new,
    so a ClickHouse that does not answer (yet) is waited for, saying so at once, and then
    is an error (ClickHouseUnavailable, naming the setting; the URL's password masked).
    ClickHouse answering "no such table or database" is a first start: no seeds, no wait.
    """
    shown = redact_url(url)
    chdb = url.startswith("chdb:")
    deadline = clock() + wait_s
    delay = 0.5
    waiting = False
    with _quiet(_ATTEMPT_NOISE):
        while True:
            left = deadline - clock()
            try:
                seeds = attempt(url, database, max(1.0, min(10.0, left)))
            except _NotAnswering as exc:
                reason = _masked(str(exc), url)
            except Exception as exc:
                code = _code(exc)
                reason = _masked(_short_reason(exc), url)
                if code in _NOTHING_YET:
                    log.info(
                        "no record seeds: ClickHouse at %s holds none yet (%s)",
                        shown,
                        _NOTHING_YET[code],
                    )
                    return {}
                if code in _REFUSED:
                    raise ClickHouseUnavailable(
                        f"{SETTING} {shown}: ClickHouse refuses to give the record seeds "
                        f"({_REFUSED[code]}); check the user and password"
                    ) from None
            else:
                if waiting:
                    log.info("ClickHouse at %s answers", shown)
                log.info("record seeds from ClickHouse: %s", ", ".join(seeds) or "none")
                return seeds
            left = deadline - clock()
            if left <= 0:
                remedy = "stop the process holding it" if chdb else "start ClickHouse"
                raise ClickHouseUnavailable(
                    f"{SETTING} {shown}: no answer in {wait_s:g} s ({reason}); the processor "
                    f"reads the records ClickHouse holds before it starts: {remedy}, or start "
                    "without them (--record-seeds FILE or --no-seed-from-clickhouse)"
                )
            if not waiting:
                waiting = True
                log.warning(
                    "waiting for ClickHouse at %s to read the records it holds: %s; "
                    "trying for up to %g s",
                    shown,
                    reason,
                    wait_s,
                )
            sleep(min(delay, left))
            delay = min(2 * delay, 5.0)


def _masked(text: str, url: str) -> str:
    password = urlsplit(url).password
    return text.replace(password, MASK) if password else text


@contextlib.contextmanager
def _quiet(names: tuple[str, ...]) -> Iterator[None]:
    """Leave out what these libraries log at each failed attempt, while waiting.

    A level, not a filter: their records come from child loggers, which inherit a level
    but not a filter.
    """
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
