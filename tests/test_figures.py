"""Figure builders are pure functions: tested on data, without Streamlit."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pandas as pd

from app.figures import downsample_minmax, metric_chart, schedule_preview


def test_downsample_keeps_every_buckets_min_and_max() -> None:
    rng = np.random.default_rng(0)
    x = np.arange(10_000)
    y = rng.standard_normal(10_000)
    y[1234], y[8765] = 50.0, -50.0  # spikes a stride would miss
    xs, ys = downsample_minmax(x, y, 202)  # 100 buckets of 100 points
    assert len(xs) <= 202 and xs[0] == 0 and xs[-1] == 9_999
    assert 50.0 in ys and -50.0 in ys
    edges = np.linspace(0, 10_000, 101).astype(int)
    for lo, hi in pairwise(edges):
        inside = ys[(xs >= lo) & (xs < hi)]
        assert inside.max() == y[lo:hi].max() and inside.min() == y[lo:hi].min()


def test_downsample_leaves_short_series_alone() -> None:
    x, y = np.arange(10), np.arange(10.0)
    assert downsample_minmax(x, y, 100)[0] is x


def test_metric_chart_one_trace_per_run_and_metric() -> None:
    frame = pd.DataFrame(
        {"run_id": [1, 1, 2, 1], "step": [1, 2, 1, 2], "metric": ["loss", "loss", "loss", "val_loss"],
         "value": [2.0, 1.0, 3.0, 1.5]}
    )  # fmt: skip
    fig = metric_chart(frame, ["loss", "val_loss"], {1: "#1 a", 2: "#2 b"}, log_y=True)
    assert [t.name for t in fig.data] == ["#1 a · train loss", "#1 a · validation loss", "#2 b · train loss"]
    assert list(fig.data[0].y) == [2.0, 1.0] and fig.layout.yaxis.type == "log"


def test_schedule_preview_draws_each_schedule_and_logged_points() -> None:
    fig = schedule_preview({"cosine": ([1, 2], [1.0, 0.5])}, logged={"#3": ([1, 2], [1.0, 0.5])})
    assert [t.name for t in fig.data] == ["cosine", "#3 (logged)"]


def test_downsample_keeps_gaps_and_ignores_non_finite_points() -> None:
    y = np.r_[np.linspace(1, 2, 500), np.full(500, np.nan), np.linspace(3, 4, 500)]
    y[100] = np.inf
    xs, ys = downsample_minmax(np.arange(1500), y, 32)  # 15 buckets of 100
    assert np.isnan(ys).sum() >= 1  # the NaN stretch still shows as a gap
    assert not np.isinf(ys).any()  # inf is never taken for a maximum
    assert ys[np.isfinite(ys)].max() == 4.0 and ys[np.isfinite(ys)].min() == 1.0
    assert list(xs) == sorted(xs)
