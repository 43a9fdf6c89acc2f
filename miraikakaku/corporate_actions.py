"""Corporate actions (splits, dividends) from the data, adjusted prices, and split detection.

Architecture rule (../shared/ARCHITECTURE.md, "Identity and time"): raw and adjusted prices are
different fields; features and training use adjusted prices; corporate actions come from the
data first, and detection only flags candidates for review (a bad print can look like a split).

**Actions from the data** (``CorporateAction``):

* Alpha Vantage daily files (``us_daily_alphavantage_1999_2021.normalized.csv.gz``, columns
  ``dividend_amount`` and ``split_coefficient``): a row with ``split_coefficient`` c ≠ 1 is a
  split on that date (new shares per old share = c; c < 1 is a reverse split, C 2011-05-09
  has 0.1); a row with ``dividend_amount`` D > 0 is a cash distribution with ex-date on that
  row, its reference price being the previous row's raw close.
* QuantConnect Lean factor files (``factor_files/<permtick>.csv``,
  ``date,price_factor,split_factor,reference_price``). Lean's own reading
  (``QuantConnect/Lean``, ``Common/Data/Auxiliary/CorporateFactorProvider.cs``,
  ``GetPriceFactor``): the factors of a row apply to every date after the previous row's date up
  to and including the row's date, so the row of a date d is the first row with ``date >= d``.
  A row's date is the last trading day *before* the action: the ex-date is the next session
  (``CorporateFactorRow.GetSplit``/``GetDividend`` use ``GetNextTradingDay(Date)``). Between
  consecutive rows i, i+1 a change of ``split_factor`` is a split whose price multiplier is
  ``sf_i / sf_{i+1}``, a change of ``price_factor`` a dividend with multiplier
  ``pf_i / pf_{i+1}`` and distribution ``reference_price_i × (1 − pf_i / pf_{i+1})``. The full
  multiplier of a raw price is ``price_factor × split_factor`` (``PriceScaleFactor``).
* Lean map files (``map_files/<permtick>.csv``, ``date,ticker[,exchange]``) say which ticker a
  security used until each date (Lean's ``MapFile.GetMappedSymbol``: the ticker of the first row
  with ``date >= d``). A Lean price row (ticker, date) is adjusted with the factor file of the
  map file that names that ticker on that date: the Lean ``GOOG`` file holds Google class A up to
  2014-04-02 (map ``googl``: factor 0.5 before the class C distribution) and class C after
  (map ``goog``); ``NWSA`` 2013-06-28 is the old News Corp (map ``tfcfa``), not the new one.

**Adjustment** (backward, cumulative): each action has a price multiplier ``factor`` applied to
every price *before* its ex-date; split: ``1 / ratio``; cash dividend D with previous raw close
C: ``1 − D / C``. This is the CRSP convention as Yahoo Finance documents it ("What exactly is
Adjusted Close?": split multiplier from the split ratio; dividend multiplier
``1 − dividend / previous close``, chosen to avoid negative prices). So::

    adjusted_close(t) = close(t) × Π factor(a) for the actions a with ex_date > t

Checked against the Alpha Vantage file's own ``adjusted_close``
(tests/unit/test_corporate_actions.py):
AAPL relative error ≤ 2e-4 over 1999-2021 (incl. 2014-06-09 7:1 and 2020-08-31 4:1); all 41
series: median 3.0e-4, each within 0.55 % except F before 2000-06-29 (4.6 %: Ford's
recapitalisation, which the file adjusts otherwise than its ``dividend_amount`` 1.771 says). The
residual is Alpha Vantage's rounding of adjusted prices and dividends. Lean's factors reproduce
Alpha Vantage's AAPL series to a median 1.3e-4 (the larger differences are days where the two
vendors' raw closes differ, e.g. AAPL 2001-06-29 23.25 vs 24.17). Note: the file records GOOGL's
2014-04-03 class C distribution as ``dividend_amount`` 567.9717 (50 % of the previous close),
not as a split coefficient; it is applied as a dividend.

**Detection** (``detect_candidates``, ``stream_split_flag``): an overnight close ratio near a
common split ratio with the volume moving the opposite way flags ``split_candidate`` for review;
detected candidates are never applied. See ``detect_candidates`` for the rules and tolerances.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import datetime as dt
import functools
import gzip
import logging
import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

__all__ = [
    "ACTION_KINDS",
    "SPLIT_RATIOS",
    "CorporateAction",
    "AdjustmentSchedule",
    "ActionTable",
    "PRICE_SOURCE_PROVIDERS",
    "LeanFactorFiles",
    "Candidate",
    "load_alphavantage_actions",
    "load_lean_factor_file",
    "lean_factor_files",
    "raw_price_factor",
    "adjusted_closes",
    "detect_candidates",
    "stream_split_flag",
    "classify_ratio",
]

ACTION_KINDS = ("split", "reverse_split", "dividend", "spin_off_as_split")
"""``split``: more shares (ratio > 1); ``reverse_split``: fewer (ratio < 1); ``dividend``: a cash
distribution (``amount`` per share); ``spin_off_as_split``: a distribution the vendor encoded as
a split with a coefficient that is no small-integer ratio (PFE 2020-11-17, 1.054, the Viatris
spin-off; Lean GOOG 2015-04-27, 1.0027)."""

SPLIT_RATIOS: tuple[float, ...] = (1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 50.0, 1000.0)
"""Share ratios (new per old) detection looks for, and their inverses (reverse splits)."""

RATIO_TOLERANCE = math.log(1.07)
"""A close ratio r matches a share ratio k when |ln(r × k)| ≤ ln 1.07 (7 %): room for the
split day's own move (AAPL 2014-06-09: 1.6 %; MUFG 8306 2007-10-01: 4.4 %; Fast Retailing 9983
2002-02-25: 6.5 %), while most −28..−32 % crash days (AMD 2001-07-06, CRM 2004-07-21, MRK
2004-09-30: 8-10 % from 2/3) no longer look like a 3:2 split (measured on the Alpha Vantage,
S&P 500, Lean and MLbot files)."""

LARGE_MOVE = math.log(1.3)
"""|ln(close ratio)| above ln 1.3 is a large move (the same threshold as
``transforms.features.LARGE_MOVE``); only large moves are examined."""

REVERT_TOLERANCE = math.log(1.10)
"""A large move reverts when the next close is back within 10 % of the previous close."""

VOLUME_SHARE = 0.5
"""Volume confirms a k:1 split when it moves against the price by at least half the split's log
size and by at most the split plus a factor 4: with v = V_t / V_ref,
sign(ln v) = sign(ln k) and 0.5 × |ln k| ≤ |ln v| ≤ |ln k| + ln 4 (a 2:1 split: 1.41 ≤ v ≤ 8;
AAPL 7:1 had v = 7.2, MUFG 1:1000 had 1437). V_ref is the median of up to 20 previous non-zero
volumes. Volume *contradicts* a split when it moves the wrong way by that much (AMD 2016-04-22:
price +52 %, volume ×15.8) or far beyond the ratio (AAPL 2000-09-29: −52 % on ×22 volume, a
profit warning, not a 2:1 split)."""

VOLUME_EXCESS = math.log(4.0)

VOLUME_LOOKBACK = 20

_SIMPLE_RATIO_TOL = 1e-4


def classify_ratio(ratio: float) -> str:
    """Kind of a vendor split coefficient (new shares per old share).

    ``split`` (> 1) or ``reverse_split`` (< 1) when the ratio is p/q with p, q ≤ 1000 and small
    denominators (7.00000700001 → 7, 1.49999925 → 3/2, 1.33333333333 → 4/3, 0.1 → 1/10), within a
    relative 1e-4; else ``spin_off_as_split`` (1.054).

    Raises:
        ValueError: for a ratio ≤ 0 or not finite.
    """
    if not (ratio > 0 and math.isfinite(ratio)):
        raise ValueError(f"split ratio must be a positive number, got {ratio!r}")
    frac = Fraction(ratio).limit_denominator(10)
    if frac.numerator <= 1000 and abs(float(frac) / ratio - 1) <= _SIMPLE_RATIO_TOL:
        return "split" if ratio > 1 else "reverse_split"
    return "spin_off_as_split"


@dataclasses.dataclass(frozen=True)
class CorporateAction:
    """One split or distribution, as a data source records it.

    Attributes:
        instrument_id: exchange-qualified id (``XNAS:AAPL``) from the instrument master.
        symbol: the ticker the source used (Lean: the permtick of the factor file, upper case).
        ex_date: first session on the new basis (exchange-local date).
        kind: one of ``ACTION_KINDS``.
        ratio: new shares per old share for splits (7.0 for AAPL 2014-06-09, 0.1 for
            C 2011-05-09); None for a dividend.
        amount: cash per share in ``currency`` for a dividend; None for a split.
        factor: backward price multiplier for prices before ``ex_date`` (split: 1/ratio,
            dividend: 1 − amount / reference_price; Lean: the exact factor-file ratio).
        reference_price: raw close of the session before ``ex_date`` (quote currency), or None.
        currency: ISO 4217 quote currency.
        source: the file the action comes from (base name).
        provider: the data vendor (``alphavantage``, ``lean``): one provider's actions adjust
            that provider's raw prices (vendors' dividend figures differ slightly).
    """

    instrument_id: str
    symbol: str
    ex_date: dt.date
    kind: str
    ratio: float | None
    amount: float | None
    factor: float
    reference_price: float | None
    currency: str
    source: str
    provider: str

    def __post_init__(self) -> None:
        if self.kind not in ACTION_KINDS:
            raise ValueError(f"unknown action kind {self.kind!r}")
        if not (self.factor > 0 and math.isfinite(self.factor)):
            raise ValueError(f"action factor must be positive, got {self.factor!r}")


class AdjustmentSchedule:
    """Cumulative backward factors of one instrument's actions (from one source).

    ``factor(day)`` is Π ``action.factor`` over the actions with ``ex_date > day``: the
    multiplier that turns a raw price of ``day`` into an adjusted one. Precomputed once, each
    look-up is one bisection.

    Args:
        actions: the instrument's actions, any order (several on one ex-date multiply).
    """

    def __init__(self, actions: Iterable[CorporateAction]) -> None:
        acts = sorted(actions, key=lambda a: a.ex_date)
        self.actions: tuple[CorporateAction, ...] = tuple(acts)
        per_day: dict[dt.date, float] = {}
        for a in acts:
            per_day[a.ex_date] = per_day.get(a.ex_date, 1.0) * a.factor
        self.ex_dates: list[dt.date] = sorted(per_day)
        cum = [1.0] * (len(self.ex_dates) + 1)
        for i in range(len(self.ex_dates) - 1, -1, -1):
            cum[i] = cum[i + 1] * per_day[self.ex_dates[i]]
        self._cum = cum
        self._day = per_day

    def factor(self, day: dt.date) -> float:
        """Multiplier for raw prices of session ``day`` (1.0 after the last action)."""
        return self._cum[bisect.bisect_right(self.ex_dates, day)]

    def day_factor(self, day: dt.date) -> float:
        """Product of the factors of the actions whose ex-date is ``day`` (1.0 if none)."""
        return self._day.get(day, 1.0)

    def __len__(self) -> int:
        return len(self.actions)


def _open_text(path: str | Path):
    path = str(path)
    return gzip.open(path, "rt", encoding="utf-8", newline="") if path.endswith(".gz") else \
        open(path, encoding="utf-8", newline="")


def _resolver():
    from miraikakaku.instruments import load_master

    return load_master().resolve


def load_alphavantage_actions(path: str | Path) -> list[CorporateAction]:
    """Actions from an Alpha Vantage daily file with ``dividend_amount`` and
    ``split_coefficient`` columns (``symbol,date,open,…,close,…`` in any order).

    Rows must be in date order per symbol (they are in the shared file); the dividend's
    reference price is the previous row's raw close (the CRSP/Yahoo multiplier 1 − D/C).
    A dividend on a symbol's first row has no reference price and is skipped.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the header lacks ``split_coefficient`` or ``dividend_amount``.
    """
    resolve = _resolver()
    out: list[CorporateAction] = []
    origin = os.path.basename(str(path))
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or ())
        if not {"split_coefficient", "dividend_amount", "close", "symbol", "date"} <= cols:
            raise ValueError(f"{path}: not an Alpha Vantage adjusted file (columns {sorted(cols)})")
        prev: dict[str, float] = {}
        for row in reader:
            sym = row["symbol"].strip()
            try:
                close = float(row["close"])
                coef = float(row["split_coefficient"] or 1.0)
                div = float(row["dividend_amount"] or 0.0)
            except ValueError:
                continue  # an unparseable row is the parser's business (dead letter)
            day = dt.date.fromisoformat(row["date"][:10])
            inst = None
            if coef != 1.0 or div > 0.0:
                inst = resolve(sym)
            if coef != 1.0 and coef > 0:
                out.append(CorporateAction(inst.instrument_id, sym, day, classify_ratio(coef),
                                           coef, None, 1.0 / coef, prev.get(sym),
                                           inst.currency, origin, "alphavantage"))
            if div > 0.0 and sym in prev:
                ref = prev[sym]
                out.append(CorporateAction(inst.instrument_id, sym, day, "dividend", None, div,
                                           1.0 - div / ref, ref, inst.currency, origin,
                                           "alphavantage"))
            prev[sym] = close
    return out


@dataclasses.dataclass(frozen=True)
class _FactorRow:
    date: dt.date
    price_factor: float
    split_factor: float
    reference_price: float


def _ymd(text: str) -> dt.date:
    t = text.strip()
    return dt.date(int(t[:4]), int(t[4:6]), int(t[6:8]))


def _read_factor_rows(path: str | Path) -> list[_FactorRow]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) < 3 or "inf" in line or "e+" in line:  # Lean skips these rows too
                continue
            row = _FactorRow(_ymd(parts[0]), float(parts[1]), float(parts[2]),
                             float(parts[3]) if len(parts) > 3 else 0.0)
            if row.price_factor * row.split_factor > 0:
                rows.append(row)
    rows.sort(key=lambda r: r.date)
    return rows


def load_lean_factor_file(path: str | Path, *, calendar: str = "XNYS",
                          instrument_id: str | None = None, currency: str = "USD"
                          ) -> list[CorporateAction]:
    """Actions encoded in one Lean factor file (see the module docstring for the reading).

    Args:
        path: ``factor_files/<permtick>.csv``.
        calendar: exchange calendar giving the session after a row's date (the ex-date).
        instrument_id: id to record; default: the instrument master's id for the permtick.
        currency: quote currency of the reference prices.

    Returns:
        Splits (``ratio = sf_{i+1} / sf_i``, factor ``sf_i / sf_{i+1}``) and dividends
        (``amount = ref × (1 − pf_i / pf_{i+1})`` rounded to 2 decimals as Lean does, factor
        ``pf_i / pf_{i+1}``) in date order.
    """
    from miraikakaku.calendars import get_calendar

    cal = get_calendar(calendar)
    permtick = Path(path).name[: -len(".csv")].upper()
    rows = _read_factor_rows(path)
    if instrument_id is None:
        base, _, n = permtick.rpartition(".")
        if base and n.isdigit():  # ``aaa.1``: an earlier holder of the ticker, by its last date
            last = max((r.date for r in rows if r.date.year < 2050), default=None)
            instrument_id = _resolver()(base, last).instrument_id
        else:  # a Lean permtick is the security's current ticker
            instrument_id = _resolver()(permtick).instrument_id
    origin = os.path.basename(str(path))
    out: list[CorporateAction] = []
    for cur, nxt in zip(rows, rows[1:], strict=False):
        ex = cal.next_session(cur.date)
        ref = cur.reference_price or None
        if cur.split_factor != nxt.split_factor:
            ratio = nxt.split_factor / cur.split_factor
            out.append(CorporateAction(instrument_id, permtick, ex, classify_ratio(ratio), ratio,
                                       None, cur.split_factor / nxt.split_factor, ref, currency,
                                       origin, "lean"))
        if cur.price_factor != nxt.price_factor:
            f = cur.price_factor / nxt.price_factor
            amount = round(ref * (1.0 - f), 2) if ref else None  # Lean's Dividend.Create: 2
            out.append(CorporateAction(instrument_id, permtick, ex, "dividend", None, amount, f,
                                       ref, currency, origin, "lean"))
    return out


class LeanFactorFiles:
    """Lean factor and map files of one data folder: the adjustment of Lean's raw prices.

    ``factor(ticker, day)`` resolves the security through the map files (the map file whose
    ticker on ``day`` is ``ticker``; else a factor file named ``ticker``) and returns Lean's
    ``price_factor × split_factor`` for ``day`` from the first factor row dated ``>= day``, or
    None when no factor file covers the ticker (callers leave ``adj_close`` empty then).

    Args:
        root: the folder holding ``factor_files/`` and ``map_files/``
            (``../shared/data/us_daily/lean_algoseek``).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._factors: dict[str, list[_FactorRow]] = {}
        for p in sorted((self.root / "factor_files").glob("*.csv")):
            self._factors[p.name[:-4].lower()] = _read_factor_rows(p)
        self._scales = {perm: ([r.date for r in rows], [r.price_factor * r.split_factor
                                                        for r in rows])
                        for perm, rows in self._factors.items()}
        # ticker -> [(first_date, last_date, permtick)] from the map files
        self._segments: dict[str, list[tuple[dt.date, dt.date, str]]] = {}
        self._map_permticks: set[str] = set()
        for p in sorted((self.root / "map_files").glob("*.csv")):
            permtick = p.name[:-4].lower()
            self._map_permticks.add(permtick)
            rows = []
            with open(p, encoding="utf-8") as f:
                for line in f:
                    parts = line.strip().split(",")
                    if len(parts) >= 2 and parts[0].strip():
                        rows.append((_ymd(parts[0]), parts[1].strip().lower()))
            rows.sort()
            start = rows[0][0] if rows else None
            for i, (day, ticker) in enumerate(rows):
                lo = start if i == 0 else rows[i - 1][0] + dt.timedelta(days=1)
                self._segments.setdefault(ticker, []).append((lo, day, permtick))

    def permtick(self, ticker: str, day: dt.date) -> str | None:
        """The factor-file permtick for a Lean ``ticker`` on ``day``, or None."""
        t = ticker.strip().lower()
        for lo, hi, perm in self._segments.get(t, ()):
            if lo <= day <= hi:  # a map file names the security (maybe without factor file)
                return perm if perm in self._factors else None
        # No map file covers (ticker, day). A factor file named like the ticker is that
        # security's only when no map file of that name says otherwise (Lean ``wm`` is Waste
        # Management from 2009-08-05; the WM rows before are Washington Mutual) and the day is
        # not before the factor file starts.
        if t in self._map_permticks or t not in self._factors:
            return None
        dates = self._scales[t][0]
        return t if dates and day >= dates[0] else None

    def factor(self, ticker: str, day: dt.date) -> float | None:
        """Lean's full price multiplier (``price_factor × split_factor``) for ``day``."""
        perm = self.permtick(ticker, day)
        if perm is None:
            return None
        dates, scales = self._scales[perm]
        if not dates:
            return None
        i = bisect.bisect_left(dates, day)
        return scales[i] if i < len(scales) else 1.0

    def actions(self, permtick: str, **kwargs: Any) -> list[CorporateAction]:
        """``load_lean_factor_file`` for ``factor_files/<permtick>.csv`` ([] if absent)."""
        p = self.root / "factor_files" / f"{permtick.lower()}.csv"
        return load_lean_factor_file(p, **kwargs) if p.exists() else []

    @property
    def permticks(self) -> list[str]:
        """Permticks that have a factor file."""
        return sorted(self._factors)


def _shared_data_dir() -> Path:
    from miraikakaku.settings import get_settings

    return Path(get_settings().shared_data_dir)


@functools.lru_cache(maxsize=4)
def lean_factor_files(root: str | None = None) -> LeanFactorFiles | None:
    """The Lean factor/map files, loaded once per process (None when the folder is absent).

    Args:
        root: folder with ``factor_files/`` and ``map_files/``; default:
            ``$MIRAIKAKAKU_SHARED_DATA_DIR/us_daily/lean_algoseek``.
    """
    path = Path(root) if root else _shared_data_dir() / "us_daily" / "lean_algoseek"
    if not (path / "factor_files").is_dir():
        logging.getLogger(__name__).warning(
            "no Lean factor files under %s: Lean prices stay unadjusted (adj_close empty)", path)
        return None
    return LeanFactorFiles(path)


RAW_PRICE_FACTORS = {"lean": "lean_factor_files"}
"""Sources whose raw prices have no adjusted close and whose actions the data provides."""


def raw_price_factor(source: str, ticker: str, day: dt.date) -> float | None:
    """The backward multiplier that turns ``source``'s raw price of ``day`` into an adjusted one.

    Only sources in ``RAW_PRICE_FACTORS`` (Lean: its factor and map files) have one; others,
    an unknown ticker or missing files give None (the caller leaves ``adj_close`` empty).
    """
    if source != "lean":
        return None
    files = lean_factor_files()
    return None if files is None else files.factor(ticker, day)


PRICE_SOURCE_PROVIDERS = {"lean": ("lean", "alphavantage")}
"""For a price source, the action providers to use, best first (the source's own vendor first);
any other source: Alpha Vantage, then Lean."""


class ActionTable:
    """Every action of a set of files, per instrument and provider.

    Args:
        actions: the actions (``load_alphavantage_actions``, ``load_lean_factor_file``).
    """

    def __init__(self, actions: Iterable[CorporateAction]) -> None:
        self._by: dict[tuple[str, str], list[CorporateAction]] = {}
        for a in actions:
            self._by.setdefault((a.instrument_id, a.provider), []).append(a)
        for lst in self._by.values():
            lst.sort(key=lambda a: (a.ex_date, a.kind))
        self._schedules: dict[tuple[str, str], AdjustmentSchedule] = {}

    def actions(self, instrument_id: str, provider: str | None = None) -> list[CorporateAction]:
        """The instrument's actions (of one provider, or all), by ex-date."""
        acts = [a for (iid, prov), lst in self._by.items() if iid == instrument_id
                and (provider is None or prov == provider) for a in lst]
        return sorted(acts, key=lambda a: (a.ex_date, a.provider, a.kind))

    def known_for(self, instrument_id: str, price_source: str = "") -> list[CorporateAction]:
        """The actions that explain moves of ``price_source``'s prices: one provider's only
        (``PRICE_SOURCE_PROVIDERS``), so a split two vendors record is counted once."""
        for prov in PRICE_SOURCE_PROVIDERS.get(price_source, ("alphavantage", "lean")):
            if (instrument_id, prov) in self._by:
                return list(self._by[(instrument_id, prov)])
        return []

    def schedule(self, instrument_id: str, provider: str) -> AdjustmentSchedule:
        """The (cached) cumulative factors of one instrument's actions from one provider."""
        key = (instrument_id, provider)
        if key not in self._schedules:
            self._schedules[key] = AdjustmentSchedule(self._by.get(key, ()))
        return self._schedules[key]

    @property
    def instruments(self) -> list[str]:
        """Instrument ids with at least one action."""
        return sorted({iid for iid, _ in self._by})

    def __len__(self) -> int:
        return sum(len(v) for v in self._by.values())

    @classmethod
    def from_shared_data(cls, data_dir: str | Path | None = None) -> ActionTable:
        """Actions of the shared data: the Alpha Vantage file and every Lean factor file.

        Args:
            data_dir: ``../shared/data`` (default: ``Settings().shared_data_dir``).
        """
        root = Path(data_dir) if data_dir else _shared_data_dir()
        acts: list[CorporateAction] = []
        av = root / "normalized" / "us_daily_alphavantage_1999_2021.normalized.csv.gz"
        if av.exists():
            acts += load_alphavantage_actions(av)
        lean = lean_factor_files(str(root / "us_daily" / "lean_algoseek"))
        if lean is not None:
            for perm in lean.permticks:
                acts += lean.actions(perm)
        return cls(acts)


def adjusted_closes(dates: Sequence[dt.date], closes: Sequence[float],
                    schedule: AdjustmentSchedule) -> list[float]:
    """``close(t) × schedule.factor(t)`` for each session (quote currency)."""
    return [c * schedule.factor(d) for d, c in zip(dates, closes, strict=True)]


# --------------------------------------------------------------------------------------------
# Detection

@dataclasses.dataclass(frozen=True)
class Candidate:
    """A large overnight move, classified for review (never applied to prices).

    Attributes:
        session_date: the session of the move.
        flag: ``split_candidate`` (looks like a split, for review), ``bad_print_candidate``
            (reverts the next session) or ``large_move`` (neither).
        ratio: close(t) / close(t−1) on the source's basis.
        split_ratio: the matched share ratio k (new per old; ratio ≈ 1/k), or None.
        volume_ratio: volume(t) / median of the previous volumes, or None without volumes.
        open_gapped: the open is also at the split level (open(t)/close(t−1) ≈ 1/k).
        reason: one-line explanation.
    """

    session_date: dt.date
    flag: str
    ratio: float
    split_ratio: float | None
    volume_ratio: float | None
    open_gapped: bool
    reason: str


def _match_split(ratio: float) -> float | None:
    """The share ratio k (from ``SPLIT_RATIOS`` and inverses) with |ln(ratio × k)| ≤ tolerance."""
    best = None
    for base in SPLIT_RATIOS:
        for k in (base, 1.0 / base):
            err = abs(math.log(ratio * k))
            if err <= RATIO_TOLERANCE and (best is None or err < best[0]):
                best = (err, k)
    return None if best is None else best[1]


def _volume_evidence(k: float, volume_ratio: float | None) -> str:
    """``confirms``, ``contradicts`` or ``neutral`` (also without volumes); see VOLUME_SHARE."""
    if volume_ratio is None or volume_ratio <= 0:
        return "neutral"
    lv, lk = math.log(volume_ratio), math.log(k)
    big = abs(lv) >= VOLUME_SHARE * abs(lk)
    if lv * lk > 0 and big:
        return "confirms" if abs(lv) <= abs(lk) + VOLUME_EXCESS else "contradicts"
    return "contradicts" if big and lv * lk < 0 else "neutral"


def _volume_ratio(volume: float | None, previous: Sequence[float | None]) -> float | None:
    ref = [v for v in previous[-VOLUME_LOOKBACK:] if v]
    if not volume or not ref:
        return None
    return volume / statistics.median(ref)


def stream_split_flag(prev_price: float, price: float, volume: float | None,
                      previous_volumes: Sequence[float | None]) -> str | None:
    """The streaming rule, on the day of the move (the next session is not known yet).

    Returns ``split_candidate`` when ``price / prev_price`` is a large move near a split ratio
    AND the volume confirms it (``VOLUME_SHARE``); None otherwise. The open-gap alternative of
    the batch rule is not used: a bad print whose whole bar is off (NWL 2017-09-14) gaps at the
    open too, and only the next session tells it apart, which the stream cannot wait for. Pass
    adjusted prices (the feature price): a split that a known action explains is then no move.

    Args:
        prev_price, price: the previous and current prices (> 0, quote currency).
        volume: today's volume (shares) or None.
        previous_volumes: the previous sessions' volumes, oldest first (up to 20 used).
    """
    ratio = price / prev_price
    if abs(math.log(ratio)) <= LARGE_MOVE:
        return None
    k = _match_split(ratio)
    if k is None:
        return None
    vr = _volume_ratio(volume, previous_volumes)
    return "split_candidate" if _volume_evidence(k, vr) == "confirms" else None


def _get(bar: Any, name: str) -> Any:
    return bar[name] if isinstance(bar, Mapping) else getattr(bar, name)


def detect_candidates(bars: Sequence[Any], known_actions: Iterable[CorporateAction] = (), *,
                      price: str = "close") -> list[Candidate]:
    """Batch detection over one instrument's daily bars of one source, in session order.

    Each bar needs ``session_date``, ``open``, ``close`` and ``volume`` (attributes, e.g.
    ``PriceEvent``, or mapping keys). For each session t with |ln r| > ln 1.3, where
    r = price(t) / price(t−1), the first rule that applies:

    1. explained: the known actions with ex-date t bring the move under the threshold
       (|ln(r / Π factor)| ≤ ln 1.3): no candidate, the action is applied (data first);
    2. reversal: t−1 was a bad print and t returns from it: no candidate (counted with t−1);
    3. ``bad_print_candidate``: the next close is back within 10 % of close(t−1)
       (LNT 2016-05-19 −49 % then +101 %; NWL 2017-09-14 −30 % then +40 %);
    4. ``split_candidate``: r is within ``RATIO_TOLERANCE`` of 1/k for a share ratio k in
       ``SPLIT_RATIOS`` or their inverses, the volume does not contradict it, and the volume
       confirms it (``VOLUME_SHARE``) or the open gapped to the same level
       (|ln(open(t) / close(t−1) × k)| ≤ ``RATIO_TOLERANCE``);
    5. otherwise ``large_move`` (AMD 2016-04-22 +52 %: near a 2:3 reverse split in price, but
       the volume rose ×15.8 with the price).

    Candidates are for review: nothing here changes a price. A split candidate may well be a
    real corporate event the data does not record (a spin-off, a stock dividend: DISCA/DISCK
    2014-08-07 in the split-adjusted S&P 500 file).

    Args:
        bars: the bars, ordered by session (one source's basis, raw or adjusted).
        known_actions: actions from the data for this instrument (their ex-dates excuse moves).
        price: the bar field to compare (``close``; ``adj_close`` for an adjusted series).

    Returns:
        One ``Candidate`` per unexplained large move, in session order.
    """
    day_factor: dict[dt.date, float] = {}
    for a in known_actions:
        day_factor[a.ex_date] = day_factor.get(a.ex_date, 1.0) * a.factor
    out: list[Candidate] = []
    vols: list[float | None] = []
    bad_print_at = -1
    for i, bar in enumerate(bars):
        vol = _get(bar, "volume")
        p0 = _get(bars[i - 1], price) if i else None
        p1 = _get(bar, price)
        if not p0 or not p1 or abs(math.log(p1 / p0)) <= LARGE_MOVE:
            vols.append(vol)
            continue
        r = p1 / p0
        day = _get(bar, "session_date")
        f = day_factor.get(day)
        if (f is not None and abs(math.log(r / f)) <= LARGE_MOVE) or bad_print_at == i - 1:
            vols.append(vol)
            continue
        vr = _volume_ratio(vol, vols)
        vols.append(vol)
        k = _match_split(r)
        o = _get(bar, "open")
        gapped = bool(k and o and abs(math.log(o / p0 * k)) <= RATIO_TOLERANCE)
        nxt = _get(bars[i + 1], price) if i + 1 < len(bars) else None
        evidence = _volume_evidence(k, vr) if k else "neutral"
        if nxt and abs(math.log(nxt / p0)) <= REVERT_TOLERANCE:
            bad_print_at = i
            out.append(Candidate(day, "bad_print_candidate", r, k, vr, gapped,
                                 f"{r - 1:+.1%}, then back within 10% of the previous close "
                                 "the next session"))
        elif k is not None and evidence != "contradicts" and (evidence == "confirms" or gapped):
            why = "the volume" if evidence == "confirms" else "the open gap"
            out.append(Candidate(day, "split_candidate", r, k, vr, gapped,
                                 f"close ratio {r:.4f} ~ {1 / k:.4g} ({_fmt_split(k)}), confirmed "
                                 f"by {why}; no action in the data explains it"))
        else:
            why = "no split ratio" if k is None else f"volume {evidence} a {_fmt_split(k)}" \
                if evidence == "contradicts" else "neither volume nor open confirm a split"
            out.append(Candidate(day, "large_move", r, k, vr, gapped, f"{r - 1:+.1%}: {why}"))
    return out


def _fmt_split(k: float) -> str:
    frac = Fraction(k).limit_denominator(1000)
    return f"{frac.numerator}:{frac.denominator} split" if k > 1 else \
        f"{frac.numerator}:{frac.denominator} reverse split"


# --------------------------------------------------------------------------------------------
# CLI: miraikakaku actions

def add_parser(subparsers) -> None:
    """Add ``miraikakaku actions`` (list actions from the data and detected candidates)."""
    p = subparsers.add_parser(
        "actions", help="Corporate actions from the data, and split candidates in a price file.",
        description="List the splits (and with --dividends the dividends) that the Alpha Vantage "
                    "file and the Lean factor files record, and with --input the large moves of "
                    "a price file classified as split_candidate / bad_print_candidate / "
                    "large_move (for review; candidates are never applied).")
    p.add_argument("--symbol", action="append",
                   help="Ticker or instrument id (repeatable). Default: all with actions, or "
                        "all in --input.")
    p.add_argument("--input", action="append",
                   help="Price file(s) to scan for candidates (daily bars).")
    p.add_argument("--dividends", action="store_true", help="Also list dividends.")
    p.add_argument("--data-dir", default=None,
                   help="Shared data folder with the action files. Default: "
                        "$MIRAIKAKAKU_SHARED_DATA_DIR (../shared/data).")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table.")


def _describe(a: CorporateAction) -> str:
    if a.kind == "dividend":
        return f"{a.amount:g} {a.currency}" if a.amount is not None else "?"
    return _fmt_split(a.ratio) if a.kind != "spin_off_as_split" else f"x{a.ratio:.6g}"


def run_command(args) -> int:
    """Run ``miraikakaku actions``; returns the exit code (0; 2 for an unreadable input)."""
    import json

    from miraikakaku.instruments import load_master
    from miraikakaku.schema import PriceEvent

    master = load_master()
    table = ActionTable.from_shared_data(args.data_dir)
    wanted = {master.resolve(s).instrument_id for s in args.symbol} if args.symbol else None

    def emit(kind: str, row: dict[str, Any], text: str) -> None:
        print(json.dumps({"record": kind, **row}, default=str) if args.json else text)

    # without --input: the actions of the symbols (or all); with --input: per series, the
    # actions of the provider that explains its moves, then its candidates
    ids = [] if args.input else sorted(wanted) if wanted is not None else table.instruments
    for iid in ids:
        for a in table.actions(iid):
            if a.kind == "dividend" and not args.dividends:
                continue
            emit("action", dataclasses.asdict(a),
                 f"action     {iid:<14} {a.ex_date}  {a.kind:<17} {_describe(a):<18} "
                 f"factor {a.factor:.7g}  {a.provider}:{a.source}")
    for path in args.input or ():
        from transforms.parsing import file_spec, iter_file

        try:
            spec = file_spec(path)
        except (OSError, ValueError) as e:
            print(f"actions: {e}")
            return 2
        # one series per instrument and source; a session's first row wins, as the pipeline's
        # deduplication keeps one event per event id
        series: dict[tuple[str, str], dict[dt.date, PriceEvent]] = {}
        for item in iter_file(spec, master):
            if isinstance(item, PriceEvent) and item.interval == "1d" and (
                    wanted is None or item.instrument_id in wanted):
                series.setdefault((item.instrument_id, item.source), {}).setdefault(
                    item.session_date, item)
        for (iid, source), by_session in sorted(series.items()):
            events = [by_session[d] for d in sorted(by_session)]
            for a in table.known_for(iid, source):
                if a.kind != "dividend" or args.dividends:
                    emit("action", dataclasses.asdict(a),
                         f"action     {iid:<14} {a.ex_date}  {a.kind:<17} "
                         f"{_describe(a):<18} factor {a.factor:.7g}  {a.provider}:{a.source}")
            by_day = {e.session_date: i for i, e in enumerate(events)}
            for c in detect_candidates(events, table.known_for(iid, source)):
                i = by_day[c.session_date]
                note = ""
                if events[i].adj_close is not None and events[i - 1].adj_close:
                    adj = events[i].adj_close / events[i - 1].adj_close - 1
                    note = f" [adjusted close {adj:+.1%}]"
                emit("candidate", {"instrument_id": iid, "source": source,
                                   **dataclasses.asdict(c)},
                     f"{c.flag:<20} {iid:<14} {c.session_date}  {source:<10} "
                     f"{c.ratio - 1:+8.1%}  {c.reason}{note}")
    return 0
