"""Serving stores: the low-latency store the API reads and the pipeline writes.

``base.ServingStore`` is the interface (point reads and range scans by row key, batched writes),
``sqlite.SqliteServingStore`` the embedded implementation (SQLite in WAL mode: the API reads while
the pipeline writes), ``bigtable.BigtableServingStore`` the Google Cloud one with the same row
keys (``miraikakaku.rowkeys``); ``spec.StoreSpec`` names either. ``bigquery`` holds the analytics
tables' definitions.
"""

from stores.base import BarFlag, BarRow, PredictionRow, QuoteRow, ServingStore
from stores.sqlite import SqliteServingStore, open_store

__all__ = ["BarFlag", "BarRow", "PredictionRow", "QuoteRow", "ServingStore", "SqliteServingStore",
           "open_store"]
