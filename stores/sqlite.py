"""Embedded serving store: SQLite in WAL mode (the API reads while the pipeline writes).

SQLite allows one writer at a time; the pipeline funnels every record through one batched
writer (``transforms.sinks.WriteToServingStore``) that calls ``write_batch``, and each batch is one
transaction. Readers open their own connections and never block the writer (WAL).

All writes are idempotent: primary keys are the row keys of ``miraikakaku.rowkeys`` (plus the
source for bars, the model for predictions), and rewrites replace rows with identical content.

Try it: ``python -m stores.sqlite var/serving.db`` prints the row counts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from miraikakaku import rowkeys
from miraikakaku.instruments import Instrument
from miraikakaku.schema import (
    AlertEvent,
    DeadLetter,
    Prediction,
    PriceEvent,
    SupersededRevision,
    utc,
)
from miraikakaku.tracking import (
    PERFORMANCE_COLUMNS,
    PERFORMANCE_KEY,
    PERFORMANCE_TABLE,
    ModelPerformance,
    PerformanceSummary,
    summary_from_sums,
)
from notifier.events import TOPIC_ALERTS, TOPICS, encode_event, event_id_of, message_id
from stores.base import NEIGHBOUR_FLAGS, BarFlag, BarRow, PredictionRow, QuoteRow, RevisionRow

__all__ = ["SqliteServingStore", "open_store", "STORE_SCHEMA_VERSION"]

STORE_SCHEMA_VERSION = 1

_DDL = """
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instruments (
  instrument_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, mic TEXT NOT NULL, calendar TEXT NOT NULL,
  currency TEXT NOT NULL, timezone TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
  known INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS instruments_by_symbol ON instruments (symbol COLLATE NOCASE);
CREATE TABLE IF NOT EXISTS bars (
  row_key TEXT NOT NULL, source TEXT NOT NULL, instrument_id TEXT NOT NULL, interval TEXT NOT NULL,
  session_date TEXT NOT NULL, event_time TEXT NOT NULL, open REAL NOT NULL, high REAL NOT NULL,
  low REAL NOT NULL, close REAL NOT NULL, volume REAL, adj_close REAL, currency TEXT NOT NULL,
  event_id TEXT NOT NULL, PRIMARY KEY (row_key, source)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bar_flags (
  row_key TEXT NOT NULL, source TEXT NOT NULL, flag TEXT NOT NULL, detail TEXT NOT NULL,
  PRIMARY KEY (row_key, source, flag)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quotes (
  instrument_id TEXT PRIMARY KEY, row_key TEXT NOT NULL, source TEXT NOT NULL,
  source_rank INTEGER NOT NULL, session_date TEXT NOT NULL, event_time TEXT NOT NULL,
  open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL, volume REAL,
  adj_close REAL, currency TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS predictions (
  row_key TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
  instrument_id TEXT NOT NULL, source TEXT NOT NULL, as_of_date TEXT NOT NULL,
  as_of_time TEXT NOT NULL, target_date TEXT NOT NULL, base_price REAL NOT NULL,
  predicted_log_return REAL NOT NULL, predicted_price REAL NOT NULL,
  PRIMARY KEY (row_key, model_name, model_version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
  alert_id TEXT PRIMARY KEY, rule_id TEXT NOT NULL, kind TEXT NOT NULL,
  instrument_id TEXT NOT NULL, event_time TEXT NOT NULL, session_date TEXT NOT NULL,
  value REAL NOT NULL, threshold REAL NOT NULL, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_by_instrument ON alerts (instrument_id, event_time);
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (event_time);
CREATE TABLE IF NOT EXISTS outbox (
  message_id TEXT PRIMARY KEY, topic TEXT NOT NULL, payload TEXT NOT NULL,
  created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
  dead_letter_id TEXT PRIMARY KEY, step TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL,
  payload TEXT NOT NULL, origin TEXT NOT NULL, event_time TEXT, created_at TEXT NOT NULL,
  position TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS dead_letters_by_reason ON dead_letters (reason);
CREATE TABLE IF NOT EXISTS bar_revisions (
  row_key TEXT NOT NULL, source TEXT NOT NULL, event_id TEXT NOT NULL, payload TEXT NOT NULL,
  origin TEXT NOT NULL, position TEXT NOT NULL, superseded_by TEXT NOT NULL,
  recorded_at TEXT NOT NULL, PRIMARY KEY (row_key, source, payload));
"""

_TABLES = ("instruments", "bars", "bar_flags", "quotes", "predictions", "alerts", "outbox",
           "dead_letters", "bar_revisions")

_KEEP_SUPERSEDED = (
    "INSERT OR IGNORE INTO bar_revisions SELECT row_key, source, event_id, "
    "json_object('open', open, 'high', high, 'low', low, 'close', close, 'volume', volume, "
    "'adj_close', adj_close, 'event_time', event_time, 'currency', currency), "
    "'serving store', 'stored before ' || ?1, 'a later ingest', ?1 FROM bars "
    "WHERE row_key = ?2 AND source = ?3 AND (open IS NOT ?4 OR high IS NOT ?5 OR low IS NOT ?6 "
    "OR close IS NOT ?7 OR volume IS NOT ?8 OR adj_close IS NOT ?9)")
_NEIGHBOURS = ", ".join(f"'{f}'" for f in sorted(NEIGHBOUR_FLAGS))
# a new revision of a bar replaces its own flags (the neighbour flags come as BarFlag records)
_CLEAR_OWN_FLAGS = (f"DELETE FROM bar_flags WHERE row_key = ? AND source = ? "
                    f"AND flag NOT IN ({_NEIGHBOURS})")


def _performance_ddl() -> str:
    """``model_performance`` DDL from ``miraikakaku.tracking.PERFORMANCE_COLUMNS``."""
    types = {"STRING": "TEXT", "DATE": "TEXT", "INTEGER": "INTEGER", "FLOAT": "REAL"}
    cols = ", ".join(f"{c.name} {types[c.type]}{' NOT NULL' if c.required else ''}"
                     for c in PERFORMANCE_COLUMNS)
    return (f"CREATE TABLE IF NOT EXISTS {PERFORMANCE_TABLE} ({cols}, "
            f"PRIMARY KEY ({', '.join(PERFORMANCE_KEY)})) WITHOUT ROWID;\n")


_DDL += _performance_ddl()  # added with the tracking job; IF NOT EXISTS upgrades older stores
_PERFORMANCE_UPSERT = (f"INSERT OR REPLACE INTO {PERFORMANCE_TABLE} VALUES "
                       f"({','.join('?' * len(PERFORMANCE_COLUMNS))})")


def _ts(value: dt.datetime) -> str:
    return utc(value).isoformat()  # raises on naive datetimes


def _now() -> str:
    return _ts(dt.datetime.now(dt.timezone.utc))


def _parse_ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


class SqliteServingStore:
    """The embedded ``ServingStore`` (see ``stores.base.ServingStore`` for the contract).

    Args:
        path: database file; created with its tables when missing.
        source_priority: source names, best first; decides which source's bar is the latest quote
            when two sources have a bar for the same session.
        read_only: open for reading only (the API); the file must exist.
        outbox_topics: which records also go to the ``outbox`` table for the notifier
            (``notifier.events``: ``prices``, ``predictions``; ``alerts`` always do). Default:
            ``$MIRAIKAKAKU_OUTBOX_TOPICS`` (comma-separated, e.g. ``alerts`` to turn price and
            prediction rows off), else all three.

    Raises:
        FileNotFoundError: ``read_only`` and the file does not exist.
        RuntimeError: the file was written by an incompatible store schema version.
    """

    def __init__(self, path: str | Path, *, source_priority: Sequence[str] = (),
                 read_only: bool = False, outbox_topics: Iterable[str] | None = None) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if outbox_topics is None:
            env = os.environ.get("MIRAIKAKAKU_OUTBOX_TOPICS")
            outbox_topics = TOPICS if env is None else [t.strip() for t in env.split(",")]
        self.outbox_topics = frozenset(t for t in outbox_topics if t) | {TOPIC_ALERTS}
        self._rank = {s: i for i, s in enumerate(source_priority)}
        self._local = threading.local()
        if read_only:
            if not self.path.exists():
                raise FileNotFoundError(
                    f"no serving store at {self.path}: run `miraikakaku run` first")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                conn.executescript(_DDL)
                columns = {r[1] for r in conn.execute("PRAGMA table_info(dead_letters)")}
                if "position" not in columns:  # a store written before dead-letter positions
                    conn.execute("ALTER TABLE dead_letters ADD COLUMN position TEXT NOT NULL "
                                 "DEFAULT ''")
                conn.execute("INSERT OR IGNORE INTO store_meta VALUES ('schema_version', ?)",
                             (str(STORE_SCHEMA_VERSION),))
        version = self._conn().execute(
            "SELECT value FROM store_meta WHERE key='schema_version'").fetchone()
        if version is None or int(version[0]) != STORE_SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: store schema {version} != {STORE_SCHEMA_VERSION}")

    # -- connections -------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30,
                                   check_same_thread=False)
        else:
            conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=60000")
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- writes ------------------------------------------------------------------------------
    def write_batch(self, records: Iterable[object]) -> int:
        """Write records of the known types in one transaction; see ``ServingStore.write_batch``."""
        instruments, bars, flags, quotes, preds, alerts, outbox, dls = ([] for _ in range(8))
        performance: list[tuple] = []
        revisions: list[tuple] = []
        now = _now()
        n = 0
        for r in records:
            n += 1
            if isinstance(r, PriceEvent):
                key = rowkeys.event_key(r)
                bars.append((key, r.source, r.instrument_id, r.interval, r.session_date.isoformat(),
                             _ts(r.event_time), r.open, r.high, r.low, r.close, r.volume,
                             r.adj_close, r.currency, r.event_id))
                flags.extend((key, r.source, f, "") for f in r.flags)
                quotes.append((r.instrument_id, key, r.source, self._rank.get(r.source, 1_000),
                               r.session_date.isoformat(), _ts(r.event_time), r.open, r.high,
                               r.low, r.close, r.volume, r.adj_close, r.currency))
                self._to_outbox(outbox, r, now)
            elif isinstance(r, BarFlag):
                flags.append((r.row_key, r.source, r.flag, r.detail))
            elif isinstance(r, SupersededRevision):
                e = r.event
                revisions.append((rowkeys.event_key(e), e.source, e.event_id, e.to_json(),
                                  e.provenance[0], e.provenance[1], r.superseded_by, now))
            elif isinstance(r, Prediction):
                preds.append((rowkeys.prediction_key(r.instrument_id, "1d", r.as_of_date, r.role),
                              r.model_name, r.model_version, r.instrument_id, r.source,
                              r.as_of_date.isoformat(), _ts(r.as_of_time),
                              r.target_date.isoformat(), r.base_price, r.predicted_log_return,
                              r.predicted_price))
                self._to_outbox(outbox, r, now)
            elif isinstance(r, AlertEvent):
                alerts.append((r.alert_id, r.rule_id, r.kind, r.instrument_id, _ts(r.event_time),
                               r.session_date.isoformat(), r.value, r.threshold, r.message))
                self._to_outbox(outbox, r, now)
            elif isinstance(r, DeadLetter):
                dls.append((r.dead_letter_id, r.step, r.reason, r.detail, r.payload, r.origin,
                            _ts(r.event_time) if r.event_time else None, now, r.position))
            elif isinstance(r, Instrument):
                instruments.append((r.instrument_id, r.symbol, r.mic, r.calendar, r.currency,
                                    r.timezone, r.kind, r.name, int(r.known)))
            elif isinstance(r, ModelPerformance):
                performance.append(_performance_values(r))
            else:
                raise TypeError(f"cannot store a {type(r).__name__}")
        conn = self._conn()
        with conn:  # one transaction
            conn.executemany("INSERT OR REPLACE INTO instruments VALUES (?,?,?,?,?,?,?,?,?)",
                             instruments)
            # the correction policy: a bar rewritten with other values keeps the stored one as
            # history (superseded by this ingest), and its own flags are recomputed
            conn.executemany(_KEEP_SUPERSEDED, [
                (now, b[0], b[1], b[6], b[7], b[8], b[9], b[10], b[11]) for b in bars])
            conn.executemany(_CLEAR_OWN_FLAGS, [(b[0], b[1]) for b in bars])
            conn.executemany("INSERT OR REPLACE INTO bars VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                             bars)
            conn.executemany("INSERT OR IGNORE INTO bar_revisions VALUES (?,?,?,?,?,?,?,?)",
                             revisions)
            conn.executemany("INSERT OR REPLACE INTO bar_flags VALUES (?,?,?,?)", flags)
            conn.executemany(
                "INSERT INTO quotes VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (instrument_id) DO UPDATE SET row_key=excluded.row_key, "
                "source=excluded.source, source_rank=excluded.source_rank, "
                "session_date=excluded.session_date, event_time=excluded.event_time, "
                "open=excluded.open, high=excluded.high, low=excluded.low, close=excluded.close, "
                "volume=excluded.volume, adj_close=excluded.adj_close, currency=excluded.currency "
                "WHERE excluded.event_time > quotes.event_time OR (excluded.event_time = "
                "quotes.event_time AND excluded.source_rank <= quotes.source_rank)", quotes)
            conn.executemany("INSERT OR REPLACE INTO predictions VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                             preds)
            conn.executemany("INSERT OR REPLACE INTO alerts VALUES (?,?,?,?,?,?,?,?,?)", alerts)
            conn.executemany("INSERT OR IGNORE INTO outbox VALUES (?,?,?,?)", outbox)
            conn.executemany(
                "INSERT OR REPLACE INTO dead_letters (dead_letter_id, step, reason, detail, "
                "payload, origin, event_time, created_at, position) VALUES (?,?,?,?,?,?,?,?,?)",
                dls)
            conn.executemany(_PERFORMANCE_UPSERT, performance)
        return n

    def _to_outbox(self, outbox: list[tuple], record: PriceEvent | Prediction | AlertEvent,
                   now: str) -> None:
        topic, payload = encode_event(record)
        if topic in self.outbox_topics:
            outbox.append((message_id(topic, event_id_of(record)), topic, payload, now))

    # -- reads -------------------------------------------------------------------------------
    def list_instruments(self) -> list[Instrument]:
        rows = self._conn().execute("SELECT * FROM instruments ORDER BY instrument_id").fetchall()
        return [_instrument(r) for r in rows]

    def get_instrument(self, symbol_or_id: str) -> Instrument | None:
        key = symbol_or_id.strip()
        row = self._conn().execute(
            "SELECT * FROM instruments WHERE instrument_id = ? COLLATE NOCASE "
            "OR symbol = ? COLLATE NOCASE ORDER BY instrument_id = ? COLLATE NOCASE DESC, "
            "known DESC, instrument_id LIMIT 1",
            (key, key, key)).fetchone()
        return _instrument(row) if row else None

    def sources(self, instrument_id: str) -> list[str]:
        lo, hi = rowkeys.scan_range(instrument_id + "#", instrument_id + "#")
        rows = self._conn().execute(
            "SELECT DISTINCT source FROM bars WHERE row_key >= ? AND row_key < ?", (lo, hi))
        return sorted(r[0] for r in rows)

    def get_quote(self, instrument_id: str) -> QuoteRow | None:
        row = self._conn().execute(
            "SELECT instrument_id, source, session_date, event_time, open, high, low, close, "
            "volume, adj_close, currency FROM quotes WHERE instrument_id = ?",
            (instrument_id,)).fetchone()
        if row is None:
            return None
        return QuoteRow(row[0], row[1], dt.date.fromisoformat(row[2]), _parse_ts(row[3]), *row[4:])

    def get_quote_as_of(self, instrument_id: str, as_of: dt.datetime) -> QuoteRow | None:
        """The latest bar of any interval with ``event_time <= as_of`` (best source on ties).

        The delayed quote of roles without real-time entitlement; ``get_quote`` is the same
        for ``as_of`` = now. Reads the instrument's bar key range (event times are stored as
        UTC ISO text, which sorts in time order).

        Raises:
            ValueError: ``as_of`` is naive.
        """
        lo, hi = rowkeys.scan_range(instrument_id + rowkeys.SEP, instrument_id + rowkeys.SEP)
        rows = self._conn().execute(
            "SELECT instrument_id, source, session_date, event_time, open, high, low, close, "
            "volume, adj_close, currency FROM bars WHERE row_key >= ? AND row_key < ? AND "
            "event_time = (SELECT max(event_time) FROM bars WHERE row_key >= ? AND row_key < ? "
            "AND event_time <= ?)", (lo, hi, lo, hi, _ts(as_of))).fetchall()
        if not rows:
            return None
        row = min(rows, key=lambda r: (self._rank.get(r[1], 1_000), r[1]))
        return QuoteRow(row[0], row[1], dt.date.fromisoformat(row[2]), _parse_ts(row[3]), *row[4:])

    def get_bars(self, instrument_id: str, *, interval: str = "1d", start: dt.date | None = None,
                 end: dt.date | None = None, source: str | None = None,
                 limit: int = 10_000, after: tuple[str, str] | None = None) -> list[BarRow]:
        lo = rowkeys.bar_key(instrument_id, interval, start or dt.date(1, 1, 1))
        hi = rowkeys.bar_key(instrument_id, interval, end or dt.date(9999, 12, 31))
        lo, hi = rowkeys.scan_range(lo, hi)
        sql = ("SELECT b.row_key, b.instrument_id, b.source, b.interval, b.session_date, "
               "b.event_time, b.open, b.high, b.low, b.close, b.volume, b.adj_close, b.currency, "
               "(SELECT group_concat(flag, ',') FROM bar_flags f WHERE f.row_key = b.row_key "
               "AND f.source = b.source) FROM bars b WHERE b.row_key >= ? AND b.row_key < ?")
        params: list[object] = [lo, hi]
        if source is not None:
            sql += " AND b.source = ?"
            params.append(source)
        if after is not None:  # keyset pagination: strictly after (row_key, source)
            sql += " AND (b.row_key > ? OR (b.row_key = ? AND b.source > ?))"
            params.extend((after[0], after[0], after[1]))
        sql += " ORDER BY b.row_key, b.source LIMIT ?"
        params.append(limit)
        return [BarRow(r[0], r[1], r[2], r[3], dt.date.fromisoformat(r[4]), _parse_ts(r[5]),
                       *r[6:13], tuple(sorted(r[13].split(","))) if r[13] else ())
                for r in self._conn().execute(sql, params)]

    def get_predictions(self, instrument_id: str, *, start: dt.date | None = None,
                        end: dt.date | None = None, limit: int = 10_000,
                        role: str | None = "champion",
                        after: tuple[str, str, str] | None = None) -> list[PredictionRow]:
        """Predictions by as-of date in time order (then role, model name and version).

        Args:
            role: ``champion`` (default: "the" predictions), ``challenger``, or None for both.
            after: ``(row_key, model_name, model_version)``: only rows strictly after it.
        """
        lo = rowkeys.prediction_key(instrument_id, "1d", start or dt.date(1, 1, 1))
        hi = rowkeys.prediction_key(instrument_id, "1d", end or dt.date(9999, 12, 31))
        lo, hi = rowkeys.scan_range(lo, hi)
        sql = ("SELECT instrument_id, source, as_of_date, as_of_time, target_date, base_price, "
               "predicted_log_return, predicted_price, model_name, model_version, row_key "
               "FROM predictions WHERE row_key >= ? AND row_key < ?")
        params: list[object] = [lo, hi]
        if after is not None:  # keyset pagination
            sql += (" AND (row_key > ? OR (row_key = ? AND (model_name > ? OR "
                    "(model_name = ? AND model_version > ?))))")
            params.extend((after[0], after[0], after[1], after[1], after[2]))
        rows = self._conn().execute(sql + " ORDER BY row_key, model_name, model_version",
                                    params)
        out: list[PredictionRow] = []
        for r in rows:
            row_role = rowkeys.prediction_role(r[10])
            if role is not None and row_role != role:
                continue
            out.append(PredictionRow(r[0], r[1], dt.date.fromisoformat(r[2]), _parse_ts(r[3]),
                                     dt.date.fromisoformat(r[4]), *r[5:10], role=row_role))
            if len(out) >= limit:
                break
        return out

    def get_alerts(self, *, instrument_id: str | None = None, since: dt.datetime | None = None,
                   limit: int = 1_000,
                   after: tuple[dt.datetime, str] | None = None) -> list[AlertEvent]:
        sql = "SELECT * FROM alerts WHERE event_time >= ?"
        params: list[object] = [_ts(since) if since else ""]
        if instrument_id is not None:
            sql += " AND instrument_id = ?"
            params.append(instrument_id)
        if after is not None:  # keyset pagination, newest first
            sql += " AND (event_time < ? OR (event_time = ? AND alert_id > ?))"
            params.extend((_ts(after[0]), _ts(after[0]), after[1]))
        sql += " ORDER BY event_time DESC, alert_id LIMIT ?"
        params.append(limit)
        return [AlertEvent(r[0], r[1], r[2], r[3], _parse_ts(r[4]), dt.date.fromisoformat(r[5]),
                           r[6], r[7], r[8]) for r in self._conn().execute(sql, params)]

    def get_dead_letters(self, *, reason: str | None = None,
                         limit: int = 1_000) -> list[DeadLetter]:
        sql = ("SELECT step, reason, detail, payload, origin, event_time, position "
               "FROM dead_letters")
        params: list[object] = []
        if reason is not None:
            sql += " WHERE reason = ?"
            params.append(reason)
        sql += " ORDER BY created_at, dead_letter_id LIMIT ?"
        params.append(limit)
        return [DeadLetter(*r[:5], _parse_ts(r[5]) if r[5] else None, r[6])
                for r in self._conn().execute(sql, params)]

    def get_bar_revisions(self, instrument_id: str, *, interval: str = "1d",
                          start: dt.date | None = None, end: dt.date | None = None,
                          source: str | None = None, limit: int = 1_000) -> list[RevisionRow]:
        lo = rowkeys.bar_key(instrument_id, interval, start or dt.date(1, 1, 1))
        hi = rowkeys.bar_key(instrument_id, interval, end or dt.date(9999, 12, 31))
        lo, hi = rowkeys.scan_range(lo, hi)
        sql = ("SELECT row_key, source, event_id, payload, origin, position, superseded_by "
               "FROM bar_revisions WHERE row_key >= ? AND row_key < ?")
        params: list[object] = [lo, hi]
        if source is not None:
            sql += " AND source = ?"
            params.append(source)
        sql += " ORDER BY row_key, source, recorded_at, payload LIMIT ?"
        params.append(limit)
        return [RevisionRow(*r) for r in self._conn().execute(sql, params)]

    def ping(self) -> bool:
        """Cheap health check: the store answers a query (no table scans)."""
        return self._conn().execute("SELECT value FROM store_meta LIMIT 1").fetchone() is not None

    def counts(self) -> dict[str, int]:
        conn = self._conn()
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in _TABLES}

    def dead_letter_counts(self) -> dict[str, int]:
        """Dead letters per reason."""
        rows = self._conn().execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason")
        return dict(rows.fetchall())

    def flag_counts(self) -> dict[str, int]:
        """Flagged bars per flag."""
        rows = self._conn().execute("SELECT flag, count(*) FROM bar_flags GROUP BY flag")
        return dict(rows.fetchall())

    def outbox(self, *, topic: str = "alerts", limit: int = 1_000) -> list[dict]:
        """Messages waiting in the outbox (embedded-mode messaging), oldest first."""
        rows = self._conn().execute(
            "SELECT payload FROM outbox WHERE topic = ? ORDER BY created_at, message_id LIMIT ?",
            (topic, limit))
        return [json.loads(r[0]) for r in rows]

    # -- model performance (tracking) ---------------------------------------------------------
    def _performance_query(self, select: str, model_name: str | None, model_version: str | None,
                           instrument_id: str | None, start: dt.date | None,
                           end: dt.date | None, tail: str = "",
                           extra: Sequence[object] = ()) -> list[sqlite3.Row]:
        sql = f"SELECT {select} FROM {PERFORMANCE_TABLE} WHERE 1=1"
        params: list[object] = []
        for column, value in (("model_name", model_name), ("model_version", model_version),
                              ("instrument_id", instrument_id)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        if start is not None:
            sql += " AND target_date >= ?"
            params.append(start.isoformat())
        if end is not None:
            sql += " AND target_date <= ?"
            params.append(end.isoformat())
        try:
            return self._conn().execute(sql + tail, [*params, *extra]).fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):  # a store written before the table existed
                return []
            raise

    def get_model_performance(self, model_name: str, model_version: str, *,
                              instrument_id: str | None = None, start: dt.date | None = None,
                              end: dt.date | None = None,
                              limit: int = 10_000) -> list[ModelPerformance]:
        """Rows of ``model_performance`` for one model version with ``start <= target_date <=
        end`` (inclusive, either open), ordered by instrument id, then target date."""
        names = ", ".join(c.name for c in PERFORMANCE_COLUMNS)
        rows = self._performance_query(names, model_name, model_version, instrument_id, start,
                                       end, " ORDER BY instrument_id, target_date LIMIT ?",
                                       (limit,))
        return [_performance_of(r) for r in rows]

    def summarize_model_performance(self, model_name: str, model_version: str, *,
                                    instrument_id: str | None = None,
                                    start: dt.date | None = None,
                                    end: dt.date | None = None) -> list[PerformanceSummary]:
        """Per-instrument ``summarize_performance`` of the same rows, summed in SQL."""
        rows = self._performance_query(_SUM_SELECT, model_name, model_version, instrument_id,
                                       start, end, " GROUP BY model_name, model_version, "
                                       "instrument_id ORDER BY instrument_id")
        return [_summary_of(r) for r in rows]

    def list_performance_versions(self) -> list[PerformanceSummary]:
        """One summary per model name and version in ``model_performance`` (all instruments;
        ``currency``/``mae``/``rmse`` are None when it spans several currencies)."""
        rows = self._performance_query(
            _SUM_SELECT.replace("instrument_id,", "NULL,", 1), None, None, None, None, None,
            " GROUP BY model_name, model_version ORDER BY model_name, "
            "CAST(model_version AS INTEGER), model_version")
        return [_summary_of(r) for r in rows]


_SUM_SELECT = ("model_name, model_version, instrument_id, "
               "CASE WHEN count(DISTINCT currency) = 1 THEN min(currency) END, "
               "min(target_date), max(target_date), sum(n), sum(n_direction), "
               "sum(direction_hits), sum(sum_error), sum(sum_abs_error), "
               "sum(sum_squared_error), sum(sum_abs_pct_error)")


def _performance_values(r: ModelPerformance) -> tuple:
    row = r.to_row()
    row["target_date"] = r.target_date.isoformat()
    return tuple(row.values())


def _performance_of(row: Sequence) -> ModelPerformance:
    names = (c.name for c in PERFORMANCE_COLUMNS)
    return ModelPerformance.from_row(dict(zip(names, row, strict=True)))


def _summary_of(row: Sequence) -> PerformanceSummary:
    name, version, iid, currency, first, last, *sums = row
    return summary_from_sums(name, version, iid, currency, dt.date.fromisoformat(first),
                             dt.date.fromisoformat(last), *sums)


def _instrument(row: Sequence) -> Instrument:
    return Instrument(*row[:8], known=bool(row[8]))


@contextlib.contextmanager
def open_store(path: str | Path, **kwargs) -> Iterator[SqliteServingStore]:
    """Context manager that opens a ``SqliteServingStore`` and closes its connection."""
    store = SqliteServingStore(path, **kwargs)
    try:
        yield store
    finally:
        store.close()


if __name__ == "__main__":  # pragma: no cover - manual inspection
    with open_store(sys.argv[1], read_only=True) as s:
        print(json.dumps(s.counts(), indent=2))
