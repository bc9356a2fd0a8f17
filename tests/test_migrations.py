"""Migrations: head builds exactly the tables the models describe; upgrade is repeatable; downgrade works."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from db.engine import get_engine
from db.migrate import upgrade
from db.tables import Base


def test_head_matches_the_models(sqlite_url: str) -> None:
    with get_engine(sqlite_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_twice_and_downgrade(sqlite_url: str) -> None:
    from alembic import command

    from db.migrate import alembic_config

    upgrade(sqlite_url)
    command.downgrade(alembic_config(sqlite_url), "base")
    assert set(inspect(get_engine(sqlite_url)).get_table_names()) == {"alembic_version"}
    upgrade(sqlite_url)
    assert {"runs", "metrics"} <= set(inspect(get_engine(sqlite_url)).get_table_names())


def test_sqlite_is_in_wal_mode(sqlite_url: str) -> None:
    with get_engine(sqlite_url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
