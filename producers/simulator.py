"""A seeded market simulator: correlated, fat-tailed, asynchronously ticking assets.

Model: every asset's log mid-price follows one correlated diffusion in event
time (volatility ``vol_annual``, innovations multivariate Student-t with
``tail_dof`` degrees of freedom, scaled to unit variance, plus rare common
jumps). Each asset ticks at its own Poisson rate; a tick observes the current
mid of its asset and quotes a random spread around it. Because all assets move
together between ticks, returns sampled on a common grid show the configured
correlation (sampling tick-to-tick would show less: the Epps effect).

Two ways to run it:

* ``generate(config)`` — synchronous, as fast as possible, event times from a
  simulated clock starting at ``start_ms`` (benchmarks, tests, bulk loads);
* ``simulate(config)`` — async; with ``rate_per_s == 0`` the same as
  ``generate``, with ``rate_per_s > 0`` a live-like feed: the simulated clock
  starts at ``now_ms()``, arrival rates are scaled to ``rate_per_s`` ticks per
  second in total and each tick is released when the wall clock reaches its
  event time.

Same seed, same ticks (prices, sizes, seqs and event-time offsets; only
``recv_ms`` comes from the clock).

Each default instrument also comes with a history (``AssetHistory``: its all-time high
and low and the first crossings of its round-number levels), which `tickstream run`
hands the processor as record seeds (``record_seeds``). A market the processor knew
nothing of would make every small new high of its first minutes an "all-time high".
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from producers.records import RawTick, wall_ms
from tickstream.timestamps import parse_ts_ms

SOURCE = "simulator"
SECONDS_PER_YEAR = 365.25 * 86_400
DEFAULT_START_MS = 1_769_385_600_000  # 2026-01-26T00:00:00Z: gold near 5000, silver near 107
_YIELD_EVERY = 1_000  # fast mode: let the event loop breathe this often


Crossing = tuple[float, float, str]
"""(step, level, ISO-8601 UTC time): the first crossing of a level of a step's grid."""


@dataclass(frozen=True, slots=True)
class AssetHistory:
    """What is known of an instrument before the simulation starts: its record seed.

    Must agree with the starting price (low <= price <= high), or the first tick would
    break a record the history says was never there.
    """

    ath: float
    ath_ts: str  # ISO-8601 UTC
    atl: float
    atl_ts: str
    first_up: tuple[Crossing, ...] = ()
    first_down: tuple[Crossing, ...] = ()

    def times_ms(self) -> list[int]:
        crossings = (*self.first_up, *self.first_down)
        return [parse_ts_ms(t) for t in (self.ath_ts, self.atl_ts, *(c[2] for c in crossings))]

    def seed(self) -> dict[str, Any]:
        """In the format of a --record-seeds file (processors/seeds.py)."""
        return {
            "ath": self.ath,
            "ath_ts": self.ath_ts,
            "atl": self.atl,
            "atl_ts": self.atl_ts,
            "first_up": [list(c) for c in self.first_up],
            "first_down": [list(c) for c in self.first_down],
        }


# Where the worked example's day (examples/gold_silver_2026-01-26.csv, with its seeds
# examples/record-seeds.json) leaves gold and silver: the simulated market starts at those
# prices, so it takes over their history as of the end of that day.
GOLD_HISTORY = AssetHistory(
    ath=5051.91,
    ath_ts="2026-01-26T06:53:51.525Z",
    atl=252.80,
    atl_ts="1999-07-20T00:00:00Z",
    first_up=(
        (100.0, 4900.0, "2026-01-22T09:30:00Z"),
        (100.0, 5000.0, "2026-01-26T02:54:47.209Z"),
        (1000.0, 4000.0, "2025-10-08T07:12:00Z"),
        (1000.0, 5000.0, "2026-01-26T02:54:47.209Z"),
    ),
    first_down=(
        (100.0, 5000.0, "2026-01-26T03:19:04.450Z"),
        (1000.0, 5000.0, "2026-01-26T03:19:04.450Z"),
    ),
)
SILVER_HISTORY = AssetHistory(
    ath=107.353,
    ath_ts="2026-01-26T07:38:01.674Z",
    atl=3.55,
    atl_ts="1993-02-26T00:00:00Z",
    first_up=(
        (1.0, 103.0, "2026-01-23T14:20:00Z"),
        (1.0, 104.0, "2026-01-26T01:26:29.783Z"),
        (1.0, 105.0, "2026-01-26T03:02:58.770Z"),
        (1.0, 106.0, "2026-01-26T05:14:43.400Z"),
        (1.0, 107.0, "2026-01-26T06:50:38.092Z"),
        (10.0, 100.0, "2026-01-21T02:15:00Z"),
    ),
    first_down=(
        (1.0, 104.0, "2026-01-26T01:35:17.804Z"),
        (1.0, 105.0, "2026-01-26T03:07:56.744Z"),
        (1.0, 107.0, "2026-01-26T06:58:11.119Z"),
    ),
)


@dataclass(frozen=True, slots=True)
class AssetSpec:
    """One simulated instrument."""

    symbol: str
    price: float  # starting mid
    vol_annual: float  # annualised volatility of the diffusion (jumps come on top)
    ticks_per_s: float  # mean tick arrival rate, in event time
    spread_bps: float  # mean bid/ask spread, basis points of mid
    decimals: int = 2  # price tick size 10**-decimals
    mean_size: float = 1.0  # mean traded size (exponential)
    history: AssetHistory | None = None  # its record seed; None: a market without a past


DEFAULT_ASSETS = (
    AssetSpec("XAU", 5000.0, 0.25, 4.0, 0.6, 2, 5.0, GOLD_HISTORY),
    AssetSpec("XAG", 107.0, 0.45, 2.5, 3.0, 3, 50.0, SILVER_HISTORY),
)


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """What to simulate and how fast; defaults: gold and silver on 26 January 2026."""

    assets: tuple[AssetSpec, ...] = DEFAULT_ASSETS
    correlation: float = 0.8  # between every pair of assets ...
    correlation_matrix: Sequence[Sequence[float]] | None = None  # ... unless given in full
    tail_dof: float = 4.0  # Student-t degrees of freedom (> 2); math.inf = Gaussian
    jumps_per_hour: float = 0.1  # rate of common jumps, event time
    jump_std_pct: float = 0.3  # jump size (log-return std, percent), clipped at 3 std
    seed: int | None = 42  # None = fresh entropy each run
    start_ms: int = DEFAULT_START_MS  # simulated clock start when rate_per_s == 0
    rate_per_s: float = 0.0  # 0 = as fast as possible; > 0 = paced, ticks per wall second
    count: int | None = None  # stop after this many ticks (None = never)
    venue: str = "SIM"
    source: str = SOURCE
    _chol: tuple[tuple[float, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.assets:
            raise ValueError("at least one asset is needed")
        if len({a.symbol for a in self.assets}) != len(self.assets):
            raise ValueError("asset symbols must be distinct")
        for a in self.assets:
            if a.price <= 0 or a.vol_annual < 0 or a.ticks_per_s <= 0 or a.spread_bps < 0:
                raise ValueError(f"{a.symbol}: need price > 0, vol >= 0, ticks_per_s > 0: {a}")
            history = a.history
            if history is not None and not history.atl <= a.price <= history.ath:
                raise ValueError(
                    f"{a.symbol}: the starting price {a.price} is outside its history's "
                    f"all-time range [{history.atl}, {history.ath}]"
                )
        if not self.tail_dof > 2:
            raise ValueError(f"tail_dof must be > 2 (finite variance), got {self.tail_dof}")
        if self.rate_per_s < 0 or (self.count is not None and self.count < 0):
            raise ValueError("rate_per_s and count must be >= 0")
        n = len(self.assets)
        matrix = self.correlation_matrix or [
            [1.0 if i == j else self.correlation for j in range(n)] for i in range(n)
        ]
        object.__setattr__(self, "_chol", _cholesky(matrix, n))

    @property
    def cholesky(self) -> tuple[tuple[float, ...], ...]:
        return self._chol


def _cholesky(matrix: Sequence[Sequence[float]], n: int) -> tuple[tuple[float, ...], ...]:
    """Lower-triangular L with L·Lᵀ = matrix; refuses matrices that are not correlations."""
    if len(matrix) != n or any(len(row) != n for row in matrix):
        raise ValueError(f"correlation matrix must be {n}x{n}")
    for i in range(n):
        if matrix[i][i] != 1.0 or any(matrix[i][j] != matrix[j][i] for j in range(n)):
            raise ValueError("correlation matrix must be symmetric with a unit diagonal")
    low = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1):
            s = matrix[i][j] - sum(low[i][k] * low[j][k] for k in range(j))
            if i == j:
                if s <= 0:
                    raise ValueError(f"correlation matrix is not positive definite: {matrix}")
                low[i][j] = math.sqrt(s)
            else:
                low[i][j] = s / low[j][j]
    return tuple(tuple(row) for row in low)


class Market:
    """The simulation state; ``step()`` advances to the next tick of some asset."""

    def __init__(self, config: SimulatorConfig, rate_scale: float = 1.0) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.assets = config.assets
        self.log_mid = [math.log(a.price) for a in config.assets]
        rates = [a.ticks_per_s * rate_scale for a in config.assets]
        self.total_rate = sum(rates)
        self.cum_rates = [sum(rates[: i + 1]) for i in range(len(rates))]
        self.seq = [0] * len(config.assets)
        self.t_s = 0.0  # simulated seconds since start
        nu = config.tail_dof
        self._t_scale = 1.0 if math.isinf(nu) else math.sqrt((nu - 2) / nu)
        self._vol = [a.vol_annual / math.sqrt(SECONDS_PER_YEAR) for a in config.assets]

    def _correlated(self) -> list[float]:
        g = [self.rng.gauss(0.0, 1.0) for _ in self.assets]
        return [
            sum(row[k] * g[k] for k in range(i + 1)) for i, row in enumerate(self.config.cholesky)
        ]

    def _advance(self, dt_s: float) -> None:
        cfg = self.config
        z = self._correlated()
        if not math.isinf(cfg.tail_dof):  # multivariate t: one shared chi-square keeps correlation
            w = self.rng.gammavariate(cfg.tail_dof / 2, 2.0)
            factor = self._t_scale * math.sqrt(cfg.tail_dof / w)
            z = [x * factor for x in z]
        root_dt = math.sqrt(dt_s)
        for i, vol in enumerate(self._vol):
            self.log_mid[i] += vol * root_dt * z[i] - 0.5 * vol * vol * dt_s
        if cfg.jumps_per_hour > 0 and self.rng.random() < -math.expm1(
            -cfg.jumps_per_hour * dt_s / 3600
        ):
            std = cfg.jump_std_pct / 100
            for i, x in enumerate(self._correlated()):
                self.log_mid[i] += std * max(-3.0, min(3.0, x))

    def step(self) -> tuple[float, dict[str, Any]]:
        """Advance to the next tick; returns (event seconds since start, tick fields)."""
        rng = self.rng
        dt_s = rng.expovariate(self.total_rate)
        self.t_s += dt_s
        self._advance(dt_s)
        pick = rng.random() * self.total_rate
        i = next((k for k, c in enumerate(self.cum_rates) if pick < c), len(self.cum_rates) - 1)
        asset = self.assets[i]
        mid = math.exp(self.log_mid[i])
        half = mid * asset.spread_bps / 20_000 * (0.5 + rng.random())
        self.seq[i] += 1
        fields = {
            "symbol": asset.symbol,
            "ts": 0,  # filled in by the caller, which knows the clock
            "price": round(mid, asset.decimals),
            "bid": round(mid - half, asset.decimals),
            "ask": round(mid + half, asset.decimals),
            "size": max(0.01, round(rng.expovariate(1 / asset.mean_size), 2)),
            "venue": self.config.venue,
            "seq": self.seq[i],
        }
        return self.t_s, fields


def _raw(fields: dict[str, Any], source: str, n: int, recv_ms: int) -> RawTick:
    return RawTick(orjson.dumps(fields).decode(), source, f"n={n}", recv_ms, fields)


def generate(
    config: SimulatorConfig,
    now_ms: Callable[[], int] = wall_ms,
    start_ms: int | None = None,
    rate_scale: float = 1.0,
) -> Iterator[RawTick]:
    """Ticks as fast as the caller pulls them, event time from ``start_ms`` (default config's)."""
    market = Market(config, rate_scale)
    origin_ms = config.start_ms if start_ms is None else start_ms
    n = 0
    while config.count is None or n < config.count:
        t_s, fields = market.step()
        fields["ts"] = origin_ms + int(t_s * 1000)
        yield _raw(fields, config.source, n, now_ms())
        n += 1


async def simulate(
    config: SimulatorConfig, now_ms: Callable[[], int] = wall_ms
) -> AsyncIterator[RawTick]:
    """The simulator as a source: fast from ``start_ms``, or paced in wall-clock time."""
    if config.rate_per_s <= 0:
        for n, raw in enumerate(generate(config, now_ms)):
            yield raw
            if n % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)
        return
    scale = config.rate_per_s / sum(a.ticks_per_s for a in config.assets)
    for n, raw in enumerate(generate(config, now_ms, start_ms=now_ms(), rate_scale=scale)):
        assert raw.fields is not None
        wait_ms = raw.fields["ts"] - now_ms()
        if wait_ms > 0:
            await asyncio.sleep(wait_ms / 1000)
        elif n % _YIELD_EVERY == _YIELD_EVERY - 1:  # behind (a rate above what the CPU does):
            await asyncio.sleep(0)  # still let the event loop breathe
        yield RawTick(raw.raw, raw.source, raw.position, now_ms(), raw.fields)


def record_seeds(config: SimulatorConfig, now_ms: int) -> dict[str, dict[str, Any]]:
    """The record seeds of ``simulate(config)`` started at ``now_ms``, by symbol (the format
    of a --record-seeds file): the histories of its instruments that lie wholly before the
    simulation's first tick.

    A history ending after that does not apply: the unpaced simulator starts at
    ``start_ms`` (26 January 2026, midnight), before the high that closed that day.
    """
    start_ms = now_ms if config.rate_per_s > 0 else config.start_ms
    return {
        a.symbol: a.history.seed()
        for a in config.assets
        if a.history is not None and max(a.history.times_ms()) < start_ms
    }
