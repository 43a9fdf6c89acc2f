"""Instrument identity: exchange-qualified ids, dated aliases and the reference data behind them.

An instrument id is ``{MIC}:{local code}`` (``XNAS:AAPL``, ``XTKS:7203``); indices use the
pseudo-exchange ``INDEX`` (``INDEX:N225``). The familiar tickers (``AAPL``, ``7203.T``) are
aliases, each valid for a date range: a rename maps the old ticker to the same instrument for its
dates (``UW`` → ``WMI`` → ``WM`` are all ``XNYS:WM``), and a reused ticker maps to two instruments
by date (``FB`` is ``XNYS:FB-1999`` from 1999-09-29 to 2003-03-28 and ``XNAS:FB``, Facebook, from
2012-05-18). The earlier holder of a reused ticker gets the id ``{MIC}:{TICKER}-{first year}``:
stable (ids never change on a rename, so stored rows stay reachable), deterministic from the
reference data, inside ``INSTRUMENT_ID_RE``, and never a real ticker (none ends in a dash and four
digits).

Reference data (``miraikakaku/reference/``, rebuilt by ``python -m miraikakaku.reference.build``
from the Lean map files and the data's first/last dates; README.md there says how):

* ``instruments.csv``: one row per instrument: MIC, calendar, currency, time zone, kind, name,
  ``listing_date`` and ``delisting_date`` (empty = still listed as far as the data knows);
* ``aliases.csv``: ``symbol, instrument_id, valid_from, valid_to, source`` (empty ``valid_to``
  = open; ``source`` = where the fact comes from, e.g. ``lean_map:wm``, ``data``);
* ``symbology.csv``: data sources that label their whole history with the tickers of one date
  (a vendor snapshot, e.g. Kaggle's S&P 500 file uses 2018-02-07 tickers for 2013 rows); their
  symbols resolve as of that date instead of each row's date.

``resolve(symbol, on)`` picks the alias range that contains ``on``; when none does (a vendor that
back-fills history under today's ticker, e.g. Alpha Vantage's GOOGL rows from 2004), the range
nearest in time; with ``on=None`` the latest range (today's listing). Unknown symbols resolve by
rule rather than being rejected: ``NNNN.T`` → ``XTKS:NNNN`` (JPY, XTKS calendar), anything else →
``{default_mic}:{SYMBOL}`` (XNYS calendar, USD). Such instruments say ``known=False`` so callers
can flag them.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import datetime as dt
import functools
import importlib.resources
import re
from collections.abc import Iterable, Iterator

__all__ = ["Alias", "Instrument", "InstrumentMaster", "load_master", "INSTRUMENT_ID_RE"]

INSTRUMENT_ID_RE = re.compile(r"^[A-Z]{4,5}:[A-Z0-9][A-Z0-9.\-]{0,11}$")
"""An exchange-qualified id: a 4-letter MIC (or ``INDEX``), a colon, the local code, starting
with a letter or digit (an earlier holder of a reused ticker: ``CODE-YYYY``)."""

_SYMBOL_RE = re.compile(r"[A-Z0-9.\-^]{1,15}")


@dataclasses.dataclass(frozen=True)
class Alias:
    """One ticker of an instrument over a date range.

    Attributes:
        symbol: the ticker, upper case (``WMI``, ``^GSPC``).
        valid_from: first date it named the instrument (None: open).
        valid_to: last date, inclusive (None: still valid).
        source: where the range comes from: ``lean_map:<file>`` (a Lean map file),
            ``data:<file>`` (a segment of a data file no map file covers), ``data`` (the first
            date the data has the symbol), ``yahoo`` (a vendor's index code).
    """

    symbol: str
    valid_from: dt.date | None
    valid_to: dt.date | None
    source: str = ""

    def covers(self, day: dt.date) -> bool:
        """True when ``day`` is inside ``[valid_from, valid_to]``."""
        return (self.valid_from is None or self.valid_from <= day) and (
            self.valid_to is None or day <= self.valid_to)

    def distance(self, day: dt.date) -> int:
        """Days from ``day`` to the range (0 inside it)."""
        if self.valid_from is not None and day < self.valid_from:
            return (self.valid_from - day).days
        if self.valid_to is not None and day > self.valid_to:
            return (day - self.valid_to).days
        return 0


@dataclasses.dataclass(frozen=True)
class Instrument:
    """Reference data for one instrument.

    Equality and hashing use the reference columns the stores keep (id through ``known``); the
    dated fields come from the packaged master and are left out (a store round-trip keeps
    equality).

    Attributes:
        instrument_id: ``MIC:CODE``.
        symbol: the common alias (``AAPL``, ``7203.T``): the latest ticker.
        mic: ISO 10383 market identifier code, empty for an index.
        calendar: exchange_calendars code for sessions (``XNYS``, ``XTKS``).
        currency: ISO 4217 quote currency.
        timezone: IANA time zone of the exchange.
        kind: ``stock``, ``etf`` or ``index``.
        name: company or index name (may be empty: not every earlier holder is named by a source).
        known: False when resolved by rule rather than found in the reference data.
        listing_date: first session known (a Lean map file's first date, else the first date in
            ../shared/data: a lower bound of the real listing); None when unknown.
        delisting_date: last session (Lean map files, data segments); None while listed.
        aliases: every ticker of the instrument with its dates, oldest first.
    """

    instrument_id: str
    symbol: str
    mic: str
    calendar: str
    currency: str
    timezone: str
    kind: str
    name: str = ""
    known: bool = True
    listing_date: dt.date | None = dataclasses.field(default=None, compare=False)
    delisting_date: dt.date | None = dataclasses.field(default=None, compare=False)
    aliases: tuple[Alias, ...] = dataclasses.field(default=(), compare=False)

    def listed_on(self, day: dt.date) -> bool:
        """True when ``day`` is between the listing and delisting dates (open ends count)."""
        return (self.listing_date is None or self.listing_date <= day) and (
            self.delisting_date is None or day <= self.delisting_date)


def _ranges_key(item: tuple[Alias, Instrument]) -> tuple[dt.date, str]:
    return (item[0].valid_from or dt.date.min, item[1].instrument_id)


class InstrumentMaster:
    """Look-ups from alias (as of a date) or id to ``Instrument``.

    Args:
        instruments: the reference rows; their ``aliases`` (if any) are indexed, and each
            instrument's own ``symbol`` is an open-ended alias when it has none.
        default_mic: MIC used for unknown non-Tokyo symbols.
        symbology: data source → the date whose tickers label its whole history.
    """

    def __init__(self, instruments: Iterable[Instrument], default_mic: str = "XNYS",
                 symbology: dict[str, dt.date] | None = None) -> None:
        self.default_mic = default_mic
        self.symbology = dict(symbology or {})
        self._by_id: dict[str, Instrument] = {}
        ranges: dict[str, list[tuple[Alias, Instrument]]] = {}
        for inst in instruments:
            self._by_id[inst.instrument_id.upper()] = inst
            aliases = inst.aliases or (Alias(inst.symbol.upper(), None, None, "reference"),)
            for a in aliases:
                ranges.setdefault(a.symbol.upper(), []).append((a, inst))
        # per symbol: the ranges sorted by start; a symbol of one instrument needs no date
        self._ranges = {s: tuple(sorted(r, key=_ranges_key)) for s, r in ranges.items()}
        self._starts = {s: [a.valid_from or dt.date.min for a, _ in r]
                        for s, r in self._ranges.items()}
        self._single = {s: r[-1][1] for s, r in self._ranges.items()
                        if len({i.instrument_id for _, i in r}) == 1}

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, instrument_id: str) -> Instrument | None:
        """The instrument with this id (case-insensitive), or None."""
        return self._by_id.get(instrument_id.strip().upper())

    def of_event(self, instrument_id: str, symbol: str, on: dt.date | None = None) -> Instrument:
        """The instrument an event names: by its id (a reused ticker's symbol names two
        instruments), else ``resolve(symbol, on)`` (an id the master does not know).

        Raises:
            ValueError: as ``resolve``, when the id is unknown and the symbol invalid.
        """
        return self.get(instrument_id) or self.resolve(symbol, on)

    def needs_date(self, symbol: str) -> bool:
        """True when ``symbol`` names different instruments on different dates (a reused
        ticker): only then does ``resolve`` need the row's date."""
        key = symbol.strip().upper()
        return key in self._ranges and key not in self._single

    def lookup(self, symbol_or_id: str, on: dt.date | None = None) -> Instrument | None:
        """Find a known instrument by id (``XNAS:AAPL``) or alias (``AAPL``), case-insensitively.

        Args:
            symbol_or_id: an instrument id or a ticker.
            on: the date the ticker is read at: the alias range containing it, else the nearest
                range (ties: the later one); None: the latest range (today's listing).

        Returns:
            The instrument, or None when neither an id nor an alias matches.
        """
        key = symbol_or_id.strip().upper()
        found = self._by_id.get(key)
        if found is not None:
            return found
        single = self._single.get(key)
        if single is not None:
            return single
        ranges = self._ranges.get(key)
        if ranges is None:
            return None
        if on is None:
            return ranges[-1][1]
        i = bisect.bisect_right(self._starts[key], on) - 1  # last range starting on or before
        if i >= 0 and ranges[i][0].covers(on):
            return ranges[i][1]
        best = min(range(len(ranges)), key=lambda j: (ranges[j][0].distance(on), -j))
        return ranges[best][1]

    def history(self, instrument_id: str) -> tuple[Alias, ...]:
        """Every ticker of the instrument over time, oldest first.

        Raises:
            KeyError: unknown instrument id.
        """
        inst = self._by_id.get(instrument_id.strip().upper())
        if inst is None:
            raise KeyError(instrument_id)
        return inst.aliases or (Alias(inst.symbol, inst.listing_date, inst.delisting_date,
                                      "reference"),)

    def symbols_on(self, source: str, day: dt.date) -> dt.date:
        """The date whose tickers ``source`` uses for a row of ``day`` (``symbology.csv``)."""
        return self.symbology.get(source, day)

    def resolve(self, symbol: str, on: dt.date | None = None) -> Instrument:
        """Return the instrument for a source's symbol, by reference data or by rule.

        Args:
            symbol: a ticker or an instrument id.
            on: the row's date (see ``lookup``); None: today's listing.

        Raises:
            ValueError: if ``symbol`` is empty or has characters no ticker has, or is unknown
                and gives no id matching ``INSTRUMENT_ID_RE`` by rule (``^N225``, ``-AAPL``).
        """
        found = self.lookup(symbol, on)
        if found is not None:
            return found
        sym = symbol.strip().upper()
        if not sym or not _SYMBOL_RE.fullmatch(sym):
            raise ValueError(f"invalid symbol {symbol!r}")
        if sym.endswith(".T") and sym[:-2].isdigit():
            code = sym[:-2]
            return Instrument(f"XTKS:{code}", sym, "XTKS", "XTKS", "JPY", "Asia/Tokyo", "stock",
                              known=False)
        iid = f"{self.default_mic}:{sym}"
        if not INSTRUMENT_ID_RE.match(iid):  # the stream refuses such ids: so does the file
            raise ValueError(f"invalid symbol {symbol!r}: unknown, and {iid!r} is no instrument "
                             f"id (INSTRUMENT_ID_RE)")
        return Instrument(iid, sym, self.default_mic, "XNYS", "USD", "America/New_York", "stock",
                          known=False)


def _opt_date(text: str | None) -> dt.date | None:
    return dt.date.fromisoformat(text) if text else None


def _read(name: str) -> list[dict[str, str]]:
    ref = importlib.resources.files("miraikakaku").joinpath(f"reference/{name}")
    return list(csv.DictReader(ref.read_text().splitlines()))


@functools.lru_cache(maxsize=4)
def load_master(default_mic: str = "XNYS") -> InstrumentMaster:
    """Load the packaged reference files (``reference/instruments.csv``, ``aliases.csv``,
    ``symbology.csv``; cached per ``default_mic``).

    Raises:
        ValueError: an alias of an instrument the instruments file does not have, or an id
            outside ``INSTRUMENT_ID_RE``.
    """
    aliases: dict[str, list[Alias]] = {}
    for r in _read("aliases.csv"):
        aliases.setdefault(r["instrument_id"], []).append(
            Alias(r["symbol"].upper(), _opt_date(r["valid_from"]), _opt_date(r["valid_to"]),
                  r["source"]))
    rows = []
    for r in _read("instruments.csv"):
        iid = r["instrument_id"]
        if not INSTRUMENT_ID_RE.match(iid):
            raise ValueError(f"instrument id {iid!r} does not match INSTRUMENT_ID_RE")
        own = sorted(aliases.pop(iid, []), key=lambda a: a.valid_from or dt.date.min)
        rows.append(Instrument(
            iid, r["symbol"], r["mic"], r["calendar"], r["currency"], r["timezone"], r["kind"],
            r["name"], listing_date=_opt_date(r["listing_date"]),
            delisting_date=_opt_date(r["delisting_date"]), aliases=tuple(own)))
    if aliases:
        raise ValueError(f"aliases of unknown instruments: {sorted(aliases)}")
    symbology = {r["source"]: dt.date.fromisoformat(r["symbols_as_of"])
                 for r in _read("symbology.csv")}
    return InstrumentMaster(rows, default_mic=default_mic, symbology=symbology)
