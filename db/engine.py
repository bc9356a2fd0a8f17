"""One engine per database URL per process; SQLite in WAL mode, PostgreSQL through psycopg 3."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def normalize_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3 here (psycopg2 is not installed)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers (the UI) never block the writer (a worker)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


@lru_cache(maxsize=8)
def flush_engine(url: str) -> Engine:
    """PostgreSQL connections for metric flushes, each one statement (`Store.record_many`): in autocommit, and not
    pinged before each use as `get_engine`'s are (a ping is one more round trip per flush); a flush that meets a
    connection the server closed is sent again, once, on a new one (`Store._record_pg`). Named `optlab-flush` in
    `pg_stat_activity`."""
    return create_engine(
        normalize_url(url), isolation_level="AUTOCOMMIT", connect_args={"application_name": "optlab-flush"}
    )
