"""Metrics stored as chunks: one row per (run, metric, flush) holding packed arrays of steps and values, instead of
one row per value (`metrics`). Existing values move over, one chunk per (run, metric). On PostgreSQL the arrays
are stored uncompressed (random-looking floats do not compress, and trying made each write ~10x slower).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import itertools

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OLD = sa.table(
    "metrics", sa.column("run_id", sa.Integer), sa.column("metric", sa.String), sa.column("step", sa.Integer),
    sa.column("value", sa.Float),
)  # fmt: skip
NEW = sa.table(
    "metric_chunks", sa.column("run_id", sa.Integer), sa.column("metric", sa.String),
    sa.column("first_step", sa.Integer), sa.column("last_step", sa.Integer), sa.column("steps", sa.LargeBinary),
    sa.column("values", sa.LargeBinary),
)  # fmt: skip


def upgrade() -> None:
    op.create_table(
        "metric_chunks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("first_step", sa.Integer(), nullable=False),
        sa.Column("last_step", sa.Integer(), nullable=False),
        sa.Column("steps", sa.LargeBinary(), nullable=False),
        sa.Column("values", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_metric_chunks_run_last", "metric_chunks", ["run_id", "last_step"])
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":  # packed floats do not compress: TOAST's attempt cost 10x a write
        for table in ("metric_chunks", "curves"):
            op.execute(f'ALTER TABLE {table} ALTER COLUMN steps SET STORAGE EXTERNAL, '
                       f'ALTER COLUMN "values" SET STORAGE EXTERNAL')  # fmt: skip
    rows = bind.execute(sa.select(OLD).order_by(OLD.c.run_id, OLD.c.metric, OLD.c.step))
    batch = []
    for (run_id, metric), group in itertools.groupby(rows, key=lambda r: (r[0], r[1])):
        chunk = list(group)
        steps = np.asarray([r[2] for r in chunk], dtype="<i8")
        values = np.asarray([np.nan if r[3] is None else r[3] for r in chunk], dtype="<f8")
        batch.append({"run_id": run_id, "metric": metric, "first_step": int(steps[0]), "last_step": int(steps[-1]),
                      "steps": steps.tobytes(), "values": values.tobytes()})  # fmt: skip
        if len(batch) >= 1000:
            bind.execute(NEW.insert(), batch)
            batch = []
    if batch:
        bind.execute(NEW.insert(), batch)
    op.drop_index("ix_metrics_run_step", table_name="metrics")
    op.drop_table("metrics")


def downgrade() -> None:
    op.create_table(
        "metrics",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("metric", sa.String(64), primary_key=True),
        sa.Column("step", sa.Integer(), primary_key=True),
        sa.Column("value", sa.Float()),
    )
    op.create_index("ix_metrics_run_step", "metrics", ["run_id", "step"])
    bind = op.get_bind()
    latest: dict[tuple[int, str, int], float | None] = {}
    for run_id, metric, _, _, steps, values in bind.execute(sa.select(NEW).order_by(sa.text("id"))):
        for step, value in zip(
            np.frombuffer(steps, "<i8").tolist(), np.frombuffer(values, "<f8").tolist(), strict=True
        ):
            latest[(run_id, metric, step)] = None if value != value else value  # NaN was stored as NULL
    rows = [{"run_id": r, "metric": m, "step": s, "value": v} for (r, m, s), v in latest.items()]
    for at in range(0, len(rows), 10_000):
        bind.execute(OLD.insert(), rows[at : at + 10_000])
    op.drop_index("ix_metric_chunks_run_last", table_name="metric_chunks")
    op.drop_table("metric_chunks")
