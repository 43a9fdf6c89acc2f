"""Instrument identity: exchange-qualified ids, aliases and the reference data behind them.

An instrument id is ``{MIC}:{local code}`` (``XNAS:AAPL``, ``XTKS:7203``); indices use the
pseudo-exchange ``INDEX`` (``INDEX:N225``). The familiar tickers (``AAPL``, ``7203.T``) are
aliases. The reference file ``miraikakaku/reference/instruments.csv`` lists every instrument in
../shared/data: its MIC, calendar, currency and time zone. The US listing exchanges in it were
compiled by hand for 2013-2018 (Nasdaq-listed S&P 500 members → XNAS, Cboe → BATS, the rest XNYS);
the instrument-master issue replaces this file with dated reference data (renames, ticker reuse).

Unknown symbols resolve by rule rather than being rejected: ``NNNN.T`` → ``XTKS:NNNN`` (JPY,
XTKS calendar), anything else → ``{default_mic}:{SYMBOL}`` (XNYS calendar, USD). The resolved
instrument says ``known=False`` so callers can flag it.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.resources
import re

__all__ = ["Instrument", "InstrumentMaster", "load_master", "INSTRUMENT_ID_RE"]

INSTRUMENT_ID_RE = re.compile(r"^[A-Z]{4,5}:[A-Z0-9.\-]{1,12}$")
"""An exchange-qualified id: a 4-letter MIC (or ``INDEX``), a colon, the local code."""


@dataclasses.dataclass(frozen=True)
class Instrument:
    """Reference data for one instrument.

    Attributes:
        instrument_id: ``MIC:CODE``.
        symbol: the common alias (``AAPL``, ``7203.T``).
        mic: ISO 10383 market identifier code, empty for an index.
        calendar: exchange_calendars code for sessions (``XNYS``, ``XTKS``).
        currency: ISO 4217 quote currency.
        timezone: IANA time zone of the exchange.
        kind: ``stock``, ``etf`` or ``index``.
        name: company or index name (may be empty).
        known: False when resolved by rule rather than found in the reference data.
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


class InstrumentMaster:
    """Look-ups from alias or id to ``Instrument``.

    Args:
        instruments: the reference rows.
        default_mic: MIC used for unknown non-Tokyo symbols.
    """

    def __init__(self, instruments: list[Instrument], default_mic: str = "XNYS") -> None:
        self.default_mic = default_mic
        self._by_id = {i.instrument_id: i for i in instruments}
        self._by_alias = {i.symbol.upper(): i for i in instruments}

    def __iter__(self):
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def lookup(self, symbol_or_id: str) -> Instrument | None:
        """Find a known instrument by alias (``AAPL``) or id (``XNAS:AAPL``), case-insensitively."""
        key = symbol_or_id.strip().upper()
        return self._by_id.get(key) or self._by_alias.get(key)

    def resolve(self, symbol: str) -> Instrument:
        """Return the instrument for a source's symbol, by reference data or by rule.

        Raises:
            ValueError: if ``symbol`` is empty or has characters no ticker has.
        """
        found = self.lookup(symbol)
        if found is not None:
            return found
        sym = symbol.strip().upper()
        if not sym or not re.fullmatch(r"[A-Z0-9.\-^]{1,15}", sym):
            raise ValueError(f"invalid symbol {symbol!r}")
        if sym.endswith(".T") and sym[:-2].isdigit():
            code = sym[:-2]
            return Instrument(f"XTKS:{code}", sym, "XTKS", "XTKS", "JPY", "Asia/Tokyo", "stock",
                              known=False)
        return Instrument(f"{self.default_mic}:{sym}", sym, self.default_mic, "XNYS", "USD",
                          "America/New_York", "stock", known=False)


@functools.lru_cache(maxsize=4)
def load_master(default_mic: str = "XNYS") -> InstrumentMaster:
    """Load the packaged reference file ``reference/instruments.csv`` (cached)."""
    ref = importlib.resources.files("miraikakaku").joinpath("reference/instruments.csv")
    text = ref.read_text()
    rows = [Instrument(**r) for r in csv.DictReader(text.splitlines())]
    return InstrumentMaster(rows, default_mic=default_mic)
