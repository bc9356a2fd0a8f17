"""Figure builders are pure functions: tested on data, without Streamlit."""

from __future__ import annotations

import base64
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

from app.figures import (
    Curve,
    best_lr_chart,
    compare_chart,
    downsample_minmax,
    heatmap,
    metric_chart,
    parallel_chart,
    schedule_preview,
)
from app.teaching_figures import (
    contour_lines,
    landscape_figure,
    playground_loss_chart,
    range_test_chart,
    scaling_final_chart,
    state_memory_chart,
    step_law_surface,
)
from models.landscapes import LANDSCAPES
from workers.playground import trajectory


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


def test_compare_chart_zoom_redraws_the_visible_range_at_full_detail() -> None:
    x = np.arange(1, 10_001, dtype=float)
    y = np.sin(x / 50)
    curve = Curve("run", x, y, raw=y + 0.1)
    whole = compare_chart([curve], max_points=200)
    line = next(t for t in whole.data if t.name == "run")
    assert len(line.x) <= 200 and line.x[0] == 1 and line.x[-1] == 10_000
    zoomed = compare_chart([curve], max_points=200, x_range=(1000.0, 1100.0))
    line = next(t for t in zoomed.data if t.name == "run")
    assert list(line.x) == list(range(1000, 1101))  # 101 points fit the budget: every one is drawn
    assert tuple(zoomed.layout.xaxis.range) == (1000.0, 1100.0)
    raw = next(t for t in zoomed.data if t.name == "run raw")
    assert raw.opacity < 0.5 and raw.showlegend is False


def test_compare_chart_band_is_one_closed_polygon() -> None:
    x = np.arange(5.0)
    fig = compare_chart([Curve("g", x, x, lower=x - 1, upper=x + 1)], log_y=True)
    band = next(t for t in fig.data if t.fill == "toself")
    assert list(band.x) == [0, 1, 2, 3, 4, 4, 3, 2, 1, 0]
    assert list(band.y) == [-1, 0, 1, 2, 3, 5, 4, 3, 2, 1]
    assert fig.layout.yaxis.type == "log"


def test_heatmap_writes_mean_std_and_marks_diverged_cells() -> None:
    cells = pd.DataFrame(
        {"lr": [0.01, 0.01, 0.1, 0.1], "bs": [32, 64, 32, 64], "mean": [0.5, 0.4, 0.3, np.nan],
         "std": [0.1, 0.0, 0.05, np.nan], "count": [2, 2, 2, 2], "diverged": [False, False, False, True]}
    )  # fmt: skip
    fig = heatmap(cells, "lr", "bs", "final loss")
    main = fig.data[0]
    assert list(main.x) == ["0.01", "0.1"] and list(main.y) == ["32", "64"]
    assert main.z[0][0] == 0.5 and np.isnan(main.z[1][1])  # the diverged cell is not coloured by a value
    assert main.text[0][0].startswith("0.5 ± 0.1") and "diverged" in main.text[1][1]
    assert len(fig.data) == 2  # the grey overlay for diverged cells


def test_best_lr_chart_draws_the_fit_and_both_rules() -> None:
    best = pd.DataFrame({"opt": ["sgd"] * 3, "bs": [32, 64, 128], "lr": [0.1, 0.2, 0.4], "final": [0.3] * 3})
    fig = best_lr_chart(best, "bs", "lr", "opt")
    names = [t.name for t in fig.data]
    assert "sgd: fit η ∝ B^1.00" in names and "sgd: linear rule" in names and "sgd: square-root rule" in names
    sqrt_rule = next(t for t in fig.data if t.name == "sgd: square-root rule")
    assert sqrt_rule.y[-1] == pytest.approx(0.1 * 2)  # √(128/32) = 2 from the smallest batch's best LR
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"


def test_parallel_coordinates_log_scales_wide_fields_and_codes_text() -> None:
    summary = pd.DataFrame({"optimizer.lr": [1e-4, 1e-2, 1e-1], "optimizer.name": ["sgd", "adam", "sgd"],
                            "final_loss": [0.5, 0.2, 0.9]})  # fmt: skip
    fig = parallel_chart(summary, ["optimizer.lr", "optimizer.name"], "final_loss")
    dims = fig.data[0].dimensions
    assert dims[0].label == "log10 optimizer.lr" and list(dims[0].values) == pytest.approx([-4, -2, -1])
    assert list(dims[1].ticktext) == ["adam", "sgd"] and list(dims[1].values) == [1, 0, 1]


def test_contour_lines_lie_on_the_level_sets() -> None:
    xs = ys = np.linspace(-2, 2, 201)
    gx, gy = np.meshgrid(xs, ys, indexing="xy")
    cx, cy = contour_lines(xs, ys, gx**2 + gy**2, levels=9)  # circles; levels 8/10 … 72/10 of max 8
    on = np.isfinite(cx)
    radii2 = cx[on] ** 2 + cy[on] ** 2
    levels = np.linspace(0, 8, 11)[1:-1]
    nearest = levels[np.abs(radii2[:, None] - levels).argmin(axis=1)]
    assert np.abs(radii2 - nearest).max() < 0.01  # every point is on its circle, to the grid's resolution
    circles = [level for level in levels if np.any(np.abs(radii2 - level) < 0.01)]
    assert len(circles) == 9 and np.isnan(cx).sum() >= 9  # all nine, each a separate piece (NaN between)
    for flat in (np.zeros_like(gx), np.full_like(gx, np.nan)):  # a flat or undefined landscape: no lines
        assert [len(a) for a in contour_lines(xs, ys, flat, levels=9)] == [0, 0]


def _decode(values: object) -> np.ndarray:
    if isinstance(values, dict):  # plotly.js's typed-array spec
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"].replace("f", "<f"))
    return np.asarray(values)


def test_landscape_figure_frames_replay_the_trajectory() -> None:
    land = LANDSCAPES["quadratic"].build(condition_number=10.0)
    run = trajectory(land, {"name": "sgd", "lr": 0.3, "momentum": 0.9}, steps=300)
    fig = landscape_figure(land, {"heavy ball": run}, step=120).to_dict()
    path = next(t for t in fig["data"] if t.get("name") == "heavy ball")
    drawn = _decode(path["x"])
    assert len(drawn) == 121 and drawn[-1] == pytest.approx(run.points[120, 0])  # drawn up to the step
    frames = fig["frames"]
    assert len(frames) == 26 and frames[-1]["name"] == "300"
    for frame in frames:
        t = int(frame["name"])
        trail, marker = frame["data"]
        x, y = _decode(trail["x"]), _decode(trail["y"])
        assert (len(x) <= 60 or t == 300) and x[0] == pytest.approx(
            run.points[0, 0]
        )  # downsampled, starts at the start
        assert (x[-1], y[-1]) == pytest.approx(tuple(run.points[t]), rel=1e-6)  # … and ends where step t is
        assert (marker["x"][0], marker["y"][0]) == pytest.approx(tuple(run.points[t]))


def test_playground_figures_are_valid_plotly_and_draw_their_data() -> None:
    """The Playground's figures are written as plotly JSON (no per-move validation), so plotly validates them here:
    a misspelt attribute, which plotly.js would silently ignore, fails."""
    import plotly.graph_objects as go
    import plotly.io as pio

    land = LANDSCAPES["rosenbrock"].build(a=1.0, b=100.0)
    runs = {
        "sgd": trajectory(land, {"name": "sgd", "lr": 1e-3}, steps=40, batch=8),
        "adam": trajectory(land, {"name": "adam", "lr": 0.05}, steps=40),
    }
    landscape = landscape_figure(land, runs, step=10).to_dict()
    loss = playground_loss_chart(runs, step=10, x="samples").to_dict()
    for spec in (landscape, loss):
        go.Figure(spec)  # raises on any attribute plotly does not know
        assert spec["layout"]["template"] == pio.templates[pio.templates.default].to_plotly_json()
    names = [t.get("name") for t in landscape["data"]]
    assert names[:3] == ["landscape", "sgd", "adam"] and names[-1] == "minimum"
    sgd, adam = loss["data"]
    assert _decode(sgd["x"])[-1] == 40 * 8 and _decode(adam["x"])[-1] == 40  # samples = steps × each run's batch
    shifted = runs["sgd"].loss - min(0.0, runs["sgd"].loss.min())
    assert _decode(sgd["y"]) == pytest.approx(np.maximum(shifted, 1e-12), rel=1e-6)
    assert loss["layout"]["yaxis"]["type"] == "log"
    (line,) = loss["layout"]["shapes"]
    assert (line["x0"], line["x1"], line["yref"]) == (10, 10, "paper")  # the dotted line at the chosen step


def test_laws_figures_draw_what_they_are_given() -> None:
    lrs = np.logspace(-7, 1, 50)
    fig = range_test_chart({"adam": (lrs, np.ones(50)), "sgd": (lrs, np.ones(50))}, {"adam": (1e-4, 1e-2)})
    assert [t.name for t in fig.data] == ["adam", "sgd"] and fig.layout.xaxis.type == "log"
    (shade,) = fig.layout.shapes  # only the range that was given
    assert (shade.x0, shade.x1) == (1e-4, 1e-2) and shade.fillcolor == fig.data[0].line.color

    finals = {("sgd", "linear"): [(64, 0.3), (16, 0.1)], ("sgd", "sqrt"): [(16, 0.1)], ("adam", "linear"): []}
    fig = scaling_final_chart(finals)
    sgd_linear, sgd_sqrt, adam_linear = fig.data
    assert list(sgd_linear.x) == [16, 64] and list(sgd_linear.y) == [0.1, 0.3]  # sorted by batch size
    assert sgd_linear.line.dash == "solid" and sgd_sqrt.line.dash == "dot"
    assert sgd_linear.line.color == sgd_sqrt.line.color != adam_linear.line.color  # a colour per optimizer

    ns, ds = np.logspace(6, 12, 7), np.logspace(8, 13, 6)
    lrs = np.outer(np.arange(1, 7), np.ones(7))
    fig = step_law_surface(ns, ds, lrs, (1e8, 1e10))
    assert list(fig.data[0].x) == pytest.approx(range(6, 13)) and fig.data[0].z[5][0] == pytest.approx(np.log10(6))
    assert (fig.data[1].x[0], fig.data[1].y[0]) == pytest.approx((8, 10))

    fig = state_memory_chart({"adamw": 2048.0, "sgd": 0.0, "lion": 1024.0}, parameter_bytes=1024.0)
    assert list(fig.data[0].y) == ["sgd", "lion", "adamw"] and list(fig.data[0].x) == [0, 1, 2]  # KiB, smallest first
    assert list(fig.data[0].text) == ["0.0× params", "1.0× params", "2.0× params"]


def test_a_constant_learning_rate_is_drawn_at_its_value_below_a_clear_title() -> None:
    from app.figures import MODEBAR_PX

    frame = pd.DataFrame({"run_id": 1, "step": np.arange(1, 101), "metric": "lr", "value": 3e-4})
    fig = metric_chart(frame, ["lr"], {1: "#1 wsd"}, y_from_zero=True, title="Learning rate")
    low, high = fig.layout.yaxis.range
    assert low == 0 and 3e-4 < high < 4e-4  # the flat stretch near the top, not a line on 0 of a −1…1 axis
    ramp = frame.assign(value=np.linspace(0, 1e-3, 100))
    assert metric_chart(ramp, ["lr"], {1: "#1"}, y_from_zero=True).layout.yaxis.range[1] == pytest.approx(1.08e-3)
    assert metric_chart(frame.iloc[:0], ["lr"], {1: "#1"}, y_from_zero=True).layout.yaxis.range == (0, 1)
    # the title starts below the toolbar's row, inside the top margin
    title = fig.layout.title
    assert (title.yref, title.y, title.yanchor) == ("container", 1, "top") and title.pad.t >= MODEBAR_PX >= 26
    assert fig.layout.margin.t >= title.pad.t + title.font.size + 10
    assert {"zoomIn2d", "zoomOut2d", "select2d", "lasso2d"} <= set(fig.layout.modebar.remove)  # one row when narrow


def test_complete_step_is_where_every_per_step_metric_has_arrived() -> None:
    from app.figures import complete_step

    rows = pd.DataFrame(
        {"run_id": 1, "step": [1, 2, 3, 1, 2, 1, 2, 3, 3],
         "metric": ["loss", "loss", "loss", "lr", "lr", "grad_l2", "grad_l2", "grad_l2", "val_loss"], "value": 1.0}
    )  # fmt: skip
    assert complete_step(rows, ["loss", "grad_l2", "lr"]) == 2  # lr has reached step 2 only
    assert complete_step(rows[rows.metric != "lr"], ["loss", "grad_l2", "lr"], cursor=5) == 5  # no lr yet: stay
    assert complete_step(rows, ["loss", "grad_l2"]) == 3
