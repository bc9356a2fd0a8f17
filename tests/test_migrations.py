"""Migrations: head builds exactly the tables the models describe; upgrade is repeatable; downgrade works."""

from __future__ import annotations

from pathlib import Path

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
    assert {"runs", "metric_chunks", "packs"} <= set(inspect(get_engine(sqlite_url)).get_table_names())


def test_values_stored_one_per_row_move_into_chunks_and_back(tmp_path: Path) -> None:
    """0007: a database written before chunks keeps every value (NaN and inf too), newest layout and back."""
    import math

    from alembic import command
    from sqlalchemy import text

    from db.migrate import alembic_config
    from db.store import Store

    sqlite_url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(sqlite_url), "0006")
    engine = get_engine(sqlite_url)
    rows = [(1, "loss", s, v) for s, v in ((1, 2.0), (2, None), (3, float("inf")), (4, 0.5))]
    rows += [(1, "val_loss", 2, 1.5), (2, "loss", 1, 9.0)]
    with engine.begin() as conn:
        for run_id in (1, 2):
            conn.execute(text("INSERT INTO runs (id, name, status, spec, created_at, progress, cancel_requested, "
                              "priority, queue, attempts, resumed_from) VALUES (:id, 'r', 'completed', '{}', 0, 4, 0, "
                              "0, 'auto', 0, 0)"), {"id": run_id})  # fmt: skip
        conn.execute(text("INSERT INTO metrics VALUES (:r, :m, :s, :v)"),
                     [{"r": r, "m": m, "s": s, "v": v} for r, m, s, v in rows])  # fmt: skip
    upgrade(sqlite_url)
    frame = Store(engine).metrics([1, 2])
    got = {(int(r.run_id), r.metric, int(r.step)): r.value for r in frame.itertuples()}
    assert got.keys() == {(r, m, s) for r, m, s, _ in rows}
    for r, m, s, v in rows:
        assert math.isnan(got[(r, m, s)]) if v is None else got[(r, m, s)] == v, (r, m, s)
    command.downgrade(alembic_config(sqlite_url), "0006")
    with engine.connect() as conn:
        back = set(conn.execute(text("SELECT run_id, metric, step, value FROM metrics")).all())
    assert back == set(rows)


def test_sqlite_is_in_wal_mode(sqlite_url: str) -> None:
    with get_engine(sqlite_url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
