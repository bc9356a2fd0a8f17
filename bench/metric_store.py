"""Metric writes: today's chunked store (`Store.record`: one row per metric per flush, packed arrays) against the
previous row-per-value store (one upserted SQL row per number, kept here as the baseline), side by side in this one
process, on SQLite and, with `--postgres URL`, on PostgreSQL.

Each call writes one flush of 12 metrics × 200 steps (2,400 values), as a worker's flush does; values per second
over `--flushes` calls, median of 3 rounds, interleaved (on PostgreSQL also the flush as a transaction of two
statements, as it was before it became one statement with one round trip). Then a pack of 32 runs flushing
together: one transaction for the pack's flush (`Store.record_many`, what a packed worker does) against one per
member. Then the two reads the pages make most: a live run's rows newer than a cursor, and a sweep's early-stopping
window means.

Run: `python bench/metric_store.py [--postgres postgresql://postgres@127.0.0.1:5432/test] [--flushes 200]`.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db.store import Store

METRICS = ["loss", "lr", "grad_l2", "grad_l1", "update_l2", "param_l2", "grad_l1_l2_ratio", "batch_size",
           "samples_seen", "step_time", "wall_time", "optimizer_state_bytes"]  # fmt: skip
STEPS_PER_FLUSH = 200


class RowPerValue:
    """The previous layout, for comparison: table (run_id, metric, step) → value, upserted row by row."""

    def __init__(self, store: Store) -> None:
        from sqlalchemy import Column, Float, Integer, MetaData, String, Table

        self.store = store
        meta = MetaData()
        self.table = Table(
            "bench_metric_rows", meta, Column("run_id", Integer, primary_key=True),
            Column("metric", String(64), primary_key=True), Column("step", Integer, primary_key=True),
            Column("value", Float),
        )  # fmt: skip
        meta.drop_all(store.engine)
        meta.create_all(store.engine)

    def record(self, run_id: int, rows: list[tuple[int, str, float]]) -> None:
        from sqlalchemy import case, update
        from sqlalchemy.dialects import postgresql, sqlite

        from db.tables import Run

        dialect = postgresql if self.store.engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(self.table)
        upsert = stmt.on_conflict_do_update(
            index_elements=["run_id", "metric", "step"], set_={"value": stmt.excluded.value}
        )
        with self.store.engine.begin() as s:
            s.execute(upsert, [{"run_id": run_id, "step": st, "metric": m, "value": None if math.isnan(v) else v}
                               for st, m, v in rows])  # fmt: skip
            progress = max(st for st, _, _ in rows)
            farther = case((Run.progress > progress, Run.progress), else_=progress)
            s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=time.time(), progress=farther))

    def metrics(self, run_ids: list[int], names: list[str], after: dict[int, int] | None) -> Any:
        """What `Store.metrics` did on this layout: one indexed select, into a frame ordered by run and step."""
        import pandas as pd
        from sqlalchemy import and_, or_, select

        t = self.table
        where = t.c.run_id.in_(run_ids) if after is None else or_(
            *(and_(t.c.run_id == rid, t.c.step > after[rid]) for rid in run_ids)
        )  # fmt: skip
        query = select(t.c.run_id, t.c.step, t.c.metric, t.c.value).where(where, t.c.metric.in_(names))
        with self.store.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.c.run_id, t.c.step)).all()
        return pd.DataFrame(rows, columns=["run_id", "step", "metric", "value"])


def flushes(count: int) -> list[list[tuple[int, str, float]]]:
    rng = np.random.default_rng(0)
    out = []
    for f in range(count):
        values = rng.random((STEPS_PER_FLUSH, len(METRICS))).tolist()
        steps = range(f * STEPS_PER_FLUSH + 1, (f + 1) * STEPS_PER_FLUSH + 1)
        out.append([(s, m, v) for s, row in zip(steps, values, strict=True) for m, v in zip(METRICS, row, strict=True)])
    return out


def as_columns(rows: list[tuple[int, str, float]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    steps = np.asarray(sorted({s for s, _, _ in rows}), dtype=np.int64)
    values = np.asarray([v for _, _, v in rows]).reshape(len(steps), len(METRICS))
    return {m: (steps, values[:, j].copy()) for j, m in enumerate(METRICS)}


def timed_writes(write: Any, run_id: int, batches: list[Any]) -> float:
    start = time.perf_counter()
    for rows in batches:
        write(run_id, rows)
    return time.perf_counter() - start


def bench(label: str, store: Store, count: int) -> None:
    from db.tables import MetricChunk

    old = RowPerValue(store)
    batches = flushes(count)
    values = count * STEPS_PER_FLUSH * len(METRICS)
    columns = [as_columns(rows) for rows in batches]  # what a worker's loop hands over now (training.flush_columns)
    pg = store.engine.dialect.name == "postgresql"

    def two_statements(run_id: int, flush: Any) -> None:  # PostgreSQL's flush before it was one statement
        from db.store import _chunks_of

        chunks = _chunks_of(run_id, flush)
        store._record_core({run_id: chunks}, {run_id: max(c["last_step"] for c in chunks)}, None)

    spent: dict[str, list[float]] = {"before": [], "rows": [], "columns": [], "two": []}
    writers = [("before", old.record, batches), ("rows", store.record, batches), ("columns", store.record, columns)]
    writers += [("two", two_statements, columns)] if pg else []
    for _ in range(3):
        for name, write, given in writers:
            run_id = store.create_run("bench", {"steps": count * STEPS_PER_FLUSH})
            spent[name].append(timed_writes(write, run_id, given))
    before, rows_s, new = (statistics.median(spent[n]) for n in ("before", "rows", "columns"))
    print(f"{label}: {count} flushes × {STEPS_PER_FLUSH} steps × {len(METRICS)} metrics = {values:,} values")
    print(f"  row per value (before)  : {before:6.2f} s  {values / before:12,.0f} values/s")
    print(f"  chunks, handed rows     : {rows_s:6.2f} s  {values / rows_s:12,.0f} values/s  ({before / rows_s:.1f}x)")
    print(f"  chunks, handed columns  : {new:6.2f} s  {values / new:12,.0f} values/s  ({before / new:.1f}x)")
    if pg:
        two = statistics.median(spent["two"])
        print(
            f"    (as two statements: {two:6.2f} s  {values / two:12,.0f} values/s; one statement is "
            f"{two / new:.2f}x faster)"
        )

    # sustained: the same flushes handed to a worker's writer thread (workers.tasks.StoreSink) as fast as a loop
    # hands them, timed until the last is in the database; a writer that falls behind folds what queued meanwhile
    # into one transaction, so what it absorbs is not bound by one transaction's round trips
    from workers.tasks import StoreSink

    sustained = []
    for _ in range(3):
        run_id = store.create_run("bench", {"steps": count * STEPS_PER_FLUSH})
        sink = StoreSink(store, run_id)
        start = time.perf_counter()
        for flush in columns:
            sink.write(flush)
        sink.close()
        sustained.append(time.perf_counter() - start)
    took = statistics.median(sustained)
    print(f"  sustained, via the writer: {took:6.2f} s  {values / took:12,.0f} values/s  ({before / took:.1f}x)")

    # a pack of 32 members flushing together against the same 32 flushes one per run; a packed worker hands each
    # member's flush over as columns (metric → steps, values), sliced from the pack's tensors without a row per value
    k, rounds = 32, max(4, count // 16)
    pack_values = rounds * k * STEPS_PER_FLUSH * len(METRICS)
    pack_times: dict[str, list[float]] = {"per run": [], "per pack": [], "per pack, columns": []}
    for _ in range(3):
        runs = [store.create_run("bench", {"steps": rounds * STEPS_PER_FLUSH}) for _ in range(3 * k)]
        start = time.perf_counter()
        for rows in batches[:rounds]:
            for rid in runs[:k]:
                store.record(rid, rows)
        pack_times["per run"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for rows in batches[:rounds]:
            store.record_many({rid: rows for rid in runs[k : 2 * k]})
        pack_times["per pack"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for flush in columns[:rounds]:
            store.record_many({rid: flush for rid in runs[2 * k :]})
        pack_times["per pack, columns"].append(time.perf_counter() - start)
    base = statistics.median(pack_times["per run"])
    print(f"  a pack of {k} flushing {rounds} times ({pack_values:,} values), one transaction:")
    for case, case_s in pack_times.items():
        took = statistics.median(case_s)
        print(f"    {case:22}: {took:6.2f} s  {pack_values / took:12,.0f} values/s  ({base / took:.1f}x)")

    sweep = store.create_sweep("bench", {})
    runs = [store.create_run("r", {"steps": count * STEPS_PER_FLUSH}, sweep_id=sweep) for _ in range(8)]
    for rid in runs:
        for rows in batches:
            store.record(rid, rows)
    with store.engine.connect() as conn:
        from sqlalchemy import func, select

        chunks = conn.scalar(select(func.count()).select_from(MetricChunk).where(MetricChunk.run_id.in_(runs)))
    last = count * STEPS_PER_FLUSH
    start = time.perf_counter()
    for _ in range(20):
        store.window_means(sweep, "loss", last // 2, last // 2 + 100)
    means = (time.perf_counter() - start) / 20
    print(f"  early stopping's window means over 8 runs ({chunks} chunks): {means * 1e3:.1f} ms")

    # the Compare and Live pages' live path (app/curves.py): a metric of 8 running runs, all of it on the first
    # draw, then only the steps newer than what the page holds; the same rows in the row-per-value table
    for rid in runs:
        for rows in batches:
            old.record(rid, rows)
    for case, cursor in (("first draw: all steps", None), ("each refresh: the newest 50 steps", last - 50)):
        after = {rid: cursor for rid in runs} if cursor is not None else None
        read_s: dict[str, float] = {}
        readers = {"rows": lambda after=after: old.metrics(runs, ["loss"], after),
                   "chunks": lambda after=after: store.metrics(runs, names=["loss"], after=after)}  # fmt: skip
        for name, read in readers.items():
            read()
            start = time.perf_counter()
            for _ in range(10):
                frame = read()
            read_s[name] = (time.perf_counter() - start) / 10
        print(
            f"  live path, 8 runs × {last:,} steps of loss, {case} ({len(frame):,} rows): row per value "
            f"{read_s['rows'] * 1e3:.1f} ms, chunks {read_s['chunks'] * 1e3:.1f} ms "
            f"({read_s['rows'] / read_s['chunks']:.1f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", help="also on this PostgreSQL database (its tables are dropped and rebuilt)")
    parser.add_argument("--flushes", type=int, default=100)
    args = parser.parse_args()
    from db.migrate import upgrade

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        upgrade(url)
        bench("SQLite", Store.from_url(url), args.flushes)
    if args.postgres:
        from sqlalchemy import MetaData

        from db.engine import get_engine

        existing = MetaData()
        existing.reflect(get_engine(args.postgres))
        existing.drop_all(get_engine(args.postgres))
        upgrade(args.postgres)
        bench("PostgreSQL", Store.from_url(args.postgres), args.flushes)


if __name__ == "__main__":
    main()
