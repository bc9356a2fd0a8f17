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

The runs' CSV, the long CSV and the long Parquet (`write_long_parquet`) stream: metrics come from the store in
chunks of at most `CHUNK_ROWS` values (`Store.iter_metrics`), pivoted with numpy and written chunk by chunk
(Parquet: one row group per chunk, its schema fixed up front from the runs' specs), so memory stays one chunk
wide however many runs there are. Within a run and step, long rows come in metric order. In Parquet a measured
NaN is a null (as pandas writes it), read back as NaN.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO, TextIO

import numpy as np
import pandas as pd

from app.analysis import varying
from db.store import RunInfo, Store
from workers.metrics import METRIC_NAMES

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CHUNK_ROWS = 50_000  # metric values a streaming export holds at once (~30 MB of text and arrays)


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


def _csv_cells(cells: Sequence[str]) -> str:
    """Cells joined as pandas' `to_csv` writes them (csv module, minimal quoting), without the line end."""
    return _csv_lines([cells])[0]


def _csv_lines(rows: Iterable[Sequence[str]]) -> list[str]:
    """Each row's cells joined as `_csv_cells` joins them, by one csv writer (one line per row, its end cut)."""
    lines: list[str] = []

    class Lines:  # the writer writes each row with one call: one line (a quoted cell may hold line breaks)
        write = lines.append

    writer = csv.writer(Lines(), lineterminator="\n")
    for cells in rows:
        writer.writerow(cells)
    return [line[:-1] for line in lines]


def _write_lines(lines: Any, out: TextIO) -> None:
    """An Arrow string array of lines written to `out`, each followed by a line end, without a Python string per
    line: the array's characters are one buffer, so a line end is joined to each and the buffer written whole."""
    import pyarrow.compute as pc

    if len(lines) == 0:
        return
    ended = pc.binary_join_element_wise(lines, "", "\n")  # line + "\n" (joined by "\n" to an empty string)
    offsets = np.frombuffer(ended.buffers()[1], dtype=np.int32)[ended.offset : ended.offset + len(ended) + 1]
    out.write(memoryview(ended.buffers()[2])[offsets[0] : offsets[-1]].tobytes().decode("utf-8"))


def _text(value: Any, na_rep: str) -> str:
    """One cell's text as pandas writes it: escaped, missing values as `na_rep`, everything else `str()`."""
    value = escape_cell(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return na_rep
    return str(value)


def _numbers(values: np.ndarray) -> Any:
    """Measured values as an Arrow string array holding each float's Python `repr` (shortest round-trip digits,
    `inf`/`-inf`: what pandas writes), NaN as `NaN`.

    Arrow formats the same shortest digits in C++, much faster than `repr`, but not always in the same notation:
    it writes 2.0 as `2`, `e-7` for `e-07`, and picks between positional and exponent by length. So its text is
    kept where Python's notation is the same (positional for 1e-4 ≤ |x| < 1e15, with `.0` after an integral value;
    an exponent below 1e-4 and from 1e16, padded to two digits), and `repr` formats the rest (zero, inf, NaN, and
    the values where Arrow chose the other notation)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = np.asarray(values, dtype=np.float64)
    text = pa.array(values).cast(pa.string())
    magnitude = np.abs(values)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(values) & (magnitude > 0)
        exponent = pc.match_substring(text, "e").to_numpy(zero_copy_only=False)  # Arrow: the shorter (1e+10)
        plain = (magnitude >= 1e-4) & (magnitude < 1e15) & ~exponent  # NaN: neither
        scientific = ((magnitude < 1e-4) | (magnitude >= 1e16)) & finite & exponent
        tiny = (magnitude >= 1e-6) & (magnitude < 1e-4) & ~exponent  # Arrow: 0.0000123, Python: 1.23e-05
    changed: list[tuple[np.ndarray, Any]] = []  # (positions, their new text): disjoint, put in with one pass
    for mask, rewrites in ((scientific, [(r"e([+-])(\d)$", r"e\10\2")]),  # e-7 → e-07 (RE2: \1, then 0)
                           (tiny & (magnitude >= 1e-5), [(r"^(-?)0\.0000([1-9])(\d+)$", r"\1\2.\3e-05"),
                                                         (r"^(-?)0\.0000([1-9])$", r"\1\2e-05")]),
                           (tiny & (magnitude < 1e-5), [(r"^(-?)0\.00000([1-9])(\d+)$", r"\1\2.\3e-06"),
                                                        (r"^(-?)0\.00000([1-9])$", r"\1\2e-06")])):  # fmt: skip
        if mask.any():  # rewritten where needed only: a regex over every value costs more than repr
            part = pc.filter(text, pa.array(mask))
            for pattern, replacement in rewrites:
                part = pc.replace_substring_regex(part, pattern, replacement)
            changed.append((np.flatnonzero(mask), part))
    scientific |= tiny
    integral = plain & (values == np.trunc(values))
    if integral.any():
        changed.append((np.flatnonzero(integral), pc.binary_join_element_wise(pc.filter(text, pa.array(integral)),
                                                                              ".0", "")))  # fmt: skip
    other = ~(plain | scientific)
    if other.any():
        rest = ["NaN" if x != x else repr(x) for x in values[other].tolist()]
        changed.append((np.flatnonzero(other), pa.array(rest, type=pa.string())))
    if not changed:
        return text
    where = np.concatenate([at for at, _ in changed])
    mask = np.zeros(len(values), dtype=bool)
    mask[where] = True
    news = pa.concat_arrays([part for _, part in changed])
    return pc.replace_with_mask(text, pa.array(mask), pc.take(news, pa.array(np.argsort(where, kind="stable"))))


def _chunks(store: Store, runs: Sequence[RunInfo], chunk_rows: int) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """The runs' metrics a chunk at a time, with each row's position in `runs` (sorted by id)."""
    ids = np.asarray([run.id for run in runs], dtype=np.int64)
    for chunk in store.iter_metrics([run.id for run in runs], chunk_rows=chunk_rows):
        if len(chunk):
            yield chunk, np.searchsorted(ids, chunk["run_id"].to_numpy())


def _overlapped(chunks: Iterable[tuple[Any, ...]], make: Callable[..., Any], threads: int = 2) -> Iterator[Any]:
    """`make(*chunk)` for each chunk, handed back in order, made on `threads` threads while the next chunks are
    read: Arrow's kernels (the formatting) let go of the GIL, so reading (Python and the database driver) and
    formatting share the cores. At most `threads` + 1 chunks are held at once."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    with ThreadPoolExecutor(threads, thread_name_prefix="export") as pool:
        pending: deque[Future[Any]] = deque()
        for chunk in chunks:
            pending.append(pool.submit(make, *chunk))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _codes(metric: pd.Series, names: Sequence[str]) -> np.ndarray:
    """Each row's metric as its position in `names`."""
    if isinstance(metric.dtype, pd.CategoricalDtype):
        where = {name: i for i, name in enumerate(names)}
        remap = np.asarray([where[c] for c in metric.cat.categories], dtype=np.int64)
        return remap[metric.cat.codes.to_numpy()]
    return np.asarray(pd.Categorical(metric, categories=list(names)).codes, dtype=np.int64)


def write_csv(store: Store, run_ids: Iterable[int], out: TextIO, chunk_rows: int = CHUNK_ROWS) -> int:
    """Write the runs' CSV to `out`, streamed a chunk of metrics at a time (memory stays one chunk wide).
    Returns the row count."""
    import pyarrow as pa
    import pyarrow.compute as pc

    runs = sorted(store.list_runs(ids=list(run_ids)), key=lambda r: r.id)
    spec_columns = _spec_columns(runs)
    logged = set(store.metric_names([run.id for run in runs]))
    metric_columns = list(METRIC_NAMES) + sorted(logged - set(METRIC_NAMES))
    columns = ["run_id", "run_name", "status", *spec_columns, "step", *metric_columns]
    pd.DataFrame(columns=columns).to_csv(out, index=False)
    heads = (  # each run's cells before the step, written once
        [_text(v, "") for v in (run.id, run.name, run.status, *(spec.get(c) for c in spec_columns))]
        for run, spec in ((run, flatten_dict(run.spec)) for run in runs)
    )
    head_cells = pa.array(_csv_lines(heads), type=pa.string())

    def lines_of(chunk: pd.DataFrame, position: np.ndarray) -> tuple[Any, int]:  # built by Arrow, none in Python
        run_ids_, steps = chunk["run_id"].to_numpy(), chunk["step"].to_numpy()
        starts = np.r_[True, (run_ids_[1:] != run_ids_[:-1]) | (steps[1:] != steps[:-1])]
        row = np.cumsum(starts) - 1  # each value's row: one per run and step
        first = np.flatnonzero(starts)
        text, codes = _numbers(chunk["value"].to_numpy()), _codes(chunk["metric"], metric_columns)
        cells = []
        for j in range(len(metric_columns)):  # each metric's column: its value's text, or null (empty) where none
            at = np.full(len(first), -1, dtype=np.int64)
            mine = np.flatnonzero(codes == j)
            at[row[mine]] = mine
            cells.append(pc.take(text, pa.array(at, mask=at < 0)))
        lines = pc.binary_join_element_wise(
            pc.take(head_cells, pa.array(position[first])), pa.array(steps[first]).cast(pa.string()), *cells, ",",
            null_handling="replace", null_replacement="",
        )  # fmt: skip
        return lines, len(first)

    total = 0
    for lines, rows in _overlapped(_chunks(store, runs, chunk_rows), lines_of):
        _write_lines(lines, out)
        total += rows
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


def write_long_csv(store: Store, run_ids: Iterable[int], out: TextIO, chunk_rows: int = CHUNK_ROWS) -> int:
    """The long table as CSV, streamed a chunk at a time. NaN is written `NaN`. Returns the row count."""
    import pyarrow as pa
    import pyarrow.compute as pc

    runs = sorted(store.list_runs(ids=list(run_ids)), key=lambda r: r.id)
    fields = varying_fields(runs)
    pd.DataFrame(columns=["run_id", "run_name", *fields, "step", "metric", "value"]).to_csv(out, index=False)
    heads = (
        [_text(v, "NaN") for v in (run.id, run.name, *(spec.get(f) for f in fields))]
        for run, spec in ((run, flatten_dict(run.spec)) for run in runs)
    )
    head_cells = pa.array(_csv_lines(heads), type=pa.string())

    def lines_of(chunk: pd.DataFrame, position: np.ndarray) -> Any:
        metric = chunk["metric"]
        names = list(metric.cat.categories) if isinstance(metric.dtype, pd.CategoricalDtype) else sorted(set(metric))
        cells = pa.array([_csv_cells([_text(name, "NaN")]) for name in names], type=pa.string())
        lines = pc.binary_join_element_wise(
            pc.take(head_cells, pa.array(position)), pa.array(chunk["step"].to_numpy()).cast(pa.string()),
            pc.take(cells, pa.array(_codes(metric, names))), _numbers(chunk["value"].to_numpy()), ",",
        )  # fmt: skip
        return lines

    total = 0
    for lines in _overlapped(_chunks(store, runs, chunk_rows), lines_of):
        _write_lines(lines, out)
        total += len(lines)
    return total


def _arrow_column(name: str, values: Sequence[Any]) -> tuple[Any, Callable[[Any], Any]]:
    """The Parquet type the in-memory export gave a spec field holding these values (one per run), and how a
    value becomes a cell: the same pandas inference on one row per distinct value, then `_parquet_safe`."""
    import pyarrow as pa

    distinct = list({(type(v), repr(v)): v for v in values}.values())
    frame = pd.concat([pd.DataFrame({name: [v]}) for v in distinct], ignore_index=True)
    text = _mixed(frame[name])
    arrow_type = pa.Table.from_pandas(_parquet_safe(frame), preserve_index=False).schema.field(name).type
    return arrow_type, (lambda v: None if v is None else str(v)) if text else (lambda v: v)


def write_long_parquet(store: Store, run_ids: Iterable[int], out: BinaryIO, chunk_rows: int = CHUNK_ROWS) -> int:
    """The long table as Parquet, streamed: one row group per chunk of metrics, the schema fixed up front (the
    types `parquet_bytes(long_frame(...))` gives). Returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    runs = sorted(store.list_runs(ids=list(run_ids)), key=lambda r: r.id)
    fields = varying_fields(runs)
    per_run: dict[str, Any] = {
        "run_id": pa.array([run.id for run in runs], pa.int64()),
        "run_name": pa.array([run.name for run in runs], pa.large_string()),
    }
    specs = [flatten_dict(run.spec) for run in runs]
    for field in fields:
        values = [spec.get(field) for spec in specs]
        arrow_type, cell = _arrow_column(field, values)
        per_run[field] = pa.array([cell(v) for v in values], arrow_type, from_pandas=True)
    schema = pa.schema(
        [("run_id", pa.int64()), ("run_name", pa.large_string()), *((f, per_run[f].type) for f in fields),
         ("step", pa.int64()), ("metric", pa.large_string()), ("value", pa.float64())]
    )  # fmt: skip
    writer: pq.ParquetWriter | None = None

    def table_of(chunk: pd.DataFrame, position: np.ndarray) -> Any:
        at = pa.array(position)
        metric = chunk["metric"]
        if isinstance(metric.dtype, pd.CategoricalDtype):
            names = pa.array(list(metric.cat.categories), pa.large_string())
            metric_column = names.take(pa.array(metric.cat.codes.to_numpy()))
        else:
            metric_column = pa.array(metric.astype(object).to_numpy(), pa.large_string())
        columns = [per_run[c].take(at) for c in ("run_id", "run_name", *fields)]
        columns += [pa.array(chunk["step"].to_numpy()), metric_column,
                    pa.array(chunk["value"].to_numpy(), pa.float64(), from_pandas=True)]  # fmt: skip
        return pa.Table.from_arrays(columns, schema=schema)

    total = 0
    try:
        for table in _overlapped(_chunks(store, runs, chunk_rows), table_of):
            if writer is None:
                writer = pq.ParquetWriter(out, schema)
            writer.write_table(table, row_group_size=len(table))
            total += len(table)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # no metrics at all: the in-memory export's empty table
        out.write(parquet_bytes(long_frame(store, [run.id for run in runs])))
    return total


def frame_csv_bytes(frame: pd.DataFrame) -> bytes:
    """A table (the summary) as spreadsheet-safe CSV; missing cells empty."""
    return escape_frame(frame).to_csv(index=False, na_rep="").encode("utf-8")


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """A table as Parquet (pyarrow): types kept, NaN kept, no escaping needed (no spreadsheet runs it)."""
    buffer = io.BytesIO()
    _parquet_safe(frame).to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue()


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet columns have one type: a spec field holding, say, numbers for one schedule and text for another
    becomes text."""
    out = frame.copy()
    for column in out.columns:
        if _mixed(out[column]):
            out[column] = out[column].map(lambda v: None if v is None else str(v))
    return out


def _mixed(column: pd.Series) -> bool:
    """An object column holding more than one kind of value (numbers count as one kind)."""
    if column.dtype != object:
        return False
    kinds = {float if isinstance(v, int | float) and not isinstance(v, bool) else type(v)
             for v in column if v is not None and not (isinstance(v, float) and math.isnan(v))}  # fmt: skip
    return len(kinds) > 1


def long_csv_bytes(store: Store, run_ids: Iterable[int]) -> bytes:
    buffer = io.StringIO()
    write_long_csv(store, run_ids, buffer)
    return buffer.getvalue().encode("utf-8")


def csv_bytes(store: Store, run_ids: Iterable[int]) -> bytes:
    buffer = io.StringIO()
    write_csv(store, run_ids, buffer)
    return buffer.getvalue().encode("utf-8")
