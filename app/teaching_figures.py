"""Figure builders of the teaching pages (Playground, Laws): pure functions of data, tested without Streamlit."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import contourpy
import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from app.figures import PALETTE


def typed_array(values: Any) -> dict[str, str]:
    """plotly.js's typed-array spec (float32, base64): coordinates in a quarter of the JSON text that decimal lists
    take. The Playground's figures are plain JSON (see PlainFigure), so plotly does not encode them itself."""
    return {"dtype": "f4", "bdata": base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")}


def contour_lines(xs: np.ndarray, ys: np.ndarray, z: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Iso-lines of `z` at `levels` evenly spaced values, as one polyline with NaN gaps (contourpy). Drawn as a
    single scatter trace, the browser paints one SVG path instead of re-running plotly.js's contour tracing on
    every redraw."""
    gen = contourpy.contour_generator(xs, ys, z, line_type=contourpy.LineType.ChunkCombinedNan)
    finite = z[np.isfinite(z)]
    if finite.size == 0 or finite.min() == finite.max():  # nothing to trace: no level separates two values
        return np.empty(0), np.empty(0)
    pieces = [
        chunk
        for level in np.linspace(finite.min(), finite.max(), levels + 2)[1:-1]
        for chunk in gen.lines(level)[0]
        if chunk is not None
    ]
    if not pieces:
        return np.empty(0), np.empty(0)
    gap = np.full((1, 2), np.nan)
    points = np.concatenate([p for piece in pieces for p in (piece, gap)])
    return points[:, 0], points[:, 1]


class PlainFigure(go.Figure):
    """A figure written as plotly JSON (`data`, `layout`, `frames`) and serialised as is. Built through plotly's
    graph objects, every attribute is validated each time: ~22 ms for each of the Playground's two figures, on every
    slider move. The tests validate these specs once instead (`go.Figure(fig.to_dict())`). Only `to_dict`,
    `to_plotly_json` and `to_json` see the spec; `fig.data` and `fig.layout` stay empty."""

    def __init__(
        self, data: list[dict[str, Any]], layout: dict[str, Any], frames: Sequence[dict[str, Any]] = ()
    ) -> None:
        super().__init__()
        object.__setattr__(self, "_spec", {"data": data, "layout": layout, "frames": list(frames)})

    def to_dict(self) -> dict[str, Any]:
        spec = self._spec  # type: ignore[attr-defined]
        layout = {"template": _default_template(), **spec["layout"]}  # as go.Figure fills it in (Streamlit's theme)
        return {"data": spec["data"], "layout": layout, "frames": spec["frames"]}

    def to_plotly_json(self) -> dict[str, Any]:
        return self.to_dict()


def _default_template() -> dict[str, Any]:
    """The current default template (Streamlit sets its own) as JSON: what go.Figure would put in `layout`."""
    import plotly.io as pio

    return _template_json(pio.templates.default)


@lru_cache
def _template_json(name: str | None) -> dict[str, Any]:
    import plotly.io as pio

    return pio.templates[name].to_plotly_json() if name else {}


def landscape_figure(landscape: Any, runs: Mapping[str, Any], step: int, frames: int = 25) -> PlainFigure:
    """Contours of a 2-D landscape with each optimizer's trajectory (`runs`: label → playground Trajectory) up to
    `step`, a marker at `step`, and a ▶ animation over the whole run (plotly frames, played in the browser)."""
    cx, cy = landscape_contours(landscape)
    contour: dict[str, Any] = {
        "type": "scatter", "x": typed_array(cx), "y": typed_array(cy), "mode": "lines", "hoverinfo": "skip",
        "line": {"color": "rgba(90, 90, 90, 0.45)", "width": 1}, "showlegend": False, "name": "landscape",
    }  # fmt: skip
    colors = list(PALETTE)
    paths: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "x": typed_array(run.points[: min(step, len(run.points) - 1) + 1, 0]),
            "y": typed_array(run.points[: min(step, len(run.points) - 1) + 1, 1]),
            "mode": "lines",  # a marker per step costs the browser ~0.4 s per redraw
            "name": label,
            "line": {"color": colors[i % len(colors)], "width": 2},
        }
        for i, (label, run) in enumerate(runs.items())
    ]
    markers: list[dict[str, Any]] = []
    for i, run in enumerate(runs.values()):
        x, y = run.points[min(step, len(run.points) - 1)]
        ring = {"color": colors[i % len(colors)], "size": 12, "line": {"color": "white", "width": 2}}
        markers.append({"type": "scatter", "x": [float(x)], "y": [float(y)], "mode": "markers",
                        "showlegend": False, "hoverinfo": "skip", "marker": ring})  # fmt: skip
    data = [contour, *paths, *markers]
    moving = list(range(1, 1 + 2 * len(runs)))  # frames redraw the paths and markers, never the contours
    if landscape.minimum is not None:
        data.append({
            "type": "scatter", "x": [float(landscape.minimum[0])], "y": [float(landscape.minimum[1])],
            "mode": "markers", "name": "minimum",
            "marker": {"symbol": "star", "size": 14, "color": "gold", "line": {"width": 1}},
        })  # fmt: skip
    longest = max((len(run.points) - 1 for run in runs.values()), default=0)
    ticks = sorted({round(longest * k / frames) for k in range(frames + 1)})

    def frame(t: int) -> dict[str, Any]:
        trails: list[dict[str, Any]] = []
        for run in runs.values():
            pts = run.points[: min(t, len(run.points) - 1) + 1]
            if t < ticks[-1]:  # ≤ 60 points while it plays, ending exactly at step t; the last frame in full
                pts = pts[np.unique(np.linspace(0, len(pts) - 1, 60).round().astype(int))]
            trails.append({"type": "scatter", "x": typed_array(pts[:, 0]), "y": typed_array(pts[:, 1])})
        for run in runs.values():
            x, y = run.points[min(t, len(run.points) - 1)]
            trails.append({"type": "scatter", "x": [float(x)], "y": [float(y)]})
        return {"name": str(t), "traces": moving, "data": trails}

    play = {
        "label": "▶ play",
        "method": "animate",
        "args": [
            None,
            {"frame": {"duration": 60, "redraw": False}, "fromcurrent": False, "transition": {"duration": 0}},
        ],
    }
    layout = {
        "height": 620,
        # fixed margins: no auto-margin relayout pass; the top one holds three rows of legend (four optimizers)
        "margin": {"l": 50, "r": 10, "t": 70, "b": 130, "autoexpand": False},
        "legend": {"orientation": "h", "y": 1.01, "yanchor": "bottom", "x": 0, "xanchor": "left"},
        "xaxis": {"range": list(landscape.x_range), "title": {"text": "x"}},
        "yaxis": {"range": list(landscape.y_range), "title": {"text": "y"}},
        "updatemenus": [
            {
                "type": "buttons",
                "showactive": False,
                "x": 0.0,
                "y": -0.02,
                "xanchor": "left",
                "yanchor": "top",
                "pad": {"t": 42},
                "buttons": [play],
            }
        ],
        "sliders": [
            {
                "active": len(ticks) - 1,
                "y": -0.02,
                "x": 0.12,
                "len": 0.88,
                "currentvalue": {"prefix": "step "},
                "pad": {"t": 30},
                "steps": [
                    {
                        "label": str(t),
                        "method": "animate",
                        "args": [[str(t)], {"mode": "immediate", "frame": {"duration": 0, "redraw": False}}],
                    }
                    for t in ticks
                ],
            }
        ],
    }
    return PlainFigure(data, layout, [frame(t) for t in ticks])


def landscape_contours(landscape: Any) -> tuple[np.ndarray, np.ndarray]:
    """The iso-lines drawn under the trajectories (30 levels of f, or of log10 f for landscapes that span decades),
    traced on a 120 × 120 grid."""
    xs, ys, z = (t.numpy() for t in landscape.grid(120))
    shown = np.log10(z - z.min() + 1e-3) if landscape.log_contours else z
    return contour_lines(xs, ys, shown, levels=30)


def playground_loss_chart(runs: Mapping[str, Any], step: int, x: str = "step") -> PlainFigure:
    """f(θ) against step (or samples, `x="samples"` with each run's `batch`) for each trajectory, log y, with a
    line at `step`."""
    data: list[dict[str, Any]] = []
    for i, (label, run) in enumerate(runs.items()):
        steps = np.arange(len(run.loss))
        loss = np.asarray(run.loss, dtype=float)
        data.append({
            "type": "scatter",
            "x": typed_array(steps * run.batch if x == "samples" else steps),
            "y": typed_array(np.maximum(loss - min(0.0, float(np.nanmin(loss))), 1e-12)),
            "mode": "lines",
            "name": label,
            "line": {"color": PALETTE[i % len(PALETTE)]},
        })  # fmt: skip
    layout = {
        "height": 300,
        "margin": {"l": 70, "r": 10, "t": 30, "b": 45, "autoexpand": False},  # fixed: no auto-margin relayout pass
        "xaxis": {"title": {"text": x}},
        "yaxis": {"title": {"text": "f(θ) (shifted ≥ 0)"}, "type": "log"},
        "showlegend": False,  # the contour plot above names the optimizers, in the same colours
        "shapes": [
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": step,
                "x1": step,
                "y0": 0,
                "y1": 1,
                "line": {"color": "#888", "dash": "dot"},
            }
        ],
    }
    return PlainFigure(data, layout)


def scaling_curves_chart(panels: Mapping[tuple[str, str], Mapping[int, tuple[np.ndarray, np.ndarray]]]) -> go.Figure:
    """Loss against samples seen, one panel per (optimizer, rule) — rows are optimizers, columns rules — and one
    line per batch size, coloured from small (light) to large (dark). A rule that works lays the lines on top
    of each other."""
    optimizers = sorted({opt for opt, _ in panels})
    rules = sorted({rule for _, rule in panels})
    batches = sorted({b for curves in panels.values() for b in curves})
    shades = sample_colorscale("Viridis", [0.85 - 0.8 * i / max(1, len(batches) - 1) for i in range(len(batches))])
    fig = make_subplots(
        rows=max(1, len(optimizers)),
        cols=max(1, len(rules)),
        shared_xaxes=True,
        shared_yaxes=True,
        subplot_titles=[f"{opt}, {rule} rule" for opt in optimizers for rule in rules],
        horizontal_spacing=0.04,
        vertical_spacing=0.08,
    )
    named: set[int] = set()  # one legend entry per batch size
    for (opt, rule), curves in panels.items():
        row, col = optimizers.index(opt) + 1, rules.index(rule) + 1
        for batch, (x, y) in sorted(curves.items()):
            shade = shades[batches.index(batch)]
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines",
                    name=f"B={batch}",
                    legendgroup=str(batch),
                    showlegend=batch not in named,
                    line={"color": shade, "width": 1.5},
                ),
                row=row,
                col=col,
            )
            named.add(batch)
    fig.update_yaxes(type="log")
    fig.update_xaxes(title_text="samples seen", row=len(optimizers))
    fig.update_yaxes(title_text="train loss", col=1)
    fig.update_layout(height=280 * max(1, len(optimizers)) + 60, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def scaling_final_chart(finals: Mapping[tuple[str, str], Sequence[tuple[int, float]]]) -> go.Figure:
    """Final train loss against batch size, a line per (optimizer, rule): solid for the linear rule, dotted for
    the square-root one, a colour per optimizer. Flat lines: the rule keeps training on track."""
    optimizers = list(dict.fromkeys(opt for opt, _ in finals))
    fig = go.Figure()
    for (opt, rule), points in finals.items():
        color = PALETTE[optimizers.index(opt) % len(PALETTE)]
        batches, values = zip(*sorted(points), strict=True) if points else ((), ())
        fig.add_trace(
            go.Scatter(
                x=list(batches),
                y=list(values),
                mode="lines+markers",
                name=f"{opt}, {rule} rule",
                line={"color": color, "dash": "solid" if rule == "linear" else "dot"},
            )
        )
    fig.update_layout(
        xaxis_title="batch size",
        yaxis_title="final train loss (same samples seen)",
        height=380,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
    )
    fig.update_xaxes(type="log")
    return fig


def range_test_chart(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], ranges: Mapping[str, tuple[float, float]]
) -> go.Figure:
    """Loss against LR (log x) for each LR range test (`curves`: label → (lrs, losses)), each with its suggested
    range (`ranges`: label → (low, high)) shaded in the curve's colour."""
    fig = go.Figure()
    for i, (label, (lrs, losses)) in enumerate(curves.items()):
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=lrs, y=losses, mode="lines", name=label, line={"color": color}))
        if label in ranges:
            low, high = ranges[label]
            fig.add_vrect(x0=low, x1=high, fillcolor=color, opacity=0.12, line_width=0)
    fig.update_layout(
        xaxis_title="learning rate",
        yaxis_title="train loss",
        height=420,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "y": -0.2},
    )
    fig.update_xaxes(type="log")
    return fig


def step_law_surface(
    parameters: np.ndarray, tokens: np.ndarray, lrs: np.ndarray, chosen: tuple[float, float]
) -> go.Figure:
    """log10 η* over log10 N × log10 D (`lrs`: rows follow `tokens`), with the chosen (N, D) marked."""
    fig = go.Figure(
        go.Contour(
            x=np.log10(parameters),
            y=np.log10(tokens),
            z=np.log10(lrs),
            colorscale="Viridis",
            colorbar={"title": {"text": "log10 η*"}},
            contours={"showlabels": True},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[math.log10(chosen[0])],
            y=[math.log10(chosen[1])],
            mode="markers",
            name="your model",
            marker={"symbol": "x", "size": 14, "color": "red"},
        )
    )
    fig.update_layout(
        xaxis_title="log10 N", yaxis_title="log10 D", height=420, margin={"l": 10, "r": 10, "t": 30, "b": 10}
    )
    return fig


def state_memory_chart(state_bytes: Mapping[str, float], parameter_bytes: float) -> go.Figure:
    """Optimizer state (KiB) per optimizer as horizontal bars, smallest first, each labelled as a multiple of the
    model's parameter bytes."""
    ordered = sorted(state_bytes.items(), key=lambda kv: kv[1])
    fig = go.Figure(
        go.Bar(
            x=[b / 1024 for _, b in ordered],
            y=[name for name, _ in ordered],
            orientation="h",
            marker={"color": PALETTE[0]},
            text=[f"{b / parameter_bytes:.1f}× params" for _, b in ordered],
        )
    )
    fig.update_layout(xaxis_title="optimizer state (KiB)", height=520, margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return fig
