"""Serving stores: the low-latency store the API reads and the pipeline writes.

``base.ServingStore`` is the interface (point reads and range scans by row key, batched writes),
``sqlite.SqliteServingStore`` the embedded implementation (SQLite in WAL mode: the API reads while
the pipeline writes). The Bigtable implementation comes with the streaming issue and keeps the
same row keys (``miraikakaku.rowkeys``).
"""

from stores.base import BarFlag, BarRow, PredictionRow, QuoteRow, ServingStore
from stores.sqlite import SqliteServingStore, open_store

__all__ = ["BarFlag", "BarRow", "PredictionRow", "QuoteRow", "ServingStore", "SqliteServingStore",
           "open_store"]
