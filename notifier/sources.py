"""Where the notifier reads events from: the ``EventSource`` protocol and the SQLite outbox.

``OutboxSource`` reads the serving store's ``outbox`` table (written by
``SqliteServingStore.write_batch`` in the same transaction as the records, see
``notifier.events``) in ``rowid`` order: ``WHERE rowid > :position ORDER BY rowid LIMIT n``. The
position is the rowid of the last message read; the notifier stores it in the application
database (``ConsumerOffset``) in the same transaction as the notifications it produced, so a
restart resumes exactly after the last committed batch.

Another source (Pub/Sub in Google Cloud mode) implements the same protocol.

Try it: ``python -m notifier.sources var/serving.db`` prints the first events of the outbox.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import sys
from pathlib import Path
from typing import Protocol, runtime_checkable

from notifier.events import TOPICS, MarketEvent, decode_event

__all__ = ["EventSource", "OutboxSource"]

log = logging.getLogger(__name__)


@runtime_checkable
class EventSource(Protocol):
    """A stream of ``MarketEvent`` with integer positions.

    Attributes:
        name: the source's key in ``ConsumerOffset.source`` (``outbox:<store path>``).
    """

    name: str

    def seek(self, position: int) -> None:
        """Continue reading after ``position`` (the stored offset; 0: from the start)."""

    def read(self, max_events: int) -> list[tuple[int, MarketEvent]]:
        """Up to ``max_events`` next events as ``(position, event)``, positions increasing;
        an empty list when nothing is waiting (never blocks long)."""

    def commit(self, position: int) -> None:
        """Everything up to ``position`` is processed and its offset stored (acknowledge)."""


class OutboxSource:
    """Reads the SQLite serving store's ``outbox`` table (read-only connection).

    Args:
        store_path: the serving store file (``settings.store_path``).
        topics: topics to read (default: all of ``notifier.events.TOPICS``).

    A store that does not exist yet reads as empty (the pipeline has not written it).
    """

    def __init__(self, store_path: str | Path, topics: tuple[str, ...] = TOPICS) -> None:
        self.path = Path(store_path)
        name = f"outbox:{self.path.resolve()}"
        if len(name) > 200:  # ConsumerOffset.source is String(200)
            name = name[:183] + "#" + hashlib.sha256(name.encode()).hexdigest()[:16]
        self.name = name
        self.topics = tuple(topics)
        self.position = 0
        self.skipped = 0
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection | None:
        if self._conn is None:
            if not self.path.exists():
                return None
            self._conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True,
                                         timeout=30, check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout=30000")
        return self._conn

    def seek(self, position: int) -> None:
        """Continue after rowid ``position``."""
        self.position = int(position)

    def read(self, max_events: int) -> list[tuple[int, MarketEvent]]:
        """The next messages after the current position (advances it).

        A payload that does not decode is logged and skipped (counted in ``skipped``): one bad
        message must not stop every user's notifications.
        """
        conn = self._connection()
        if conn is None:
            return []
        marks = ",".join("?" * len(self.topics))
        out: list[tuple[int, MarketEvent]] = []
        while not out:
            rows = conn.execute(
                f"SELECT rowid, topic, payload FROM outbox WHERE rowid > ? AND topic IN ({marks}) "
                "ORDER BY rowid LIMIT ?", (self.position, *self.topics, max_events)).fetchall()
            if not rows:
                break
            for rowid, topic, payload in rows:
                try:
                    out.append((rowid, decode_event(topic, payload)))
                except ValueError as e:
                    self.skipped += 1
                    log.warning("outbox rowid %d (%s): skipped undecodable payload: %s", rowid,
                                topic, e)
            self.position = rows[-1][0]
        return out

    @property
    def last_read(self) -> int:
        """The rowid of the last message read (decoded or skipped)."""
        return self.position

    def commit(self, position: int) -> None:
        """Nothing to acknowledge: the offset lives in the application database."""

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


if __name__ == "__main__":  # pragma: no cover - demo
    src = OutboxSource(sys.argv[1] if len(sys.argv) > 1 else "var/serving.db")
    for pos, ev in src.read(10):
        print(pos, ev.type, ev.event_id, ev.event_time.isoformat())
