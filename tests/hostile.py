"""A hostile daily-bar corpus: real AAPL rows of the S&P 500 five-year file, each mutated one
way, with a manifest of every row's expected fate.

``python -m tests.hostile`` writes ``tests/fixtures/hostile/daily_corpus.csv`` (bytes exactly as
built: bad encodings, bare CRs, quoted line ends, NULs) and ``daily_manifest.csv`` (one line per
physical record: ``line`` (its first physical line, 1 = the header), ``fate`` (``stored``,
``dead``, ``duplicate``, ``blank``), ``reason`` (the dead letter's reason, or the flags a
stored bar must carry, ``|``-separated), ``source`` and ``close`` (what the store must hold for
a stored bar), ``session_date``, ``case`` (what the row tries). ``tests/pipeline/
test_hostile_corpus.py`` regenerates both, checks them against the committed files, runs the
pipeline on the corpus and checks every row's fate **in the serving store**.

Prices are never invented: each case starts from one real row (its own session, so cases do not
collide unless the case is a collision) and changes one field's spelling or value.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

HERE = Path(__file__).resolve().parent / "fixtures" / "hostile"
CORPUS = HERE / "daily_corpus.csv"
MANIFEST = HERE / "daily_manifest.csv"
COLUMNS = ("symbol", "date", "open", "high", "low", "close", "volume", "source")
MANIFEST_COLUMNS = ("line", "fate", "reason", "source", "close", "session_date", "case")


@dataclasses.dataclass
class Case:
    """One physical record of the corpus and its expected fate."""

    raw: bytes  # the record with its line end(s)
    fate: str
    reason: str = ""
    source: str = ""
    close: str = ""
    session_date: str = ""
    case: str = ""


def _aapl_rows() -> list[list[str]]:
    from tests.conftest import SP500, read_rows

    _, rows = read_rows(SP500, {"AAPL"})
    return rows


def _join(fields: list[str | bytes], end: bytes = b"\n") -> bytes:
    return b",".join(f if isinstance(f, bytes) else f.encode() for f in fields) + end


def build() -> list[Case]:
    """The cases in file order (see the module docstring)."""
    rows = _aapl_rows()
    cases: list[Case] = []
    used = 0

    def take() -> list[str]:
        nonlocal used
        r = rows[used]
        used += 1
        return [*r, "sp500_5yr"]

    def stored(case: str, end: bytes = b"\n", flags: str = "",
               expect_source: str = "sp500_5yr", **changes: str | bytes) -> Case:
        r = take()
        fields: list[str | bytes] = list(r)
        for name, value in changes.items():
            fields[COLUMNS.index(name)] = value
        c = Case(_join(fields, end), "stored", flags, expect_source, r[5], r[1], case)
        cases.append(c)
        return c

    def dead(case: str, reason: str, end: bytes = b"\n", **changes: str | bytes) -> Case:
        r = take()
        fields: list[str | bytes] = list(r)
        for name, value in changes.items():
            fields[COLUMNS.index(name)] = value
        c = Case(_join(fields, end), "dead", reason, case=case, session_date=r[1])
        cases.append(c)
        return c

    def raw(case: str, fate: str, reason: str, data: bytes, **kw: str) -> Case:
        c = Case(data, fate, reason, case=case, **kw)
        cases.append(c)
        return c

    # -- plain real rows, then line ends -------------------------------------------------------
    for _ in range(5):
        stored("a real row as the file has it")
    stored("CRLF line end", end=b"\r\n")
    stored("bare CR line end (old Mac)", end=b"\r")
    stored("the row after a bare CR")
    raw("blank line", "blank", "", b"\n")
    raw("spaces and a tab only", "blank", "", b"  \t\n")
    stored("CRLF after blank lines", end=b"\r\n")
    # -- encodings -----------------------------------------------------------------------------
    dead("a non-UTF-8 byte in the symbol", "bad_encoding", symbol=b"AA\xffPL")
    dead("a Latin-1 e-acute in the source", "bad_encoding", source=b"sourc\xe9")
    dead("an overlong UTF-8 slash", "bad_encoding", volume=b"1\xc0\xaf2")
    dead("a UTF-8-encoded surrogate", "bad_encoding", close=b"1\xed\xa0\x80")
    dead("a UTF-16 little-endian BOM", "bad_encoding", symbol=b"\xff\xfeAAPL")
    dead("a truncated multi-byte character", "bad_encoding", open=b"67.71\xe3\x81")
    dead("a NUL byte", "malformed_line", high=b"68.4\x00")
    dead("a UTF-8 BOM inside the file", "bad_symbol", symbol="\ufeffAAPL")
    dead("a zero-width space in the symbol", "bad_symbol", symbol="\u200bAAPL")
    dead("a no-break space after the symbol", "bad_symbol", symbol="AAPL\u00a0")
    # -- CSV structure -------------------------------------------------------------------------
    dead("a quoted line end inside the symbol", "bad_symbol", symbol=b'"AA\nPL"')
    dead("a quoted CRLF inside the close", "bad_number", close=b'"67.\r\n85"')
    r = take()
    raw("an unterminated quote: this line alone", "dead", "malformed_line",
        _join([b'"AAPL', *r[1:]]), session_date=r[1])
    stored("the row after a stray quote still parses")
    dead("one column too many", "malformed_line", source=b"sp500_5yr,")
    r = take()
    raw("one column missing", "dead", "malformed_line", _join(r[:6]), session_date=r[1])
    stored("quoted numbers", open=b'"' + rows[used][2].encode() + b'"')
    dead("a quoted comma in the symbol", "bad_symbol", symbol=b'"AA,PL"')
    dead("a doubled quote in the symbol", "bad_symbol", symbol=b'"AA""PL"')
    r = take()
    raw("semicolons instead of commas", "dead", "malformed_line",
        ";".join(r).encode() + b"\n", session_date=r[1])
    r = take()
    raw("tabs instead of commas", "dead", "malformed_line", "\t".join(r).encode() + b"\n",
        session_date=r[1])
    raw("the header again", "dead", "bad_timestamp", _join(list(COLUMNS)))
    raw("commas only", "dead", "missing_field", b",,,,,,,\n")
    raw("a lone quote", "dead", "malformed_line", b'"\n')
    # -- numbers -------------------------------------------------------------------------------
    for text, why in (("1_83.91", "an underscore separator"), ("١٦٣", "Arabic-Indic digits"),
                      ("１６３", "full-width digits"), ("163\u2009.0", "a thin space"),
                      ("inf", "inf"), ("-inf", "-inf"), ("nan", "nan"), ("NaN", "NaN"),
                      ("Infinity", "Infinity"), ("0x1p7", "a hex float"),
                      ("1e400", "an exponent beyond the float range"),
                      ("$163.0", "a currency sign"),
                      ("163.0.1", "two decimal points"), ('"163,0"', "a decimal comma"),
                      ("1e", "an empty exponent"), ("--1", "a double sign"),
                      ("9" * 5000 + "x", "a 5,000-digit junk number")):
        dead(f"open: {why}", "bad_number", open=text)
    dead("open: 1e300", "out_of_range", open="1e300")
    dead("close: 1e-30", "out_of_range", close="1e-30")
    dead("high: -1e300", "out_of_range", high="-1e300")
    dead("volume: 1e20", "out_of_range", volume="1e20")
    dead("volume: not a number", "bad_number", volume="many")
    dead("volume: full-width digits", "bad_number", volume="１００")
    stored("numbers padded with spaces", open=" " + rows[used][2] + " ")
    stored("a plus sign", close="+" + rows[used][5])
    stored("an exponent spelling of the close", close=f"{float(rows[used][5]):.10e}")
    stored("no volume (optional)", volume="")
    # -- dates ---------------------------------------------------------------------------------
    for text, why in (("{d}junk", "trailing junk"), ("{d}T00:00", "a time part"),
                      ("{compact}", "no separators"), ("{us}", "US order"),
                      ("{y}-2-7", "no zero padding"), ("٢٠١٨-٠٢-٠٧", "Arabic-Indic digits"),
                      ("{y}-02-30", "February 30"), ("{y}-13-01", "month 13"),
                      ("{y}-02/07", "mixed separators")):
        r = rows[used]
        y, mo, d = r[1].split("-")
        dead(f"date: {why}", "bad_timestamp",
             date=text.format(d=r[1], compact=f"{y}{mo}{d}", us=f"{mo}/{d}/{y}", y=y))
    dead("date: year 9999", "future_timestamp", date="9999-12-31")
    dead("date: 2099 (a bar from the future)", "future_timestamp", date="2099-01-05")
    dead("date: year 0001", "before_floor", date="0001-01-01")
    dead("date: 1899-12-31", "before_floor", date="1899-12-31")
    dead("date: empty", "missing_field", date="")
    stored("date: slashes", date=rows[used][1].replace("-", "/"))
    stored("date: padded with spaces", date=" " + rows[used][1] + " ")
    # -- symbols -------------------------------------------------------------------------------
    for text, why in (("ＡＡＰＬ", "full-width letters"),
                      ("ﬀ", "a ligature that upper-cases to FF"),
                      ("İBM", "a dotted capital I"), ("---", "punctuation only"),
                      ("...", "dots only"), ("^", "a caret only"), ("A" * 100, "100 letters"),
                      ("AA PL", "an inner space"), ("AAPL#1d", "the row-key separator"),
                      ("DROP TABLE bars;--", "SQL"), ("ＡAPL", "one full-width letter")):
        dead(f"symbol: {why}", "bad_symbol", symbol=text)
    dead("symbol: empty", "missing_field", symbol="")
    stored("symbol: lower case", symbol="aapl")
    stored("symbol: a trailing tab", symbol="AAPL\t")
    # -- sources -------------------------------------------------------------------------------
    stored("source: upper case is the same source", source="SP500_5YR")
    stored("source: empty takes the file's default", source="", expect_source="user")
    for text, why in (("x" * 100_000, "100,000 characters"), ("sp500 5yr", "a space"),
                      ("#src", "a leading #"), ("_src", "a leading underscore"),
                      ("ｓｐ５００", "full-width letters")):
        dead(f"source: {why}", "bad_source", source=text)
    # -- validation: block and flag ------------------------------------------------------------
    r = rows[used]
    dead("high below low", "high_below_low", high=r[4], low=r[3])
    dead("a negative open", "non_positive_price", open="-" + rows[used][2])
    dead("a zero close", "non_positive_price", close="0")
    dead("a negative volume", "negative_volume", volume="-" + rows[used][6])
    r = rows[used]
    stored("open above high", flags="ohlc_inconsistent", open=f"{float(r[3]) * 1.01:.4f}")
    stored("zero volume", flags="zero_volume", volume="0")
    r = rows[used]
    stored("high 1.6x low", flags="extreme_range",
           high=f"{float(r[4]) * 1.6:.4f}")
    stored("a Saturday", flags="not_a_session", date="2018-02-10")
    cases[-1].session_date = "2018-02-10"
    stored("an unknown ticker resolves by rule", flags="unknown_instrument", symbol="ZZZZ")
    # -- collisions ----------------------------------------------------------------------------
    first = stored("a row that is repeated below")
    raw("an exact repeat", "duplicate", "", first.raw, session_date=first.session_date)
    raw("a second exact repeat", "duplicate", "", first.raw, session_date=first.session_date)
    raw("the same row, symbol in lower case", "duplicate", "",
        first.raw.replace(b"AAPL,", b"aapl,", 1), session_date=first.session_date)
    raw("the same row, source in upper case", "duplicate", "",
        first.raw.replace(b"sp500_5yr", b"SP500_5YR"), session_date=first.session_date)
    bad = dead("a bad line that is repeated below", "bad_number", close="x")
    raw("the same bad line again: a second dead letter", "dead", "bad_number", bad.raw,
        session_date=bad.session_date)
    blocked = dead("a blocked row that is repeated below", "high_below_low",
                   high=rows[used][4], low=rows[used][3])
    raw("the same blocked row again: a second dead letter", "dead", "high_below_low",
        blocked.raw, session_date=blocked.session_date)
    # -- order: an old row at the end ----------------------------------------------------------
    r = rows[used + 5]
    raw("a row far out of file order", "stored", "", _join([*r, "sp500_5yr"]),
        source="sp500_5yr", close=r[5], session_date=r[1])
    used += 6
    stored("the last row, without a line end", end=b"")
    return cases


def render(cases: list[Case]) -> tuple[bytes, str]:
    """The corpus bytes and the manifest text (``line`` numbers as the reader counts them)."""
    body = io.BytesIO()
    body.write(",".join(COLUMNS).encode() + b"\n")
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    line = 2
    for c in cases:
        body.write(c.raw)
        w.writerow([line, c.fate, c.reason, c.source, c.close, c.session_date, c.case])
        # physical lines as the reader counts them: \r\n, \n and a bare \r each end one
        line += len(c.raw.splitlines()) if c.raw else 0
    return body.getvalue(), out.getvalue()


def read_manifest(path: Path = MANIFEST) -> list[dict[str, str]]:
    """The manifest's rows."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


if __name__ == "__main__":
    HERE.mkdir(parents=True, exist_ok=True)
    corpus, manifest = render(build())
    CORPUS.write_bytes(corpus)
    MANIFEST.write_text(manifest, encoding="utf-8")
    print(f"{CORPUS}: {len(corpus):,} bytes; {MANIFEST}: {manifest.count(chr(10)) - 1} rows")
