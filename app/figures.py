"""Plotly figure builders: pure functions of data, tested without Streamlit."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

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
    starts = np.unique(np.linspace(0, n, buckets + 1).astype(int)[:-1])
    finite = np.isfinite(y)
    low = np.where(finite, y, np.inf)  # a non-finite point is never a bucket's min or max ...
    high = np.where(finite, y, -np.inf)
    lows, highs = np.minimum.reduceat(low, starts), np.maximum.reduceat(high, starts)
    bucket = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
    keep = np.zeros(n, dtype=bool)
    keep[[0, n - 1]] = True
    for hit in (low == lows[bucket], high == highs[bucket]):
        hit &= finite
        first = np.flatnonzero(hit)
        keep[first[np.r_[True, np.diff(bucket[first]) > 0]]] = True  # the first such point of each bucket
    keep[starts[~np.isfinite(lows)]] = True  # ... but an all-NaN/inf bucket keeps one point, so the gap shows
    return x[keep], y[keep]


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


MODEBAR_PX = 36  # room for plotly's toolbar: a ~26 px row at the top right of the figure (shown on hover), 2 px down
# Its buttons a live line chart does without, so that the rest fit one row above the title of a narrow chart.
MODEBAR_REMOVE = ("zoomIn2d", "zoomOut2d", "autoScale2d", "select2d", "lasso2d")


def metric_chart(
    frame: pd.DataFrame,
    metrics: Sequence[str],
    labels: Mapping[int, str],
    *,
    log_y: bool = False,
    y_from_zero: bool = False,
    max_points: int = 2000,
    title: str | None = None,
) -> go.Figure:
    """One line per (run, metric) from long rows (run_id, step, metric, value), downsampled per curve.

    `y_from_zero` (a linear axis, e.g. the learning rate) spans the y-axis explicitly from 0 to just above the data,
    so a constant series is drawn at its value: plotly's autorange puts one at the middle of a unit-wide axis. The
    title sits below the toolbar, whose buttons (zoom, pan, reset, download) fit one row on a narrow chart, so the
    toolbar never covers the title.
    """
    fig = go.Figure()
    dashes = ("solid", "dot", "dash")
    run_ids = list(labels)
    drawn: list[np.ndarray] = []
    for r, run_id in enumerate(run_ids):
        rows = frame[frame["run_id"] == run_id]
        for m, metric in enumerate(metrics):
            series = rows[rows["metric"] == metric]
            if series.empty:
                continue
            x, y = downsample_minmax(series["step"].to_numpy(), series["value"].to_numpy(), max_points)
            drawn.append(y)
            name = labels[run_id] if len(metrics) == 1 else f"{labels[run_id]} · {LABELS.get(metric, metric)}"
            fig.add_trace(
                go.Scatter(
                    x=x, y=y, name=name, mode="lines+markers" if metric.startswith("val_") else "lines",
                    line={"color": PALETTE[r % len(PALETTE)], "dash": dashes[m % len(dashes)]},
                )
            )  # fmt: skip
    fig.update_layout(
        title={"text": title or " / ".join(LABELS.get(m, m) for m in metrics), "font": {"size": 14},
               "yref": "container", "y": 1, "yanchor": "top", "pad": {"t": MODEBAR_PX}},
        xaxis_title="step", height=340, margin={"l": 10, "r": 10, "t": MODEBAR_PX + 30, "b": 10},
        legend={"orientation": "h", "y": -0.25}, uirevision="keep",  # zoom survives live refreshes
        modebar={"remove": list(MODEBAR_REMOVE)},
    )  # fmt: skip
    if log_y:
        fig.update_yaxes(type="log")
    elif y_from_zero:
        fig.update_yaxes(range=zero_based_range(np.concatenate(drawn) if drawn else np.empty(0)))
    return fig


def zero_based_range(values: np.ndarray, pad: float = 0.08) -> list[float]:
    """A linear axis range from 0 (or the lowest value, if negative) to the highest value (or 0), padded by `pad`
    of the span at the open end(s); [0, 1] when there is nothing finite or everything is 0."""
    finite = values[np.isfinite(values)]
    low, high = (min(0.0, float(finite.min())), max(0.0, float(finite.max()))) if len(finite) else (0.0, 0.0)
    if high == low:
        return [0.0, 1.0]
    span = high - low
    return [low - pad * span if low < 0 else 0.0, high + pad * span if high > 0 else 0.0]


def complete_step(rows: pd.DataFrame, metrics: Sequence[str], cursor: int = 0) -> int:
    """The last step through which one run's `rows` (long rows after `cursor`) hold every one of `metrics`: the
    smallest of their last steps; `cursor` when one of them has no row yet. Charts cut there all end at one step."""
    last = rows[rows["metric"].isin(metrics)].groupby("metric")["step"].max()
    if len(last) < len(set(metrics)):
        return cursor
    return max(cursor, int(last.min()))


@dataclass(frozen=True)
class Curve:
    """One line of the Compare chart: `y` as drawn (smoothed), `raw` drawn faintly under it, and an optional band
    (a group's ±std or min–max over its runs)."""

    label: str
    x: np.ndarray
    y: np.ndarray
    raw: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None


def _visible(x: np.ndarray, x_range: tuple[float, float] | None) -> np.ndarray:
    if x_range is None:
        return np.ones(len(x), dtype=bool)
    return (x >= x_range[0]) & (x <= x_range[1])


def compare_chart(
    curves: Sequence[Curve],
    *,
    x_title: str = "step",
    y_title: str = "",
    log_x: bool = False,
    log_y: bool = False,
    max_points: int = 1000,
    x_range: tuple[float, float] | None = None,
) -> go.Figure:
    """Overlaid curves, each downsampled to `max_points` (min/max per bucket) within `x_range`, so a zoomed view
    shows full detail. Raw curves are faint (and get half the points); bands are one filled polygon per curve."""
    fig = go.Figure()
    palette = PALETTE if len(curves) <= len(PALETTE) else qualitative.Dark24
    for i, curve in enumerate(curves):
        color = palette[i % len(palette)]
        keep = _visible(curve.x, x_range)
        x = curve.x[keep]
        if curve.lower is not None and curve.upper is not None:
            xl, lo = downsample_minmax(x, curve.lower[keep], max_points)
            xu, hi = downsample_minmax(x, curve.upper[keep], max_points)
            fig.add_trace(
                go.Scatter(
                    x=_f32(np.concatenate([xl, xu[::-1]])),
                    y=_f32(np.concatenate([lo, hi[::-1]])),
                    fill="toself",
                    fillcolor=_rgba(color, 0.18),
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=curve.label,
                    name=f"{curve.label} band",
                )
            )
        if curve.raw is not None:
            xr, yr = downsample_minmax(x, curve.raw[keep], max(4, max_points // 2))  # faint context: half the points
            fig.add_trace(
                go.Scatter(
                    x=_f32(xr),
                    y=_f32(yr),
                    mode="lines",
                    line={"color": color, "width": 1},
                    opacity=0.25,
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=curve.label,
                    name=f"{curve.label} raw",
                )
            )
        xs, ys = downsample_minmax(x, curve.y[keep], max_points)
        fig.add_trace(
            go.Scatter(
                x=_f32(xs), y=_f32(ys), mode="lines", name=curve.label, legendgroup=curve.label, line={"color": color}
            )
        )
    fig.update_layout(
        xaxis_title=x_title,
        yaxis_title=y_title,
        height=480,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "v", "x": 1.01, "y": 1},
        uirevision="compare",
        hovermode="closest",
    )
    fig.update_xaxes(type="log" if log_x else "linear")
    fig.update_yaxes(type="log" if log_y else "linear")
    if x_range is not None:
        start, end = float(x_range[0]), float(x_range[1])
        fig.update_xaxes(range=[math.log10(max(start, 1e-12)), math.log10(max(end, 1e-12))] if log_x else [start, end])
    return fig


def _f32(values: np.ndarray) -> np.ndarray:
    """Sent as float32 (plotly encodes numpy arrays as typed arrays): half the bytes, and far below a pixel."""
    return np.asarray(values, dtype=np.float32)


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _category(values: Sequence[object]) -> list[str]:
    """Axis labels for field values, in numeric order when they are numbers."""
    unique = list(dict.fromkeys(values))
    try:
        unique.sort(key=float)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        unique.sort(key=str)
    return [f"{v:.3g}" if isinstance(v, float) else str(v) for v in unique]


def heatmap(cells: pd.DataFrame, x: str, y: str, value_label: str) -> go.Figure:
    """`cells` from `analysis.aggregate_grid`: the mean per (x, y) cell coloured, mean ± std and the run count
    written in it; a cell where any run diverged is grey and says so."""
    xs, ys = _category(cells[x].tolist()), _category(cells[y].tolist())
    z = np.full((len(ys), len(xs)), np.nan)
    text = np.full((len(ys), len(xs)), "", dtype=object)
    diverged = np.zeros((len(ys), len(xs)))
    for cell in cells.to_dict("records"):
        i, j = ys.index(_category([cell[y]])[0]), xs.index(_category([cell[x]])[0])
        n = int(cell["count"])
        if cell["diverged"]:
            text[i, j] = f"✕ diverged<br>({n} run{'s' * (n != 1)})"
            diverged[i, j] = 1
            continue
        z[i, j] = cell["mean"]
        spread = f" ± {cell['std']:.2g}" if n > 1 and math.isfinite(cell["std"]) else ""
        text[i, j] = f"{cell['mean']:.3g}{spread}<br>n={n}"
    fig = go.Figure(
        go.Heatmap(
            x=xs,
            y=ys,
            z=z,
            text=text,
            texttemplate="%{text}",
            colorscale="Viridis_r",
            hoverongaps=False,
            colorbar={"title": {"text": value_label}},
        )
    )
    if diverged.any():
        fig.add_trace(
            go.Heatmap(
                x=xs,
                y=ys,
                z=np.where(diverged == 1, 1.0, np.nan),
                colorscale=[[0, "#bbbbbb"], [1, "#bbbbbb"]],
                showscale=False,
                text=text,
                texttemplate="%{text}",
                hoverinfo="skip",
            )
        )
    fig.update_layout(
        xaxis_title=x,
        yaxis_title=y,
        height=420,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        title={"text": f"{value_label} by {x} × {y}", "font": {"size": 14}},
        xaxis={"type": "category"},
        yaxis={"type": "category"},
    )
    return fig


def best_lr_chart(best: pd.DataFrame, batch: str, lr: str, group: str | None) -> go.Figure:
    """Best LR against batch size per group (optimizer), log–log, with the fitted power law and, anchored at the
    smallest batch, the linear rule (η ∝ B, SGD) and the square-root rule (η ∝ √B, Adam)."""
    from app.analysis import fit_power_law

    fig = go.Figure()
    groups = [(None, best)] if group is None else list(best.groupby(group, sort=True))
    for i, (name, rows) in enumerate(groups):
        color, label = PALETTE[i % len(PALETTE)], "best LR" if name is None else str(name)
        rows = rows.sort_values(batch)
        b, eta = rows[batch].to_numpy(float), rows[lr].to_numpy(float)
        fig.add_trace(go.Scatter(x=b, y=eta, mode="markers", name=label, marker={"color": color, "size": 10}))
        if len(set(b)) < 2:
            continue
        grid = np.geomspace(b.min(), b.max(), 50)
        law = fit_power_law(b, eta)
        fig.add_trace(
            go.Scatter(
                x=grid,
                y=law.coefficient * grid**law.exponent,
                mode="lines",
                name=f"{label}: fit η ∝ B^{law.exponent:.2f}",
                line={"color": color},
            )
        )
        for power, rule, dash in ((1.0, "linear", "dash"), (0.5, "square-root", "dot")):
            fig.add_trace(
                go.Scatter(
                    x=grid,
                    y=eta[0] * (grid / b[0]) ** power,
                    mode="lines",
                    name=f"{label}: {rule} rule",
                    line={"color": color, "dash": dash, "width": 1},
                )
            )
    fig.update_layout(
        xaxis_title=batch,
        yaxis_title=f"best {lr}",
        height=420,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        title={"text": "Best learning rate against batch size", "font": {"size": 14}},
    )
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    return fig


def sensitivity_chart(summary: pd.DataFrame, lr: str, value: str, group: str | None) -> go.Figure:
    """Final metric against LR, one line per group (optimizer), mean ± std over seeds (DeepOBS's plot); LRs at
    which some run diverged are marked ✕ along the top."""
    fig = go.Figure()
    groups = [(None, summary)] if group is None else list(summary.groupby(group, sort=True))
    finite = summary[value][np.isfinite(summary[value].astype(float))]
    top = float(finite.max()) if len(finite) else 1.0
    for i, (name, rows) in enumerate(groups):
        color, label = PALETTE[i % len(PALETTE)], value if name is None else str(name)
        stats = rows.groupby(lr)[value].agg(["mean", "std"]).reset_index().sort_values(lr)
        fig.add_trace(
            go.Scatter(
                x=stats[lr],
                y=stats["mean"],
                error_y={"type": "data", "array": stats["std"]},
                mode="lines+markers",
                name=label,
                line={"color": color},
            )
        )
        bad = rows[rows["status"] == "diverged"][lr].unique()
        if len(bad):
            fig.add_trace(
                go.Scatter(
                    x=bad,
                    y=[top] * len(bad),
                    mode="markers",
                    name=f"{label}: diverged",
                    marker={"symbol": "x", "size": 11, "color": color},
                )
            )
    fig.update_layout(
        xaxis_title=lr,
        yaxis_title=value,
        height=420,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        title={"text": f"Sensitivity: {value} against {lr}", "font": {"size": 14}},
    )
    fig.update_xaxes(type="log")
    return fig


def time_to_target_chart(summary: pd.DataFrame, labels: Mapping[int, str], unit: str = "target_step") -> go.Figure:
    """A bar per run: when it first reached the target (`unit`: target_step, target_samples or target_seconds);
    runs that never did are listed as 'not reached'."""
    rows = summary[["run_id", unit]].copy()
    rows["label"] = [labels.get(int(r), str(r)) for r in rows["run_id"]]
    reached = rows[rows[unit].notna()].sort_values(unit)
    missed = rows[rows[unit].isna()]
    fig = go.Figure(
        go.Bar(
            x=reached[unit].astype(float),
            y=reached["label"],
            orientation="h",
            name="reached",
            marker={"color": PALETTE[0]},
        )
    )
    if len(missed):
        fig.add_trace(
            go.Bar(
                x=[0] * len(missed),
                y=missed["label"],
                orientation="h",
                name="not reached",
                text=["not reached"] * len(missed),
                textposition="outside",
            )
        )
    fig.update_layout(
        xaxis_title=unit.removeprefix("target_"),
        height=max(260, 24 * len(rows) + 80),
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        yaxis={"autorange": "reversed"},
        showlegend=False,
        title={"text": "Time to target", "font": {"size": 14}},
    )
    return fig


def parallel_chart(summary: pd.DataFrame, fields: Sequence[str], value: str) -> go.Figure:
    """Parallel coordinates over the swept fields and the metric, lines coloured by the metric. Positive fields
    spanning more than a decade are shown as log10; text fields as categories."""
    dims = []
    for field in [*fields, value]:
        column = summary[field]
        numeric = pd.to_numeric(column, errors="coerce")
        if numeric.notna().all() and field != value:
            if (numeric > 0).all() and numeric.max() / numeric.min() > 10:
                dims.append({"label": f"log10 {field}", "values": np.log10(numeric)})
            else:
                dims.append({"label": field, "values": numeric})
        elif field == value:
            dims.append({"label": field, "values": numeric})
        else:
            names = _category(column.astype(str).tolist())
            codes = [names.index(str(v)) for v in column.astype(str)]
            dims.append({"label": field, "values": codes, "tickvals": list(range(len(names))), "ticktext": names})
    color = pd.to_numeric(summary[value], errors="coerce")
    fig = go.Figure(
        go.Parcoords(
            dimensions=dims,
            line={"color": color, "colorscale": "Viridis_r", "showscale": True, "colorbar": {"title": {"text": value}}},
        )
    )
    fig.update_layout(height=420, margin={"l": 60, "r": 60, "t": 60, "b": 20})
    return fig
