"""A seeded synthetic equity market: daily bars with realistic structure.

The generator is fully vectorised over instruments; only the GARCH recursion
walks the calendar (one numpy step per day for all instruments at once).

What makes it realistic:

* a trading calendar of weekdays minus seeded holidays (New Year, a
  multi-day spring festival, a few single days each year);
* log returns from a factor model: ``beta * market + sector + styles @ loadings
  + idiosyncratic``, every factor and every idiosyncratic series with GARCH(1, 1)
  variance and unit-variance Student-t innovations (fat tails, volatility
  clustering);
* a small, genuinely predictable component in the idiosyncratic return:
  short-term reversal of recent idiosyncratic moves plus weak medium-term
  momentum, so models trained on price features reach a modest positive IC;
* volume that co-moves with absolute returns and has persistent shocks;
* listings after the start, delistings before the end, and suspension
  episodes (rows absent); the price gap over a suspension shows on resumption;
* an adjustment ``factor`` that steps at rare corporate events (prices and
  volumes are stored adjusted, as in Qlib's data);
* on request, dirty data as real vendors deliver it: bad bars (zero, negative or
  missing prices, zero volume) and exact duplicate rows, planted from a random
  stream of their own so that the clean bars do not change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from taskroll.errors import DataError

BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume", "vwap", "factor")
"""Columns of every bar frame, in order."""


def _holidays(rng: np.random.Generator, days: pd.DatetimeIndex,
              holidays_per_year: int) -> pd.DatetimeIndex:
    """Pick the seeded holidays among the weekdays ``days``."""
    chosen: list[pd.Timestamp] = []
    for year in sorted(set(days.year)):
        in_year = days[days.year == year]
        if len(in_year) < 20:
            continue
        if in_year[0].month == 1 and in_year[0].day <= 3:  # New Year, or its observed day
            chosen.append(in_year[0])
        # a spring-festival block of 3-5 consecutive weekdays in late Jan / Feb
        block_start = pd.Timestamp(year=year, month=1, day=20) + pd.Timedelta(
            days=int(rng.integers(0, 25)))
        block = in_year[in_year >= block_start][: int(rng.integers(3, 6))]
        chosen.extend(block)
        singles = max(holidays_per_year - len(block) - 1, 0)
        if singles:
            picks = rng.choice(len(in_year), size=min(singles, len(in_year)), replace=False)
            chosen.extend(in_year[np.sort(picks)])
    return pd.DatetimeIndex(sorted(set(chosen)))


def trading_calendar(seed: int = 0, start: str | pd.Timestamp = "2012-01-01",
                     end: str | pd.Timestamp = "2024-12-31",
                     holidays_per_year: int = 8) -> pd.DatetimeIndex:
    """Return the seeded synthetic trading calendar: weekdays minus holidays.

    The calendar depends only on ``seed``, the year range and ``holidays_per_year``
    (not on the number of instruments).

    Args:
        seed: Random seed.
        start: First candidate day (inclusive).
        end: Last candidate day (inclusive).
        holidays_per_year: Approximate number of weekday holidays per year.

    Returns:
        The sorted trading days, named ``"datetime"``.

    Raises:
        DataError: When the range is empty or the dates cannot be parsed.
    """
    try:
        first, last = pd.Timestamp(start), pd.Timestamp(end)
    except (ValueError, TypeError) as error:
        raise DataError(f"cannot parse calendar range {start!r}..{end!r}: {error}") from error
    weekdays = pd.bdate_range(first, last)
    if len(weekdays) == 0:
        raise DataError(f"the calendar range {start!r}..{end!r} holds no weekday")
    # the calendar uses its own stream so that it is the same for any market size
    rng = np.random.default_rng([seed, 0xCA1])
    holidays = _holidays(rng, weekdays, holidays_per_year)
    calendar = weekdays.difference(holidays)
    return pd.DatetimeIndex(calendar, name="datetime")


def _student_t(rng: np.random.Generator, shape: tuple[int, ...], dof: float) -> np.ndarray:
    """Unit-variance Student-t draws (fat tails)."""
    draws: np.ndarray = rng.standard_t(dof, size=shape) * np.sqrt((dof - 2.0) / dof)
    return draws


class SyntheticMarket:
    """A seeded synthetic market of daily bars; generated lazily, then kept.

    Args:
        seed: Random seed; the same arguments always give the same bars.
        n_instruments: Number of instruments (named ``SH600000``, ``SH600001``, ...).
        start: First calendar day.
        end: Last calendar day.
        n_sectors: Number of sector factors (each instrument belongs to one).
        n_styles: Number of style factors (each instrument has Gaussian loadings).
        holidays_per_year: Approximate number of weekday holidays per year.
        market_vol: Unconditional daily volatility of the market factor.
        idio_vol: Median unconditional daily idiosyncratic volatility.
        signal_strength: Scale of the predictable idiosyncratic component
            (0 gives a market with no predictable signal).
        listing_fraction: Share of instruments listed after the first day.
        delisting_fraction: Share of instruments delisted before the last day.
        suspension_rate: Mean number of suspension episodes per instrument-year.
        bad_bar_rate: Share of the rows made bad, in ``[0, 1)``: in turn a zero price,
            a negative price, a missing (NaN) price, and a zero volume (the price is
            one of ``open, high, low, close, vwap``, drawn at random).
        duplicate_rows: Number of rows repeated exactly (same index and values), so
            that :meth:`bars` has repeated ``(datetime, instrument)`` pairs.

    Planted bad bars and duplicates come from their own random stream: the other
    rows, and every row with the defaults, are the same as without them.

    Raises:
        DataError: For a non-positive size, an empty date range, a ``bad_bar_rate``
            outside ``[0, 1)`` or a negative ``duplicate_rows``.
    """

    def __init__(self, seed: int = 0, n_instruments: int = 300,
                 start: str | pd.Timestamp = "2012-01-01",
                 end: str | pd.Timestamp = "2024-12-31", *, n_sectors: int = 10,
                 n_styles: int = 3, holidays_per_year: int = 8, market_vol: float = 0.011,
                 idio_vol: float = 0.017, signal_strength: float = 1.0,
                 listing_fraction: float = 0.2, delisting_fraction: float = 0.1,
                 suspension_rate: float = 0.6, bad_bar_rate: float = 0.0,
                 duplicate_rows: int = 0) -> None:
        if n_instruments < 1:
            raise DataError(f"n_instruments must be at least 1, got {n_instruments}")
        if not 0.0 <= bad_bar_rate < 1.0:
            raise DataError(f"bad_bar_rate must be in [0, 1), got {bad_bar_rate}")
        if duplicate_rows < 0:
            raise DataError(f"duplicate_rows must be >= 0, got {duplicate_rows}")
        if n_sectors < 1 or n_styles < 0:
            raise DataError("n_sectors must be >= 1 and n_styles >= 0")
        self.seed = int(seed)
        self.n_instruments = int(n_instruments)
        self.start = start
        self.end = end
        self.n_sectors = n_sectors
        self.n_styles = n_styles
        self.holidays_per_year = holidays_per_year
        self.market_vol = market_vol
        self.idio_vol = idio_vol
        self.signal_strength = signal_strength
        self.listing_fraction = listing_fraction
        self.delisting_fraction = delisting_fraction
        self.suspension_rate = suspension_rate
        self.bad_bar_rate = float(bad_bar_rate)
        self.duplicate_rows = int(duplicate_rows)
        self.calendar: pd.DatetimeIndex = trading_calendar(seed, start, end, holidays_per_year)
        self.instruments: list[str] = [f"SH{600000 + i}" for i in range(self.n_instruments)]
        self._bars: pd.DataFrame | None = None
        self.latent_signal: np.ndarray | None = None
        """Expected idiosyncratic log return known before each day, shape (days, instruments)."""

    # -- public -------------------------------------------------------------------------------

    def bars(self) -> pd.DataFrame:
        """Return the daily bars (generated on first call, then reused).

        Returns:
            A frame indexed by ``(datetime, instrument)``, sorted, with float columns
            ``open, high, low, close, volume, vwap, factor``. Rows are absent on days an
            instrument is not listed or is suspended. With ``bad_bar_rate`` some bars
            are invalid; with ``duplicate_rows`` some rows appear twice. Treat it as
            read-only.
        """
        if self._bars is None:
            self._bars = self._generate()
        return self._bars

    def save(self, path: str | Path) -> Path:
        """Write the bars to ``path``: CSV (``.csv``, ``.csv.gz``) or Parquet (``.parquet``).

        Args:
            path: Target file; its parent folder is created.

        Returns:
            The path written.

        Raises:
            DataError: For an unsupported suffix.
        """
        target = Path(path)
        name = target.name.lower()
        target.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith((".parquet", ".pq")):
            self.bars().to_parquet(target)
        elif name.endswith((".csv", ".csv.gz")):
            self.bars().to_csv(target, float_format="%.10g")
        else:
            raise DataError(f"cannot save to {target}: use a .csv, .csv.gz, .parquet or .pq file")
        return target

    # -- generation ---------------------------------------------------------------------------

    def _generate(self) -> pd.DataFrame:
        days, count = len(self.calendar), self.n_instruments
        rng = np.random.default_rng([self.seed, 0x5EED])
        factor_returns, _ = self._factor_returns(rng, days)
        market, sectors, styles = (factor_returns[:, :1], factor_returns[:, 1:1 + self.n_sectors],
                                   factor_returns[:, 1 + self.n_sectors:])
        beta = np.clip(rng.normal(1.0, 0.25, count), 0.3, 2.0)
        sector_of = rng.integers(0, self.n_sectors, count)
        sector_beta = np.clip(rng.normal(1.0, 0.2, count), 0.3, 2.0)
        loadings = rng.normal(0.0, 1.0, (count, self.n_styles))
        idio, idio_sd, signal = self._idiosyncratic(rng, days, count)
        self.latent_signal = signal
        drift = 0.0002
        log_return = (drift + market * beta + sectors[:, sector_of] * sector_beta
                      + styles @ loadings.T + idio)
        log_return = np.clip(log_return, -0.25, 0.25)
        alive = self._alive_mask(rng, days, count)
        bars = self._bars_from_returns(rng, log_return, idio_sd, alive)
        if self.bad_bar_rate > 0.0 or self.duplicate_rows > 0:
            bars = self._dirty(bars)
        return bars

    def _dirty(self, bars: pd.DataFrame) -> pd.DataFrame:
        """Plant bad bars and exact duplicate rows, drawn from a stream of their own."""
        rng = np.random.default_rng([self.seed, 0xBAD])
        rows = len(bars)
        bad_count = min(round(self.bad_bar_rate * rows), rows)
        if bad_count:
            chosen = np.sort(rng.choice(rows, size=bad_count, replace=False))
            kind = rng.permutation(bad_count) % 4  # zero, negative, NaN price; zero volume
            prices = np.array([BAR_COLUMNS.index(name)
                               for name in ("open", "high", "low", "close", "vwap")])
            price_column = prices[rng.integers(0, prices.size, bad_count)]
            values = bars.to_numpy(copy=True)
            picked = values[chosen, price_column]
            values[chosen, price_column] = np.select(
                [kind == 0, kind == 1, kind == 2], [0.0, -picked, np.nan], picked)
            volume = BAR_COLUMNS.index("volume")
            values[chosen[kind == 3], volume] = 0.0
            bars = pd.DataFrame(values, index=bars.index, columns=bars.columns)
        if self.duplicate_rows and rows:
            repeated = rng.choice(rows, size=self.duplicate_rows, replace=True)
            order = np.sort(np.r_[np.arange(rows), repeated], kind="stable")
            bars = bars.iloc[order]
        return bars

    def _factor_returns(self, rng: np.random.Generator, days: int) -> tuple[np.ndarray, np.ndarray]:
        """GARCH(1, 1) paths for market, sector and style factors: (days, factors)."""
        vols = np.r_[self.market_vol, np.full(self.n_sectors, 0.006),
                     np.full(self.n_styles, 0.004)]
        alpha, beta = 0.08, 0.90
        omega = vols**2 * (1.0 - alpha - beta)
        shocks = _student_t(rng, (days, vols.size), 6.0)
        returns = np.empty_like(shocks)
        variance = vols**2
        previous = np.zeros_like(vols)
        for day in range(days):
            variance = omega + alpha * previous**2 + beta * variance
            previous = np.sqrt(variance) * shocks[day]
            returns[day] = previous
        return returns, vols

    def _idiosyncratic(self, rng: np.random.Generator, days: int,
                       count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Idiosyncratic returns with GARCH variance and a predictable mean.

        Returns ``(returns, conditional_sd, expected_return)``, each (days, instruments).
        The expected return at day t uses only idiosyncratic returns before t:
        ``sigma_i * s * (-0.35 * fast_ema + 0.6 * slow_ema)`` of standardised returns.
        """
        sigma = np.exp(rng.normal(np.log(self.idio_vol), 0.3, count))
        alpha = rng.uniform(0.04, 0.10, count)
        beta = np.clip(0.97 - alpha - rng.uniform(0.0, 0.04, count), 0.7, None)
        omega = sigma**2 * (1.0 - alpha - beta)
        shocks = _student_t(rng, (days, count), 5.0)
        fast_decay, slow_decay = 0.5 ** (1 / 3), 0.5 ** (1 / 40)
        strength = self.signal_strength
        returns = np.empty((days, count))
        sds = np.empty((days, count))
        expected = np.empty((days, count))
        variance = sigma**2
        previous = np.zeros(count)
        fast = np.zeros(count)
        slow = np.zeros(count)
        for day in range(days):
            variance = omega + alpha * previous**2 + beta * variance
            sd = np.sqrt(variance)
            mean = sigma * strength * (-0.35 * fast + 0.6 * slow)
            previous = sd * shocks[day]
            standardised = (previous + mean) / sigma
            fast = fast_decay * fast + (1 - fast_decay) * standardised
            slow = slow_decay * slow + (1 - slow_decay) * standardised
            returns[day] = previous + mean
            sds[day] = sd
            expected[day] = mean
        return returns, sds, expected

    def _alive_mask(self, rng: np.random.Generator, days: int, count: int) -> np.ndarray:
        """Boolean (days, instruments): listed, not delisted, not suspended."""
        min_life = min(250, max(days // 3, 1))
        listed = np.zeros(count, dtype=np.int64)
        late = rng.random(count) < self.listing_fraction
        if days > min_life:
            listed[late] = rng.integers(1, max(days - min_life, 2), late.sum())
        delisted = np.full(count, days, dtype=np.int64)
        early = rng.random(count) < self.delisting_fraction
        for index in np.flatnonzero(early):
            low = listed[index] + min_life
            if low < days - 1:
                delisted[index] = rng.integers(low, days - 1)
        day_index = np.arange(days)[:, None]
        alive = (day_index >= listed[None, :]) & (day_index < delisted[None, :])
        life_years = (delisted - listed) / 252.0
        episodes = rng.poisson(self.suspension_rate * life_years)
        owners = np.repeat(np.arange(count), episodes)
        if owners.size:
            starts = listed[owners] + (rng.random(owners.size)
                                       * (delisted[owners] - listed[owners])).astype(np.int64)
            lengths = 1 + rng.geometric(0.3, owners.size)
            long_ones = rng.random(owners.size) < 0.05
            lengths[long_ones] = rng.integers(20, 120, long_ones.sum())
            # mark [start, start + length) with a difference array, then cumulate
            marks = np.zeros((days + 1, count), dtype=np.int32)
            np.add.at(marks, (starts, owners), 1)
            np.add.at(marks, (np.minimum(starts + lengths, days), owners), -1)
            suspended = np.cumsum(marks[:-1], axis=0) > 0
            # the first listed day is always traded, so every instrument has a start price
            suspended[listed, np.arange(count)] = False
            alive &= ~suspended
        return alive

    def _bars_from_returns(self, rng: np.random.Generator, log_return: np.ndarray,
                           idio_sd: np.ndarray, alive: np.ndarray) -> pd.DataFrame:
        days, count = log_return.shape
        start_price = np.exp(rng.normal(np.log(15.0), 0.7, count))
        log_close = np.log(start_price) + np.cumsum(log_return, axis=0)
        previous_close = np.vstack([np.log(start_price)[None, :], log_close[:-1]])
        day_sd = np.sqrt(idio_sd**2 + self.market_vol**2)
        overnight = 0.3 * log_return + rng.normal(0.0, 0.2, (days, count)) * day_sd
        log_open = previous_close + overnight
        top = np.maximum(log_open, log_close)
        bottom = np.minimum(log_open, log_close)
        log_high = top + np.abs(rng.normal(0.0, 0.5, (days, count))) * day_sd
        log_low = bottom - np.abs(rng.normal(0.0, 0.5, (days, count))) * day_sd
        weights = rng.dirichlet(np.ones(4), (days, count))
        log_vwap = (weights[..., 0] * log_open + weights[..., 1] * log_close
                    + weights[..., 2] * log_high + weights[..., 3] * log_low)
        size = rng.normal(13.5, 1.0, count)
        shock = rng.normal(0.0, 0.25, (days, count))
        persistent = np.empty_like(shock)
        level = np.zeros(count)
        for day in range(days):
            level = 0.8 * level + shock[day]
            persistent[day] = level
        surprise = np.abs(log_return) / day_sd
        log_volume = size + persistent + 0.35 * surprise
        events = rng.random((days, count)) < 1 / 750
        factor = np.cumprod(np.where(events, rng.uniform(1.02, 1.6, (days, count)), 1.0), axis=0)
        day_codes, instrument_codes = np.nonzero(alive)
        columns = {
            "open": np.exp(log_open), "high": np.exp(log_high), "low": np.exp(log_low),
            "close": np.exp(log_close), "volume": np.round(np.exp(log_volume)) / factor,
            "vwap": np.exp(log_vwap), "factor": factor,
        }
        levels: list[Any] = [self.calendar, pd.Index(self.instruments)]
        codes: list[Any] = [day_codes, instrument_codes]
        index = pd.MultiIndex(levels=levels, codes=codes,
                              names=["datetime", "instrument"], verify_integrity=False)
        data = {name: values[day_codes, instrument_codes] for name, values in columns.items()}
        return pd.DataFrame(data, index=index, columns=list(BAR_COLUMNS))


def generate_market(seed: int = 0, n_instruments: int = 300,
                    start: str | pd.Timestamp = "2012-01-01",
                    end: str | pd.Timestamp = "2024-12-31", **kwargs: Any) -> pd.DataFrame:
    """Generate synthetic daily bars; a shortcut for ``SyntheticMarket(...).bars()``.

    Args:
        seed: Random seed.
        n_instruments: Number of instruments.
        start: First calendar day.
        end: Last calendar day.
        **kwargs: Further :class:`SyntheticMarket` keyword arguments.

    Returns:
        The bars frame (see :meth:`SyntheticMarket.bars`).

    Raises:
        DataError: For invalid sizes or an empty date range.
    """
    return SyntheticMarket(seed, n_instruments, start, end, **kwargs).bars()
