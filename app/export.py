"""Exports. Three shapes, each as CSV (spreadsheet-safe) and, for sweeps, Parquet:

**Runs CSV** (`write_csv`, the Live and Runs pages, `app.cli export --run/--all`): one row per run and step, the
spec flattened into columns, one column per metric.

Columns, in order: `run_id`, `run_name`, `status`, the spec flattened with dotted names (`task.name`,
`optimizer.name`, `optimizer.lr`, ..., `schedule.*`, `batch.*`, `steps`, `eval_every`, `seed`, `device`),
`step`, then every metric of workers/metrics.py (`loss`, `lr`, ..., `val_loss`, `val_accuracy`) and any other
metric a run logged, alphabetically. A metric not measured at a step is an empty cell; a measured NaN is `NaN`
and infinities are `inf`/`-inf`, which pandas reads back as floats. Text cells that a spreadsheet would run as
a formula (starting with = + - @, tab or carriage return) are prefixed with an apostrophe.

**Long** (`long_frame`/`write_long_csv`, `app.cli export --sweep ID`): every run, every step, every metric, one
number per row: `run_id`, `run_name`, the fields that differ between the runs (`optimizer.lr`, `seed`, ...),
`step`, `metric`, `value`. Tidy: it loads straight into pandas, polars or R for grouping.

**Summary** (`summary_frame`, `--summary`): one row per run: `run_id`, `run_name`, `status`, `reason` (why it
failed or stopped), `steps_done`, `duration_s`, every spec field, `final_<m>` and `best_<m>` for the loss, the
validation loss and accuracy (best = lowest loss, highest accuracy), and, given a target, `target_step`,
`target_samples`, `target_seconds`: when the run first reached it (empty if never).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

import pandas as pd

from app.analysis import varying
from db.store import RunInfo, Store
from workers.metrics import METRIC_NAMES

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def flatten_dict(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(flatten_dict(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _spec_columns(runs: Sequence[RunInfo]) -> list[str]:
    columns: dict[str, None] = {}
    for run in runs:
        for key in flatten_dict(run.spec):
            if key != "name":
                columns.setdefault(key)
    return list(columns)


def _wide(long: pd.DataFrame) -> pd.DataFrame:
    """Long (step, metric, value) rows → one row per step. Measured NaN becomes the text NaN."""
    values = long["value"].astype(object).where(long["value"].notna(), "NaN")
    return long.assign(value=values).pivot(index="step", columns="metric", values="value").sort_index()


def write_csv(store: Store, run_ids: Iterable[int], out: TextIO) -> int:
    """Write the runs' CSV to `out`, one run at a time (memory stays one run wide). Returns the row count."""
    runs = sorted(store.list_runs(ids=list(run_ids)), key=lambda r: r.id)
    spec_columns = _spec_columns(runs)
    logged = set(store.metric_names([run.id for run in runs]))
    metric_columns = list(METRIC_NAMES) + sorted(logged - set(METRIC_NAMES))
    columns = ["run_id", "run_name", "status", *spec_columns, "step", *metric_columns]
    pd.DataFrame(columns=columns).to_csv(out, index=False)
    total = 0
    for run in runs:
        frame = _wide(store.metrics([run.id])).reindex(columns=metric_columns)
        spec = flatten_dict(run.spec)
        head = {"run_id": run.id, "run_name": run.name, "status": run.status}
        head.update({c: spec.get(c) for c in spec_columns})
        block = pd.DataFrame({k: [escape_cell(v)] * len(frame) for k, v in head.items()}, index=frame.index)
        block["step"] = frame.index
        block = pd.concat([block, frame], axis=1)[columns]
        block.to_csv(out, index=False, header=False, na_rep="")
        total += len(block)
    return total


SUMMARY_METRICS = ("loss", "val_loss", "val_accuracy")


def varying_fields(runs: Sequence[RunInfo]) -> list[str]:
    """The flattened spec fields whose values differ between the runs (what a sweep swept), in spec order."""
    return [c for c in varying(flatten_dict(run.spec) for run in runs) if c != "name"]


def summary_frame(store: Store, run_ids: Iterable[int], target: tuple[str, float] | None = None) -> pd.DataFrame:
    """One row per run (see the module docstring), oldest run first."""
    runs = sorted(store.list_runs(ids=list(run_ids)), key=lambda r: r.id)
    ids = [run.id for run in runs]
    rows: list[dict[str, Any]] = []
    spec_columns = _spec_columns(runs)
    for run in runs:
        spec = flatten_dict(run.spec)
        row = {"run_id": run.id, "run_name": run.name, "status": run.status, "reason": run.error,
               "steps_done": run.progress, "duration_s": run.duration}  # fmt: skip
        row.update({c: spec.get(c) for c in spec_columns})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["run_id", "run_name", "status", "reason", "steps_done", "duration_s",
                                        *spec_columns])  # fmt: skip
    for metric in SUMMARY_METRICS:
        found = store.summaries(ids, metric)
        frame[f"final_{metric}"] = [found.get(i, {}).get("final", math.nan) for i in ids]
        frame[f"best_{metric}"] = [found.get(i, {}).get("best", math.nan) for i in ids]
    if target is not None:
        metric, value = target
        steps = store.first_reaching(ids, metric, value)
        at = store.values_at(steps, ["samples_seen", "wall_time"])
        frame["target_step"] = pd.array([steps.get(i) for i in ids], dtype="Int64")
        frame["target_samples"] = [at.get(i, {}).get("samples_seen", math.nan) for i in ids]
        frame["target_seconds"] = [at.get(i, {}).get("wall_time", math.nan) for i in ids]
    return frame


def long_frame(store: Store, run_ids: Iterable[int]) -> pd.DataFrame:
    """Every run's every (step, metric, value), with the run's name and the fields that differ between runs."""
    runs = sorted(store.list_runs(ids=list(run_ids)), key=lambda r: r.id)
    blocks = [_long_block(store, run, varying_fields(runs)) for run in runs]
    if not blocks:
        return pd.DataFrame(columns=["run_id", "run_name", "step", "metric", "value"])
    return pd.concat(blocks, ignore_index=True)


def _long_block(store: Store, run: RunInfo, fields: Sequence[str]) -> pd.DataFrame:
    rows = store.metrics([run.id])
    spec = flatten_dict(run.spec)
    head = {"run_id": run.id, "run_name": run.name, **{f: spec.get(f) for f in fields}}
    block = pd.DataFrame({k: [v] * len(rows) for k, v in head.items()}, index=rows.index)
    return pd.concat([block, rows[["step", "metric", "value"]]], axis=1)


def escape_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells cannot run as spreadsheet formulas."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(escape_cell)
    return out


def write_long_csv(store: Store, run_ids: Iterable[int], out: TextIO) -> int:
    """The long table as CSV, one run at a time. NaN is written `NaN`. Returns the row count."""
    runs = sorted(store.list_runs(ids=list(run_ids)), key=lambda r: r.id)
    fields = varying_fields(runs)
    pd.DataFrame(columns=["run_id", "run_name", *fields, "step", "metric", "value"]).to_csv(out, index=False)
    total = 0
    for run in runs:
        block = escape_frame(_long_block(store, run, fields))
        block.to_csv(out, index=False, header=False, na_rep="NaN")
        total += len(block)
    return total


def frame_csv_bytes(frame: pd.DataFrame) -> bytes:
    """A table (the summary) as spreadsheet-safe CSV; missing cells empty."""
    return escape_frame(frame).to_csv(index=False, na_rep="").encode("utf-8")


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """A table as Parquet (pyarrow): types kept, NaN kept, no escaping needed (no spreadsheet runs it)."""
    import io

    buffer = io.BytesIO()
    _parquet_safe(frame).to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue()


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet columns have one type: a spec field holding, say, numbers for one schedule and text for another
    becomes text."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype != object:
            continue
        kinds = {float if isinstance(v, int | float) and not isinstance(v, bool) else type(v)
                 for v in out[column] if v is not None and not (isinstance(v, float) and math.isnan(v))}  # fmt: skip
        if len(kinds) > 1:
            out[column] = out[column].map(lambda v: None if v is None else str(v))
    return out


def long_csv_bytes(store: Store, run_ids: Iterable[int]) -> bytes:
    import io

    buffer = io.StringIO()
    write_long_csv(store, run_ids, buffer)
    return buffer.getvalue().encode("utf-8")


def csv_bytes(store: Store, run_ids: Iterable[int]) -> bytes:
    import io

    buffer = io.StringIO()
    write_csv(store, run_ids, buffer)
    return buffer.getvalue().encode("utf-8")
