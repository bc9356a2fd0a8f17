"""CSV export: one row per run and step, documented columns, pandas round trip, formula cells escaped."""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest

from app.analysis import time_to_target
from app.export import csv_bytes, escape_cell, frame_csv_bytes, long_csv_bytes, long_frame, parquet_bytes, summary_frame
from db.store import Store
from workers.metrics import METRIC_NAMES
from workers.spec import flatten, parse_spec


def spec(name: str, optimizer: dict[str, object]) -> dict[str, object]:
    return parse_spec({"name": name, "task": "moons-mlp", "optimizer": optimizer, "steps": 3}).model_dump(mode="json")


@pytest.fixture
def two_runs(store: Store) -> tuple[Store, int, int]:
    a = store.create_run('=HYPERLINK("http://evil")', spec('=HYPERLINK("http://evil")', {"name": "sgd", "lr": 0.1}))
    b = store.create_run("adam run", spec("adam run", {"name": "adam", "lr": 0.01}))
    store.record(a, [(s, m, 1.0 / s) for s in (1, 2, 3) for m in METRIC_NAMES if not m.startswith("val_")])
    store.record(a, [(3, "val_loss", 0.5), (3, "val_accuracy", 0.75), (2, "loss", math.nan), (3, "grad_l2", math.inf)])
    store.record(b, [(1, "loss", 0.7), (1, "extra_metric", 1.5)])
    return store, a, b


def test_rows_columns_and_values_round_trip_through_pandas(two_runs: tuple[Store, int, int]) -> None:
    store, a, b = two_runs
    frame = pd.read_csv(io.BytesIO(csv_bytes(store, [a, b])))
    assert list(frame.columns[:3]) == ["run_id", "run_name", "status"]
    spec_columns = [k for k in flatten(parse_spec(store.get_run(a).spec)) if k != "name"]  # type: ignore[union-attr]
    assert set(spec_columns) <= set(frame.columns)
    assert "optimizer.beta1" in frame.columns  # adam's own hyper-parameters get columns too
    step_at = list(frame.columns).index("step")
    assert list(frame.columns[step_at + 1 :]) == [*METRIC_NAMES, "extra_metric"]
    assert len(frame) == 4 and list(frame[frame.run_id == a].step) == [1, 2, 3]
    row3 = frame[(frame.run_id == a) & (frame.step == 3)].iloc[0]
    assert row3["loss"] == pytest.approx(1 / 3) and row3["val_accuracy"] == 0.75 and row3["grad_l2"] == math.inf
    assert row3["optimizer.lr"] == 0.1 and row3["optimizer.name"] == "sgd" and row3["task.name"] == "moons-mlp"
    assert math.isnan(frame[(frame.run_id == a) & (frame.step == 1)].iloc[0]["val_loss"])  # not measured: empty
    assert frame[frame.run_id == a].iloc[0]["optimizer.momentum"] == 0.9  # sgd's own hyper-parameter ...
    assert math.isnan(frame[frame.run_id == b].iloc[0]["optimizer.momentum"])  # ... is an empty cell for adam


def test_measured_nan_and_unmeasured_cells_differ_in_the_file(two_runs: tuple[Store, int, int]) -> None:
    store, a, _ = two_runs
    text = csv_bytes(store, [a]).decode()
    lines = text.splitlines()
    header = lines[0].split(",")
    step2 = next(line for line in lines[1:] if line.split(",")[header.index("step")] == "2")
    cells = step2.split(",")
    assert cells[header.index("loss")] == "NaN" and cells[header.index("val_loss")] == ""


def test_formula_cells_are_escaped(two_runs: tuple[Store, int, int]) -> None:
    store, a, _ = two_runs
    frame = pd.read_csv(io.BytesIO(csv_bytes(store, [a])))
    assert set(frame["run_name"]) == {'\'=HYPERLINK("http://evil")'}
    for cell in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert escape_cell(cell) == "'" + cell
    assert escape_cell("adam") == "adam" and escape_cell(-1.5) == -1.5  # numbers stay numbers


@pytest.fixture
def sweep(store: Store) -> tuple[Store, int, list[int]]:
    """Two runs of a sweep with hand-written curves: loss 1/step, val accuracy rising, 10 samples per step."""
    sweep_id = store.create_sweep("s", {})
    ids = []
    for lr, name in ((0.1, "=cmd|' /C calc'!A0"), (0.01, "slow")):
        rid = store.create_run(name, spec(name, {"name": "sgd", "lr": lr}), sweep_id)
        rows = [(s, "loss", lr * 10 / s) for s in range(1, 11)]
        rows += [(s, "samples_seen", 10.0 * s) for s in range(1, 11)] + [
            (s, "wall_time", 0.5 * s) for s in range(1, 11)
        ]
        rows += [(5, "val_accuracy", 0.6), (10, "val_accuracy", 0.9 if lr == 0.1 else 0.4), (10, "val_loss", math.nan)]
        store.record(rid, rows)
        ids.append(rid)
    return store, sweep_id, ids


def test_summary_has_final_and_best_and_time_to_target(sweep: tuple[Store, int, list[int]]) -> None:
    store, _, (fast, slow) = sweep
    frame = summary_frame(store, [fast, slow], target=("loss", 0.25)).set_index("run_id")
    assert frame.loc[fast, "final_loss"] == pytest.approx(0.1) and frame.loc[fast, "best_loss"] == pytest.approx(0.1)
    assert frame.loc[fast, "best_val_accuracy"] == 0.9 and frame.loc[slow, "best_val_accuracy"] == 0.6  # highest
    assert frame.loc[slow, "final_val_accuracy"] == 0.4 and math.isnan(frame.loc[fast, "final_val_loss"])
    # loss = 1/step reaches 0.25 first at step 4 (by hand): 40 samples, 2 s; the slow run is below it from step 1
    assert frame.loc[fast, "target_step"] == 4 and frame.loc[fast, "target_samples"] == 40
    assert frame.loc[fast, "target_seconds"] == 2.0 and frame.loc[slow, "target_step"] == 1
    curve = store.metrics([fast])
    assert time_to_target(curve, "loss", 0.25).step == 4  # agrees with the pure function on the curve
    never = summary_frame(store, [fast], target=("loss", 0.01))
    assert pd.isna(never["target_step"].iloc[0]) and math.isnan(never["target_seconds"].iloc[0])
    assert frame.loc[fast, "optimizer.lr"] == 0.1 and frame.loc[fast, "status"] == "queued"


def test_long_csv_round_trips_every_number_and_names_the_swept_fields(sweep: tuple[Store, int, list[int]]) -> None:
    store, _, ids = sweep
    frame = pd.read_csv(io.BytesIO(long_csv_bytes(store, ids)))
    assert list(frame.columns) == ["run_id", "run_name", "optimizer.lr", "step", "metric", "value"]
    assert len(frame) == 2 * (10 * 3 + 3)
    expected = store.metrics(ids).sort_values(["run_id", "metric", "step"]).reset_index(drop=True)
    got = frame.sort_values(["run_id", "metric", "step"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[["run_id", "step", "metric", "value"]], expected, check_dtype=False)
    assert frame["run_name"].iloc[0].startswith("'=")  # escaped


def test_parquet_round_trips_the_long_table_and_the_summary(sweep: tuple[Store, int, list[int]]) -> None:
    store, _, ids = sweep
    for frame in (long_frame(store, ids), summary_frame(store, ids, target=("loss", 0.5))):
        back = pd.read_parquet(io.BytesIO(parquet_bytes(frame)))
        pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    back = pd.read_parquet(io.BytesIO(parquet_bytes(long_frame(store, ids))))
    assert back["value"].isna().sum() == 2  # the NaN val_loss of each run survives


def test_summary_csv_escapes_and_keeps_missing_cells_empty(sweep: tuple[Store, int, list[int]]) -> None:
    store, _, ids = sweep
    text = frame_csv_bytes(summary_frame(store, ids)).decode()
    back = pd.read_csv(io.StringIO(text))
    assert back["run_name"].iloc[0] == "'=cmd|' /C calc'!A0" and len(back) == 2
    assert math.isnan(back["final_val_loss"].iloc[0])


# --- streaming: the same files as the in-memory export, one chunk held at a time ---------------------------------


def _old_write_csv(store: Store, run_ids: list[int]) -> str:
    """The runs' CSV as the in-memory export wrote it (one pandas pivot per run): the reference."""
    from app.export import _spec_columns, flatten_dict

    def wide(long: pd.DataFrame) -> pd.DataFrame:
        values = long["value"].astype(object).where(long["value"].notna(), "NaN")
        return long.assign(value=values).pivot(index="step", columns="metric", values="value").sort_index()

    out = io.StringIO()
    runs = sorted(store.list_runs(ids=run_ids), key=lambda r: r.id)
    spec_columns = _spec_columns(runs)
    logged = set(store.metric_names([run.id for run in runs]))
    metric_columns = list(METRIC_NAMES) + sorted(logged - set(METRIC_NAMES))
    columns = ["run_id", "run_name", "status", *spec_columns, "step", *metric_columns]
    pd.DataFrame(columns=columns).to_csv(out, index=False)
    for run in runs:
        frame = wide(store.metrics([run.id])).reindex(columns=metric_columns)
        spec = flatten_dict(run.spec)
        head = {"run_id": run.id, "run_name": run.name, "status": run.status, **{c: spec.get(c) for c in spec_columns}}
        block = pd.DataFrame({k: [escape_cell(v)] * len(frame) for k, v in head.items()}, index=frame.index)
        block["step"] = frame.index
        pd.concat([block, frame], axis=1)[columns].to_csv(out, index=False, header=False, na_rep="")
    return out.getvalue()


@pytest.fixture
def mixed(store: Store) -> tuple[Store, list[int]]:
    """Six runs of a sweep: NaN, ±inf, unmeasured metrics, formula-looking and quoted names, different metric sets
    and schedules (spec fields missing in some runs, text and numbers in one field), one finished (packed), one
    with no metrics."""
    sweep_id = store.create_sweep("mixed", {})
    ids = []
    optimizers: list[dict[str, object]] = [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 1e-5},
                                           {"name": "sgd", "lr": 3e-4, "momentum": 0.0}, {"name": "adamw", "lr": 2.5}]  # fmt: skip
    names = ['=HYPERLINK("x")', "plain, with comma", '-quoted "run"', "@sum", "plain", "empty"]
    for i, name in enumerate(names):
        tag = {"tag": "-x" if i == 2 else i * 1.5 if i % 2 else i}  # text, floats and ints in one field
        rid = store.create_run(name, {**spec(name, optimizers[i % 4]), **tag}, sweep_id)
        ids.append(rid)
        if name == "empty":
            continue
        rows = [(s, "loss", 1.0 / (s + i)) for s in range(1, 8)] + [(s, "lr", 1e-5 * s) for s in range(1, 8, 2)]
        rows += [(2, "loss", math.nan), (3, "grad_l2", math.inf), (4, "grad_l2", -math.inf)]
        if i % 2:
            rows += [(5, "=cmd|' /C calc'!A0", 3.0), (7, "val_accuracy", 0.123456789012345678), (6, "zeta", -0.0)]
        store.record(rid, rows)
    store.finish(ids[1], "completed")  # read from its packed curves
    return store, ids


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["run_id", "step", "metric"], kind="stable").reset_index(drop=True)


def test_streaming_exports_write_what_the_in_memory_export_wrote(mixed: tuple[Store, list[int]]) -> None:
    import pyarrow.parquet as pq

    from app.export import write_csv, write_long_csv, write_long_parquet

    store, ids = mixed
    for chunk_rows in (1, 5, 13, 1000):  # a chunk per step, several steps or runs, everything at once
        out = io.StringIO()
        rows = write_csv(store, ids, out, chunk_rows=chunk_rows)
        assert out.getvalue() == _old_write_csv(store, ids) and rows == out.getvalue().count("\n") - 1
        long = io.StringIO()
        assert write_long_csv(store, ids, long, chunk_rows=chunk_rows) == len(store.metrics(ids))
        old, new = _old_write_long_csv(store, ids).split("\n"), long.getvalue().split("\n")
        assert new[0] == old[0] and sorted(new) == sorted(old)  # the same lines; in metric order within a step
        binary = io.BytesIO()
        measured = ids[:-1]  # with the run that logged nothing, pandas made run_id a float: not kept
        write_long_parquet(store, measured, binary, chunk_rows=chunk_rows)
        expected = pq.read_table(io.BytesIO(parquet_bytes(long_frame(store, measured))))
        got = pq.read_table(io.BytesIO(binary.getvalue()))
        assert got.schema == expected.schema.remove_metadata()  # the same types (NaN a null, as pandas wrote)
        assert got.column("value").null_count == expected.column("value").null_count == 5
        pd.testing.assert_frame_equal(_sorted(got.to_pandas()), _sorted(expected.to_pandas()))
        if chunk_rows == 5:
            assert pq.ParquetFile(io.BytesIO(binary.getvalue())).num_row_groups > 5  # one row group per chunk


def _old_write_long_csv(store: Store, run_ids: list[int]) -> str:
    """The long CSV as the in-memory export wrote it (one escaped frame per run): the reference."""
    from app.export import _long_block, escape_frame, varying_fields

    out = io.StringIO()
    runs = sorted(store.list_runs(ids=run_ids), key=lambda r: r.id)
    fields = varying_fields(runs)
    pd.DataFrame(columns=["run_id", "run_name", *fields, "step", "metric", "value"]).to_csv(out, index=False)
    for run in runs:
        escape_frame(_long_block(store, run, fields)).to_csv(out, index=False, header=False, na_rep="NaN")
    return out.getvalue()


def test_streaming_exports_hold_one_chunk_whatever_the_number_of_runs(store: Store) -> None:
    """The store hands out chunks of at most chunk_rows rows that never split a step, and when a writer asks for the
    next chunk it holds at most two before the last (being formatted on its two threads): memory stays flat as the
    runs grow."""
    import weakref

    from app.export import write_csv, write_long_csv, write_long_parquet

    ids = []
    for i in range(12):
        rid = store.create_run(f"r{i}", spec(f"r{i}", {"name": "sgd", "lr": 0.1 * (i + 1)}))
        store.record(rid, [(s, m, float(s * i)) for s in range(1, 21) for m in ("loss", "lr", "grad_l2")])
        if i % 3 == 0:
            store.finish(rid, "completed")
        ids.append(rid)
    for chunk_rows in (3, 7, 50, 100):
        chunks = list(store.iter_metrics(ids, chunk_rows=chunk_rows))
        assert max(len(c) for c in chunks) <= max(chunk_rows, 3)  # a step (3 metrics) comes whole
        assert all(len(set(zip(c.run_id, c.step, strict=True))) * 3 == len(c) for c in chunks)  # steps unsplit
        joined = pd.concat(chunks, ignore_index=True).astype({"metric": object})
        expected = store.metrics(ids).sort_values(["run_id", "step", "metric"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(joined, expected, check_dtype=False)

    real = Store.iter_metrics
    seen: list[weakref.ref[pd.DataFrame]] = []
    for n in (3, 12):

        def watched(self: Store, run_ids: list[int], chunk_rows: int = 100_000) -> object:
            for chunk in real(self, run_ids, chunk_rows=chunk_rows):
                assert chunk_rows == 30 and len(chunk) <= 30
                assert sum(ref() is not None for ref in seen[:-1]) <= 2  # a bound, whatever the number of runs
                seen.append(weakref.ref(chunk))
                yield chunk

        store.iter_metrics = watched.__get__(store)  # type: ignore[method-assign]
        for write in (write_csv, write_long_csv):
            seen.clear()
            write(store, ids[:n], io.StringIO(), chunk_rows=30)
            assert len(seen) == n * 60 // 30  # the chunks grow in number with the runs, not in size
        seen.clear()
        write_long_parquet(store, ids[:n], io.BytesIO(), chunk_rows=30)
        assert len(seen) == n * 2
        del store.iter_metrics


def test_numbers_are_written_as_python_writes_them_whatever_their_magnitude() -> None:
    """The CSV's numbers are Arrow's shortest digits put into Python's notation (`repr`: what pandas writes): any
    float, and a large sample across every magnitude, subnormals and the edges of each notation included."""
    import numpy as np
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from app.export import _numbers

    def python(values: np.ndarray) -> list[str]:
        return ["NaN" if x != x else repr(x) for x in values.tolist()]

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=50))
    def any_floats(values: list[float]) -> None:
        array = np.asarray(values, dtype=np.float64)
        assert _numbers(array).to_pylist() == python(array)

    any_floats()
    rng = np.random.default_rng(0)
    edges = [1e-4, 9.999999999999999e-05, 1e-5, 1e-6, 9.99999999999e-07, 1e15, 1e16, 9.999999999999998e15, 5e-324]
    sample = np.concatenate([
        rng.standard_normal(50_000) * 10.0 ** rng.integers(-30, 30, 50_000), np.round(rng.random(2_000), 4) * 1e-5,
        np.arange(-2_000, 2_000, dtype=float) * 1e3, 10.0 ** np.arange(-30, 30), edges, np.negative(edges),
    ])  # fmt: skip
    assert _numbers(sample).to_pylist() == python(sample)
