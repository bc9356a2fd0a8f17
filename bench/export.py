"""Exports at scale: `app.cli export --all` to CSV and to Parquet, the previous in-memory way against the streaming
way (app/export.py), side by side in one run.

Fills a fresh SQLite database (and PostgreSQL when TEST_DATABASE_URL or --postgres URL is given: its tables are
dropped and migrated again) with RUNS runs × 200 steps × 6 metrics, then runs each export in a fresh process and
prints the seconds, metric values per second and the process's peak memory (RSS, from wait4), and the ratios.
A larger case (--large RUNS, SQLite) shows that the streaming exports' memory stays flat as the runs grow.
Targets (issue 13): ≥ 1M values/s to CSV and Parquet, peak memory under 500 MB whatever the size.

Run: `python bench/export.py [--runs 1000] [--large 5000] [--postgres URL] [--skip-old-large]`.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEPS = 200
METRICS = ("loss", "lr", "grad_l2", "update_l2", "param_l2", "wall_time")
MB = 1024 * 1024


# --- the previous implementation (app/export.py before streaming), kept as the baseline ---------------------------


def old_write_csv(store: Any, run_ids: Iterable[int], out: TextIO) -> int:
    import pandas as pd

    from app.export import _spec_columns, escape_cell, flatten_dict
    from workers.metrics import METRIC_NAMES

    def wide(long: pd.DataFrame) -> pd.DataFrame:
        values = long["value"].astype(object).where(long["value"].notna(), "NaN")
        return long.assign(value=values).pivot(index="step", columns="metric", values="value").sort_index()

    runs = sorted(store.list_runs(ids=list(run_ids)), key=lambda r: r.id)
    spec_columns = _spec_columns(runs)
    logged = set(store.metric_names([run.id for run in runs]))
    metric_columns = list(METRIC_NAMES) + sorted(logged - set(METRIC_NAMES))
    columns = ["run_id", "run_name", "status", *spec_columns, "step", *metric_columns]
    pd.DataFrame(columns=columns).to_csv(out, index=False)
    total = 0
    for run in runs:
        frame = wide(store.metrics([run.id])).reindex(columns=metric_columns)
        spec = flatten_dict(run.spec)
        head = {"run_id": run.id, "run_name": run.name, "status": run.status}
        head.update({c: spec.get(c) for c in spec_columns})
        block = pd.DataFrame({k: [escape_cell(v)] * len(frame) for k, v in head.items()}, index=frame.index)
        block["step"] = frame.index
        block = pd.concat([block, frame], axis=1)[columns]
        block.to_csv(out, index=False, header=False, na_rep="")
        total += len(block)
    return total


def old_long_frame(store: Any, run_ids: Iterable[int]) -> Any:
    import pandas as pd

    from app.export import flatten_dict, varying_fields

    runs = sorted(store.list_runs(ids=list(run_ids)), key=lambda r: r.id)

    def block(run: Any, fields: Sequence[str]) -> pd.DataFrame:
        rows = store.metrics([run.id])
        spec = flatten_dict(run.spec)
        head = {"run_id": run.id, "run_name": run.name, **{f: spec.get(f) for f in fields}}
        out = pd.DataFrame({k: [v] * len(rows) for k, v in head.items()}, index=rows.index)
        return pd.concat([out, rows[["step", "metric", "value"]]], axis=1)

    blocks = [block(run, varying_fields(runs)) for run in runs]
    if not blocks:
        return pd.DataFrame(columns=["run_id", "run_name", "step", "metric", "value"])
    return pd.concat(blocks, ignore_index=True)


def old_parquet_bytes(frame: Any) -> bytes:
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype != object:
            continue
        kinds = {float if isinstance(v, int | float) and not isinstance(v, bool) else type(v)
                 for v in out[column] if v is not None and not (isinstance(v, float) and math.isnan(v))}  # fmt: skip
        if len(kinds) > 1:
            out[column] = out[column].map(lambda v: None if v is None else str(v))
    buffer = io.BytesIO()
    out.to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue()


# --- one export, in a process of its own ----------------------------------------------------------------------


def child(kind: str, url: str, path: str) -> None:
    """What `app.cli export --all -o PATH` does, the old or the new way; prints seconds and rows."""
    from app import export
    from db.store import Store

    store = Store.from_url(url)
    imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # torch, scipy, pandas, pyarrow: MB
    start = time.perf_counter()
    ids = [r.id for r in store.list_runs()]
    if kind == "csv-old":
        with open(path, "w", newline="", encoding="utf-8") as out:
            rows = old_write_csv(store, ids, out)
    elif kind == "parquet-old":
        frame = old_long_frame(store, ids)
        Path(path).write_bytes(old_parquet_bytes(frame))
        rows = len(frame)
    elif kind == "csv-new":
        with open(path, "w", newline="", encoding="utf-8") as out:
            rows = export.write_csv(store, ids, out)
    elif kind == "parquet-new":
        with open(path, "wb") as binary:
            rows = export.write_long_parquet(store, ids, binary)
    else:
        raise SystemExit(f"unknown export {kind}")
    print(f"{time.perf_counter() - start:.4f} {rows} {imported:.0f}")


def measure(kind: str, url: str, folder: Path) -> tuple[float, float, float, int]:
    """Seconds, peak RSS in MB (of that process alone), its RSS once imports were done (before exporting) and the
    file's size in bytes."""
    path = folder / f"{kind}.{'parquet' if kind.startswith('parquet') else 'csv'}"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", kind, url, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed ({proc.returncode}): {output}")
    seconds, _, imported = output.split()
    size = path.stat().st_size
    path.unlink()
    return float(seconds), usage.ru_maxrss / 1024, float(imported), size  # ru_maxrss is in KiB on Linux


# --- filling a database ---------------------------------------------------------------------------------------


def fill(url: str, runs: int) -> int:
    """`runs` runs of one sweep (8 learning rates × seeds, AdamW on digits-mlp) with STEPS steps of METRICS each,
    a NaN and an inf among them, all through the Store (one flush per run); then every run finishes
    (`Store.finish`), as the runs of a sweep one exports have."""
    import numpy as np

    from db.store import Store
    from workers.spec import parse_spec

    store = Store.from_url(url)
    sweep = store.create_sweep("export-bench", {})
    lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
    ids = []
    for i in range(runs):
        name = f"lr={lrs[i % 8]} seed={i // 8}"
        spec = {"name": name, "task": "digits-mlp", "optimizer": {"name": "adamw", "lr": lrs[i % 8]}, "steps": STEPS,
                "seed": i // 8}  # fmt: skip
        ids.append(store.create_run(name, parse_spec(spec).model_dump(mode="json"), sweep))
    rng = np.random.default_rng(0)
    steps = np.arange(1, STEPS + 1).tolist()
    for rid in ids:  # one flush per run through the store: one chunk per metric
        curves = {m: rng.random(STEPS) * 10.0 ** rng.integers(-6, 3) for m in METRICS}
        curves["loss"][7] = math.nan
        curves["grad_l2"][3] = math.inf
        store.record(
            rid, [(s, m, v) for m, values in curves.items() for s, v in zip(steps, values.tolist(), strict=True)]
        )
    for rid in ids:  # finished, as a sweep one exports is: its curves get packed
        store.finish(rid, "completed")
    store.engine.dispose()
    return runs * STEPS * len(METRICS)


def fresh(url: str | None, folder: Path, name: str) -> str:
    from db.migrate import upgrade

    if url is None:
        url = f"sqlite:///{folder / name}"
        upgrade(url)
        return url
    from sqlalchemy import MetaData

    from db.engine import get_engine

    engine = get_engine(url)
    existing = MetaData()
    existing.reflect(engine)
    existing.drop_all(engine)
    engine.dispose()
    upgrade(url)
    return url


def report(label: str, url: str, runs: int, folder: Path, kinds: Sequence[str]) -> dict[str, tuple[float, float]]:
    start = time.perf_counter()
    values = fill(url, runs)
    print(f"\n{label}: {runs:,} runs × {STEPS} steps × {len(METRICS)} metrics = {values:,} values "
          f"(filled in {time.perf_counter() - start:.1f} s)")  # fmt: skip
    print(f"  {'export':<13} {'seconds':>8} {'values/s':>12} {'peak RSS':>10} {'of it imports':>14} {'file':>9}")
    out = {}
    for kind in kinds:
        seconds, peak, imported, size = measure(kind, url, folder)
        out[kind] = (seconds, peak)
        print(f"  {kind:<13} {seconds:8.2f} {values / seconds:12,.0f} {peak:7.0f} MB {imported:11.0f} MB "
              f"{size / MB:6.0f} MB")  # fmt: skip
    for fmt in ("csv", "parquet"):
        if f"{fmt}-old" in out and f"{fmt}-new" in out:
            (t_old, m_old), (t_new, m_new) = out[f"{fmt}-old"], out[f"{fmt}-new"]
            target = "meets" if values / t_new >= 1e6 and m_new < 500 else "MISSES"
            print(f"  {fmt}: streaming is {t_old / t_new:.1f}× faster, {m_old / m_new:.1f}× less memory "
                  f"({target} ≥ 1M values/s and < 500 MB)")  # fmt: skip
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--large", type=int, default=5000, help="runs of the larger SQLite case (0: skip it)")
    parser.add_argument("--skip-old-large", action="store_true", help="only the streaming exports in the large case")
    parser.add_argument("--postgres", default=os.environ.get("TEST_DATABASE_URL"), help="PostgreSQL URL (dropped!)")
    args = parser.parse_args()
    both = ("csv-old", "csv-new", "parquet-old", "parquet-new")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        small = report("SQLite", fresh(None, folder, "small.db"), args.runs, folder, both)
        if args.postgres:
            report("PostgreSQL", fresh(args.postgres, folder, ""), args.runs, folder, both)
        if args.large:
            kinds = ("csv-new", "parquet-new") if args.skip_old_large else both
            large = report("SQLite, larger", fresh(None, folder, "large.db"), args.large, folder, kinds)
            print(
                f"\nstreaming peak memory, {args.runs:,} → {args.large:,} runs: "
                + ", ".join(f"{k} {small[k][1]:.0f} → {large[k][1]:.0f} MB" for k in ("csv-new", "parquet-new"))
            )


if __name__ == "__main__":
    main()
