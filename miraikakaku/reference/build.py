"""Rebuild the dated instrument master (``instruments.csv`` dates and ``aliases.csv``).

Run from the repository root: ``python -m miraikakaku.reference.build [--data ../shared/data]``.
It rewrites ``miraikakaku/reference/instruments.csv`` (the hand-compiled columns are kept, the
``listing_date``/``delisting_date`` columns recomputed) and ``aliases.csv``; the output is
deterministic, so a rerun on the same data leaves ``git diff`` empty. ``README.md`` next to this
file says what each column means and where each fact comes from.

Sources, in order of precedence:

1. **Lean map files** (``us_daily/lean_algoseek/map_files/*.csv``, ``date,ticker[,exchange]``):
   each row's ticker is valid from the day after the previous row's date through this row's
   date; the first row's date is the first date of the history (a listing or Lean's 1998-01-02
   data floor); a last date of 2050-12-31 means still listed. Exchange letters → MIC:
   N → XNYS, Q → XNAS, P → ARCX (NYSE Arca), Z → BATS (Cboe BZX), A → XASE.
2. **Segments of Lean daily/hour files that no map file covers**: rows of a reused ticker
   before (or between) the map file's ranges belong to an earlier security (``_SEGMENTS``); their
   first and last dates are read from the normalized files.
3. **The data's first date** (normalized files) for every other instrument: ``listing_date`` is
   then the first session in the data, a lower bound of the real listing date; ``delisting_date``
   stays open (no source in ../shared/data says an instrument stopped trading except the map
   files and the segments above). Its one alias starts there too, or the day after an earlier
   holder of the ticker last had it (one ticker names one instrument at a time).

Hand-compiled columns (MIC, kind, name) of the instruments the first version of the file did not
have are in ``_ADDED``; see README.md for why each one has the MIC it has.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
from pathlib import Path

HERE = Path(__file__).resolve().parent
INSTRUMENTS = HERE / "instruments.csv"
ALIASES = HERE / "aliases.csv"
COLUMNS = ("instrument_id", "symbol", "mic", "calendar", "currency", "timezone", "kind", "name",
           "listing_date", "delisting_date")
ALIAS_COLUMNS = ("symbol", "instrument_id", "valid_from", "valid_to", "source")
OPEN_END = "20501231"
EXCHANGES = {"N": "XNYS", "Q": "XNAS", "P": "ARCX", "Z": "BATS", "A": "XASE"}

US = ("XNYS", "USD", "America/New_York")

# Map file (stem) → instrument id. The id is the instrument's stable identity: the MIC of the map
# file's last row and its best-known ticker in the data. An earlier holder of a reused ticker gets
# ``{MIC}:{TICKER}-{first year}`` (fits INSTRUMENT_ID_RE, sorts next to the later holder, never a
# real ticker: no listed ticker ends in a dash and four digits).
_MAP_IDS = {
    "aaa.1": "XNYS:AAA-2002", "aaa": "ARCX:AAA", "aapl": "XNAS:AAPL", "bno": "ARCX:BNO",
    "eem": "ARCX:EEM", "fb.1": "XNYS:FB-1999", "fb": "XNAS:FB", "gdvd": "BATS:GDVD",
    "gooav": "XNAS:GOOAV", "goog": "XNAS:GOOG", "googl": "XNAS:GOOGL", "ibm": "XNYS:IBM",
    "iwm": "ARCX:IWM", "qqq": "XNAS:QQQ", "spwr": "XNAS:SPWR", "spy": "ARCX:SPY",
    "tap.a": "XNYS:TAP.A", "tfcfa": "XNAS:FOXA", "twx.1": "XNYS:TWX-1998", "twx": "XNYS:TWX",
    "uso": "ARCX:USO", "vxx.1": "ARCX:VXX-2009", "vxx": "BATS:VXX", "wm": "XNYS:WM",
}

# Earlier securities inside a Lean file that no map file covers: (id, ticker, Lean file of the
# normalized data, last date of the segment or None = up to the map file's first date).
_SEGMENTS = (
    ("XNYS:WM-1998", "WM", "us_daily_lean", "2008-09-26"),
    ("XNYS:BNO-1998", "BNO", "us_daily_lean", None),
    ("XNYS:USO-1998", "USO", "us_daily_lean", None),
    ("XNYS:EEM-1998", "EEM", "us_daily_lean", None),
)

# Instruments added to the hand-compiled file: id → (kind, name).
_ADDED = {
    "ARCX:AAA": ("etf", "AAF First Priority CLO Bond ETF"),
    "XNYS:AAA-2002": ("stock", ""),
    "ARCX:BNO": ("etf", "United States Brent Oil Fund"),
    "XNYS:BNO-1998": ("stock", ""),
    "XNYS:CARR": ("stock", "Carrier Global"),
    "XNYS:DOW": ("stock", "Dow Inc."),
    "ARCX:EEM": ("etf", "iShares MSCI Emerging Markets ETF"),
    "XNYS:EEM-1998": ("stock", ""),
    "XNYS:FB-1999": ("stock", ""),
    "BATS:GDVD": ("etf", ""),
    "XNAS:GOOAV": ("stock", "Google Class A (when issued)"),
    "ARCX:IWM": ("etf", "iShares Russell 2000 ETF"),
    "XNYS:OTIS": ("stock", "Otis Worldwide"),
    "XNAS:QQQ": ("etf", "Invesco QQQ Trust"),
    "XNAS:SHY": ("etf", "iShares 1-3 Year Treasury Bond ETF"),
    "ARCX:SPY": ("etf", "SPDR S&P 500 ETF Trust"),
    "XNAS:SPWR": ("stock", "SunPower"),
    "XNYS:TAP.A": ("stock", "Molson Coors Class A"),
    "XNYS:TWX-1998": ("stock", "Time Warner Inc. (merged into AOL Time Warner 2001)"),
    "ARCX:USO": ("etf", "United States Oil Fund"),
    "XNYS:USO-1998": ("stock", ""),
    "BATS:VXX": ("etf", "iPath Series B S&P 500 VIX Short-Term Futures ETN"),
    "ARCX:VXX-2009": ("etf", "iPath S&P 500 VIX Short-Term Futures ETN (matured 2019)"),
    "XNYS:WM-1998": ("stock", "Washington Mutual"),
    "XNAS:YHOO": ("stock", "Yahoo!"),
    "INDEX:IXIC": ("index", "NASDAQ Composite"),
}

# Symbols of the data that are not the instrument's ticker (index codes of other vendors).
_EXTRA_ALIASES = (("^GSPC", "INDEX:SPX", "yahoo"), ("^IXIC", "INDEX:IXIC", "yahoo"))


def _date(yyyymmdd: str) -> str:
    return f"{yyyymmdd[:4]}-{yyyymmdd[4:6]}-{yyyymmdd[6:8]}"


def _day_after(iso: str) -> str:
    return (dt.date.fromisoformat(iso) + dt.timedelta(days=1)).isoformat()


def read_map_file(path: Path) -> tuple[list[tuple[str, str, str | None]], str]:
    """One map file → ([(ticker, valid_from, valid_to | None)], exchange letter of the last row).

    Raises:
        ValueError: a file with fewer than two rows, or whose first two rows name different
            tickers.
    """
    rows = [r for r in csv.reader(path.read_text().splitlines()) if r]
    if len(rows) < 2:
        raise ValueError(f"{path}: a map file needs a start row and an end row")
    ranges: list[tuple[str, str, str | None]] = []
    start = _date(rows[0][0])
    for row in rows[1:]:
        end = None if row[0] == OPEN_END else _date(row[0])
        ticker = row[1].upper()
        if ranges and ranges[-1][0] == ticker:  # a row that does not change the ticker
            ranges[-1] = (ticker, ranges[-1][1], end)
        else:
            ranges.append((ticker, start, end))
        if end is not None:
            start = _day_after(end)
    if ranges[0][0] != rows[0][1].upper():  # not in Lean's files: a one-day first ticker
        raise ValueError(f"{path}: the first two rows name different tickers")
    exchange = rows[-1][2] if len(rows[-1]) > 2 else ""
    return ranges, exchange


def data_dates(data: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """(file stem, symbol) → (first date, last date) over ``normalized/*.csv.gz``."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for path in sorted((data / "normalized").glob("*.normalized.csv.gz")):
        stem = path.name.split(".")[0]
        with gzip.open(path, "rt", newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            si = header.index("symbol")
            di = header.index("date") if "date" in header else header.index("timestamp")
            for row in reader:
                if len(row) <= max(si, di):
                    continue
                key, day = (stem, row[si].upper()), row[di][:10]
                lo, hi = out.get(key, (day, day))
                out[key] = (min(lo, day), max(hi, day))
    return out


def build(data: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Compute the instrument rows and alias rows (see the module docstring)."""
    with INSTRUMENTS.open(newline="") as f:
        base = {r["instrument_id"]: r for r in csv.DictReader(f)}
    dates = data_dates(data)
    aliases: list[dict[str, str]] = []
    listing: dict[str, tuple[str, str | None]] = {}
    mapped: set[str] = set()  # symbols whose Lean rows the map files (and segments) explain
    for stem, iid in sorted(_MAP_IDS.items()):
        ranges, exchange = read_map_file(data / "us_daily/lean_algoseek/map_files" / f"{stem}.csv")
        mic = iid.split(":")[0]
        if exchange and EXCHANGES[exchange] != mic:
            raise ValueError(f"{stem}: exchange {exchange} is not {mic}")
        for ticker, start, end in ranges:
            aliases.append({"symbol": ticker, "instrument_id": iid, "valid_from": start,
                            "valid_to": end or "", "source": f"lean_map:{stem}"})
            mapped.add(ticker)
        listing[iid] = (ranges[0][1], ranges[-1][2])
    for iid, ticker, stem, last in _SEGMENTS:
        first = dates[(stem, ticker)][0]
        later = min(a["valid_from"] for a in aliases if a["symbol"] == ticker)
        end = last or _last_before(data, stem, ticker, later)
        aliases.append({"symbol": ticker, "instrument_id": iid, "valid_from": first,
                        "valid_to": end, "source": f"data:{stem}"})
        listing[iid] = (first, end)
    rows: list[dict[str, str]] = []
    ids = sorted(set(base) | set(_ADDED) | set(listing))
    for iid in ids:
        mic, code = iid.split(":")
        if iid in base:
            row = {c: base[iid].get(c, "") for c in COLUMNS}
        else:
            kind, name = _ADDED[iid]
            ticker = code.rsplit("-", 1)[0] if code[-5:-4] == "-" else code
            if mic == "INDEX":
                row = dict(zip(COLUMNS, (iid, ticker, "", "XNYS", "USD", "America/New_York",
                                         kind, name, "", ""), strict=True))
            else:
                row = dict(zip(COLUMNS, (iid, ticker, mic, *US, kind, name, "", ""),
                               strict=True))
        if iid in listing:
            start, end = listing[iid]
        else:
            syms = {row["symbol"]} | {s for s, i, _ in _EXTRA_ALIASES if i == iid}
            firsts = [lo for (stem, sym), (lo, _) in dates.items()
                      if sym in syms and not (sym in mapped and "lean" in stem)]
            if not firsts:
                raise ValueError(f"{iid}: no rows in the data")
            start, end = min(firsts), None
            aliases.append({"symbol": row["symbol"], "instrument_id": iid, "valid_from": start,
                            "valid_to": "", "source": "data"})
        row["listing_date"], row["delisting_date"] = start, end or ""
        rows.append(row)
    for sym, iid, source in _EXTRA_ALIASES:
        first = min(lo for (_, s), (lo, _) in dates.items() if s == sym)
        aliases.append({"symbol": sym, "instrument_id": iid, "valid_from": first, "valid_to": "",
                        "source": source})
    for a in aliases:  # a ticker names one instrument at a time: the earlier holder keeps it
        if a["source"] != "data":  # through its last date (the new NWSA's when-issued rows
            continue  # of 2013-06-19..28 predate the old NWSA's last day, 2013-06-28)
        for b in aliases:
            if b is not a and b["symbol"] == a["symbol"] and b["valid_to"] and \
                    b["valid_from"] <= a["valid_from"] <= b["valid_to"]:
                a["valid_from"] = _day_after(b["valid_to"])
    aliases.sort(key=lambda a: (a["symbol"], a["valid_from"], a["instrument_id"]))
    return rows, aliases


def _last_before(data: Path, stem: str, ticker: str, before: str) -> str:
    """Last date of ``ticker`` in ``normalized/{stem}`` strictly before ``before``."""
    last = ""
    with gzip.open(data / "normalized" / f"{stem}.normalized.csv.gz", "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        si, di = header.index("symbol"), header.index("date")
        for row in reader:
            if row[si].upper() == ticker and row[di] < before:
                last = max(last, row[di][:10])
    return last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HERE.parents[2] / "shared" / "data",
                        help="The shared data folder. Default: ../shared/data.")
    args = parser.parse_args(argv)
    rows, aliases = build(args.data)
    for path, cols, out in ((INSTRUMENTS, COLUMNS, rows), (ALIASES, ALIAS_COLUMNS, aliases)):
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=cols, lineterminator="\n")
            writer.writeheader()
            writer.writerows(out)
    print(f"{len(rows)} instruments, {len(aliases)} aliases")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
