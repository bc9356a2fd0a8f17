"""Sweep analysis: pure functions of run data, used by the Compare and Sweep pages and tested on their own.

- `ema_smooth`: TensorBoard's debiased exponential moving average (so curves look as they do there);
- `aggregate_grid`: a metric over two spec fields, averaged over the other runs in each cell (seeds), with
  cells where any run diverged marked;
- `fit_power_law`: y = c·x^k by least squares in log–log space (best LR against batch size);
- `time_to_target`: the first step (and samples, seconds) at which a run's metric reaches a target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


def ema_smooth(values: Sequence[float], weight: float) -> np.ndarray:
    """TensorBoard's smoothing: last ← w·last + (1−w)·y, shown as last / (1 − w^n) (debiased), n = points
    smoothed so far. Non-finite points pass through and do not enter the average; a constant series is kept."""
    y = np.asarray(values, dtype=float)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1], got {weight}")
    finite = np.isfinite(y)
    if not finite.any() or np.all(y[finite] == y[finite][0]):  # TensorBoard leaves a constant series alone
        return y.copy()
    out = np.empty_like(y)
    last, count = 0.0, 0
    for i, value in enumerate(y):
        if not finite[i]:
            out[i] = value
            continue
        last = last * weight + (1 - weight) * value
        count += 1
        out[i] = last / (1 - weight**count) if weight != 1 else last
    return out


def aggregate_grid(summary: pd.DataFrame, x: str, y: str, value: str) -> pd.DataFrame:
    """Long table → one row per (x, y) cell: mean, std and count of `value` over the cell's runs, and whether
    any of them diverged (`summary` needs a `status` column)."""
    grouped = summary.groupby([x, y], sort=True)
    cells = grouped[value].agg(["mean", "std", "count"]).reset_index()
    diverged = grouped["status"].agg(lambda s: bool((s == "diverged").any())).reset_index(name="diverged")
    return cells.merge(diverged, on=[x, y])


@dataclass(frozen=True)
class PowerLaw:
    coefficient: float
    exponent: float

    def __call__(self, x: float) -> float:
        return self.coefficient * x**self.exponent


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> PowerLaw:
    """Least squares of log y = log c + k·log x over the positive, finite points (needs two distinct x)."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = (xs > 0) & (ys > 0) & np.isfinite(xs) & np.isfinite(ys)
    if len(set(xs[keep])) < 2:
        raise ValueError("a power law needs at least two distinct positive x values")
    k, log_c = np.polyfit(np.log(xs[keep]), np.log(ys[keep]), 1)
    return PowerLaw(coefficient=math.exp(log_c), exponent=float(k))


@dataclass(frozen=True)
class TimeToTarget:
    step: int | None
    samples: float | None
    seconds: float | None


def time_to_target(curve: pd.DataFrame, metric: str, target: float, lower_is_better: bool = True) -> TimeToTarget:
    """`curve`: one run's long rows (step, metric, value). The first step where `metric` reaches `target`, with
    the samples seen and wall time at that step; None everywhere if it never does."""
    series = curve[curve["metric"] == metric].sort_values("step")
    reached = series[series["value"] <= target] if lower_is_better else series[series["value"] >= target]
    if reached.empty:
        return TimeToTarget(None, None, None)
    step = int(reached["step"].iloc[0])

    def at(name: str) -> float | None:
        rows = curve[(curve["metric"] == name) & (curve["step"] == step)]["value"]
        return float(rows.iloc[0]) if len(rows) else None

    return TimeToTarget(step, at("samples_seen"), at("wall_time"))
