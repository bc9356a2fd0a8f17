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
