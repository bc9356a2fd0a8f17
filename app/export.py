"""CSV export: one row per run and step, the spec flattened into columns, one column per metric.

Columns, in order: `run_id`, `run_name`, `status`, the spec flattened with dotted names (`task.name`,
`optimizer.name`, `optimizer.lr`, ..., `schedule.*`, `batch.*`, `steps`, `eval_every`, `seed`, `device`),
`step`, then every metric of workers/metrics.py (`loss`, `lr`, ..., `val_loss`, `val_accuracy`) and any other
metric a run logged, alphabetically. A metric not measured at a step is an empty cell; a measured NaN is `NaN`
and infinities are `inf`/`-inf`, which pandas reads back as floats. Text cells that a spreadsheet would run as
a formula (starting with = + - @, tab or carriage return) are prefixed with an apostrophe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

import pandas as pd

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


def csv_bytes(store: Store, run_ids: Iterable[int]) -> bytes:
    import io

    buffer = io.StringIO()
    write_csv(store, run_ids, buffer)
    return buffer.getvalue().encode("utf-8")
