"""CSV export: one row per run and step, documented columns, pandas round trip, formula cells escaped."""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest

from app.export import csv_bytes, escape_cell
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
