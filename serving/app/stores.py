"""Access to the serving store for the API: opened read-only once, retried while missing.

``StoreProvider`` owns the store of one application. ``create_app`` builds it; the lifespan tries
to open ``settings.store_path`` read-only at start-up and closes it at shutdown. When the file is
missing (the pipeline has not run yet) the API still starts: each request retries the cheap
open, so the API begins answering as soon as ``miraikakaku run`` has written the store, and until
then data routes answer 503 ``store_unavailable`` and ``/healthz`` reports ``"missing"``.

Store calls block (SQLite), so routes go through ``run_store``, which runs them in Starlette's
threadpool and turns database failures into ``StoreUnavailable``.
"""

import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Literal, ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool

from miraikakaku.settings import Settings
from serving.app.api.errors import StoreUnavailable
from stores.base import ServingStore
from stores.sqlite import SqliteServingStore

__all__ = ["StoreProvider", "StoreState", "run_store"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

StoreState = Literal["ok", "missing", "error"]
"""``ok``: open; ``missing``: no store file yet; ``error``: the file exists but cannot be read."""


class StoreProvider:
    """Holds the application's serving store and opens it on demand.

    Args:
        settings: where the store lives (``settings.store_path``) and the source priority.
        store: an already-open store to serve instead (tests, other backends); the provider
            never closes a store it did not open.
    """

    def __init__(self, settings: Settings, store: ServingStore | None = None) -> None:
        self.settings = settings
        self._store = store
        self._owned = store is None
        self._lock = threading.Lock()
        self.state: StoreState = "ok" if store is not None else "missing"

    def open(self) -> ServingStore | None:
        """Open the store read-only if it is not open yet (blocking; call from a thread).

        Returns:
            The store, or None when it is missing or unreadable (see ``state``).
        """
        with self._lock:
            if self._store is not None:
                return self._store
            path = self.settings.store_path
            if not path.exists():
                self.state = "missing"
                return None
            try:
                self._store = SqliteServingStore(
                    path, source_priority=self.settings.source_priority, read_only=True)
            except (OSError, RuntimeError, sqlite3.Error) as e:
                if self.state != "error":
                    logger.warning("cannot open serving store %s: %s", path, e)
                self.state = "error"
                return None
            self.state = "ok"
            return self._store

    async def get(self) -> ServingStore:
        """The open store, opening it in the threadpool when needed.

        Raises:
            StoreUnavailable: the store is missing or cannot be opened.
        """
        store = self._store
        if store is None:
            store = await run_in_threadpool(self.open)
        if store is None:
            reason = ("no serving store yet: run the pipeline (`miraikakaku run`) first"
                      if self.state == "missing" else "the serving store cannot be read")
            raise StoreUnavailable(reason)
        return store

    def close(self) -> None:
        """Close the store if this provider opened it (called at application shutdown)."""
        with self._lock:
            if not self._owned or self._store is None:
                return
            store, self._store = self._store, None
            self.state = "missing"
        close = getattr(store, "close", None)
        if callable(close):
            close()


async def run_store(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a blocking store call in the threadpool.

    Args:
        fn: a bound store method (``store.get_bars``).
        *args: its positional arguments.
        **kwargs: its keyword arguments.

    Returns:
        Whatever ``fn`` returns.

    Raises:
        StoreUnavailable: the database failed (locked past the busy timeout, unreadable,
            corrupt). Programming errors (bad SQL, constraint violations) are not masked.
    """
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except (sqlite3.ProgrammingError, sqlite3.IntegrityError):
        raise
    except sqlite3.DatabaseError as e:
        logger.warning("serving store failed in %s: %s", getattr(fn, "__name__", fn), e)
        raise StoreUnavailable("the serving store failed to answer; retry later") from e
