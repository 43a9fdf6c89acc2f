"""The application database: engine, sessions and Alembic migrations.

``make_engine(url)`` opens SQLite (the embedded default; foreign keys on, WAL, a busy timeout so
the API and the notifier share the file) or PostgreSQL (``postgresql+psycopg://…``).
``migrate(url)`` brings the schema to the newest Alembic revision (``serving/app/alembic``); the
API runs it at start-up and ``miraikakaku db upgrade`` runs it by hand. ``Database`` bundles an
engine and its session factory for an application or the notifier.

Example::

    db = Database.connect("sqlite:///var/app.db")   # migrates, then opens
    with db.session() as s: ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Database", "make_engine", "migrate", "alembic_config", "ALEMBIC_DIR"]

ALEMBIC_DIR = Path(__file__).resolve().parent / "alembic"


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (SQLite file or PostgreSQL).

    SQLite connections get ``foreign_keys=ON`` (so ``ON DELETE CASCADE`` works), WAL and a 30 s
    busy timeout; the parent directory of a SQLite file is created.

    Raises:
        sqlalchemy.exc.ArgumentError: ``url`` is not a database URL.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DBAPI connection
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def alembic_config(url: str) -> Config:
    """An Alembic ``Config`` for ``url`` without an ini file (``script_location`` = ours)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (idempotent).

    Raises:
        sqlalchemy.exc.OperationalError: the database cannot be reached.
    """
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


class Database:
    """An engine and its session factory.

    Args:
        url: SQLAlchemy URL.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def connect(cls, url: str, *, upgrade: bool = True) -> Database:
        """Migrate (unless ``upgrade`` is False), then open ``url``."""
        if upgrade:
            migrate(url)
        return cls(url)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self.sessionmaker() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def ping(self) -> bool:
        """True when a ``SELECT 1`` answers (readiness checks)."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return True

    def close(self) -> None:
        """Dispose of the connection pool."""
        self.engine.dispose()
