"""Plotly figure builders: pure functions of data, tested without Streamlit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from workers.metrics import LABELS

PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d", "#ff9da6")


def downsample_minmax(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` points: the first, the last, and each of (max_points − 2) / 2 equal buckets' minimum
    and maximum. Spikes (a divergence, a loss jump) survive, which plain striding would drop.
    """
    n = len(x)
    if n <= max_points or max_points < 4:
        return x, y
    buckets = (max_points - 2) // 2
    edges = np.linspace(0, n, buckets + 1).astype(int)
    finite = np.where(np.isfinite(y), y, np.nan)
    keep = {0, n - 1}
    for lo, hi in pairwise(edges):
        chunk = finite[lo:hi]
        if hi > lo and not np.all(np.isnan(chunk)):
            keep.update((lo + int(np.nanargmin(chunk)), lo + int(np.nanargmax(chunk))))
        elif hi > lo:
            keep.add(lo)  # all NaN/inf: keep one so the gap shows
    index = np.fromiter(sorted(keep), dtype=int)
    return x[index], y[index]


def schedule_preview(
    curves: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    logged: Mapping[str, tuple[Sequence[int], Sequence[float]]] | None = None,
) -> go.Figure:
    """Learning rate against step for one or more schedules; logged LRs of finished runs drawn over them."""
    fig = go.Figure()
    for i, (name, (steps, lrs)) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=list(steps), y=list(lrs), name=name, mode="lines", line={"color": PALETTE[i % 9]}))
    for name, (steps, lrs) in (logged or {}).items():
        fig.add_trace(
            go.Scatter(x=list(steps), y=list(lrs), name=f"{name} (logged)", mode="markers", marker={"size": 4})
        )
    fig.update_layout(
        xaxis_title="step", yaxis_title="learning rate", height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "y": 1.12}, title={"text": "Learning-rate schedule", "font": {"size": 14}},
    )  # fmt: skip
    return fig


def metric_chart(
    frame: pd.DataFrame,
    metrics: Sequence[str],
    labels: Mapping[int, str],
    *,
    log_y: bool = False,
    max_points: int = 2000,
    title: str | None = None,
) -> go.Figure:
    """One line per (run, metric) from long rows (run_id, step, metric, value), downsampled per curve."""
    fig = go.Figure()
    dashes = ("solid", "dot", "dash")
    run_ids = list(labels)
    for r, run_id in enumerate(run_ids):
        rows = frame[frame["run_id"] == run_id]
        for m, metric in enumerate(metrics):
            series = rows[rows["metric"] == metric]
            if series.empty:
                continue
            x, y = downsample_minmax(series["step"].to_numpy(), series["value"].to_numpy(), max_points)
            name = labels[run_id] if len(metrics) == 1 else f"{labels[run_id]} · {LABELS.get(metric, metric)}"
            fig.add_trace(
                go.Scatter(
                    x=x, y=y, name=name, mode="lines+markers" if metric.startswith("val_") else "lines",
                    line={"color": PALETTE[r % len(PALETTE)], "dash": dashes[m % len(dashes)]},
                )
            )  # fmt: skip
    fig.update_layout(
        title={"text": title or " / ".join(LABELS.get(m, m) for m in metrics), "font": {"size": 14}},
        xaxis_title="step", height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.25}, uirevision="keep",  # zoom survives live refreshes
    )  # fmt: skip
    if log_y:
        fig.update_yaxes(type="log")
    return fig
