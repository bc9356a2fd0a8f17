"""Sweep analysis: pure functions of run data, used by the Compare and Sweep pages and tested on their own.

- `ema_smooth`: TensorBoard's debiased exponential moving average (so curves look as they do there);
- `aggregate_grid`: a metric over two spec fields, averaged over the other runs in each cell (seeds), with
  cells where any run diverged marked;
- `fit_power_law`: y = c·x^k by least squares in log–log space (best LR against batch size);
- `time_to_target`: the first step (and samples, seconds) at which a run's metric reaches a target;
- `legend_labels`: run labels made of the spec fields that differ between runs;
- `group_band`: the mean and a ±std or min–max band over a group's curves (seeds);
- `best_per_group`: the best LR (or any field) per optimizer × batch size, by the mean over seeds;
- `swept_fields`, `compare_group`, `heatmap_axes`: which fields a sweep's views start from (seeds folded);
- `axis_example`: example values for a sweep builder axis, fitting its field.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


def ema_smooth(values: Sequence[float] | np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: last ← w·last + (1−w)·y, shown as last / (1 − w^n) (debiased), n = points
    smoothed so far. Non-finite points pass through and do not enter the average; a constant series is kept."""
    y = np.asarray(values, dtype=float)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1], got {weight}")
    finite = np.isfinite(y)
    if not finite.any() or np.all(y[finite] == y[finite][0]):  # TensorBoard leaves a constant series alone
        return y.copy()
    out = y.copy()
    if weight == 1:  # TensorBoard's formula: last stays 0 and is shown undebiased
        out[finite] = 0.0
        return out
    from scipy.signal import lfilter  # here: scipy.signal costs ~1 s to import, and exports never smooth

    # last_n = w·last_{n−1} + (1−w)·y_n over the finite points: a first-order IIR filter, run in C
    last = lfilter([1 - weight], [1, -weight], y[finite])
    out[finite] = last / (1 - weight ** np.arange(1, len(last) + 1))
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


def legend_labels(specs: Mapping[int, Mapping[str, Any]], names: Mapping[int, str]) -> dict[int, str]:
    """A label per run made of the flattened spec fields that differ between the runs (`lr=0.001, seed=1`),
    so a legend says what distinguishes the curves; the run's name when nothing differs."""
    fields = [f for f in varying(specs.values()) if f != "name"]
    if not fields:
        return dict(names)
    return {rid: ", ".join(f"{short_field(f)}={_fmt(spec.get(f))}" for f in fields) for rid, spec in specs.items()}


def short_field(field: str) -> str:
    """`optimizer.lr` → `lr`, `optimizer.name` → `optimizer`, `batch.size` → `batch.size`."""
    head, _, tail = field.partition(".")
    if tail == "name":
        return head
    return tail if head == "optimizer" else field


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def varying(dicts: Iterable[Mapping[str, Any]]) -> list[str]:
    """The keys whose values differ between the dicts (a key missing from some counts as differing)."""
    rows = list(dicts)
    keys: dict[str, None] = {}
    for d in rows:
        keys.update(dict.fromkeys(d))
    return [k for k in keys if len({repr(d.get(k)) for d in rows}) > 1]


@dataclass(frozen=True)
class Band:
    """A group's curve: x, the centre (mean), and the band's lower and upper edges."""

    x: np.ndarray
    centre: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    runs: int


def group_band(curves: Sequence[tuple[np.ndarray, np.ndarray]], band: str = "std", points: int = 2000) -> Band:
    """Mean and a ±std (`band="std"`) or min–max (`"minmax"`) band over curves (seeds of one configuration).

    Curves on the same x (steps) are combined point by point; otherwise (samples seen, wall time) each is
    interpolated onto `points` evenly spaced x over the range that every curve covers. NaNs are skipped.
    """
    if not curves:
        raise ValueError("a band needs at least one curve")
    same_x = all(len(x) == len(curves[0][0]) and np.array_equal(x, curves[0][0]) for x, _ in curves)
    if same_x:
        grid = np.asarray(curves[0][0], dtype=float)
        ys = np.vstack([np.asarray(y, dtype=float) for _, y in curves])
    else:
        lo = max(float(np.min(x)) for x, _ in curves if len(x))
        hi = min(float(np.max(x)) for x, _ in curves if len(x))
        grid = np.linspace(lo, hi, points) if hi > lo else np.array([lo])
        ys = np.vstack([np.interp(grid, np.asarray(x, float), np.asarray(y, float)) for x, y in curves])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        centre = np.nanmean(ys, axis=0)
        if band == "minmax":
            lower, upper = np.nanmin(ys, axis=0), np.nanmax(ys, axis=0)
        elif band == "std":
            spread = np.nanstd(ys, axis=0, ddof=1) if len(curves) > 1 else np.zeros_like(centre)
            lower, upper = centre - spread, centre + spread
        else:
            lower = upper = centre
    return Band(grid, centre, lower, upper, len(curves))


def smoothing_for_batch(batch: int, samples: int, fraction: float = 0.02) -> float:
    """An EMA weight that averages over the same number of samples (`fraction` of the run) at any batch size:
    a run at batch B averages over about B / (1 − w) samples, so w = 1 − B / (fraction · samples), ≥ 0."""
    return max(0.0, 1.0 - batch / max(1.0, fraction * samples))


def curve_spread(curves: Sequence[tuple[np.ndarray, np.ndarray]], points: int = 200) -> float:
    """How far apart curves are at equal x (samples seen): the mean over the x range they share of the standard
    deviation of log10 y across curves (0 = on top of each other; 0.5 = two curves a factor 10 apart). Used to
    score how well an LR scaling rule keeps runs at different batch sizes aligned."""
    usable = [(np.asarray(x, float), np.asarray(y, float)) for x, y in curves if len(x) > 1]
    if len(usable) < 2:
        return math.nan
    lo, hi = max(x.min() for x, _ in usable), min(x.max() for x, _ in usable)
    if hi <= lo:
        return math.nan
    grid = np.linspace(lo, hi, points)
    with np.errstate(all="ignore"):
        logs = np.vstack([np.interp(grid, x, np.log10(np.where(y > 0, y, np.nan))) for x, y in usable])
    if not np.isfinite(logs).all():  # a diverged (non-finite) curve cannot be aligned with anything
        return math.inf
    return float(np.std(logs, axis=0).mean())


@dataclass(frozen=True)
class ScalingRun:
    """One finished run of the scaling-rules experiment, as `scaling_summary` needs it."""

    optimizer: str
    rule: str
    batch: int
    status: str
    final: float  # final train loss (NaN if none)
    curve: tuple[np.ndarray, np.ndarray] | None  # (samples seen, train loss), full resolution


@dataclass(frozen=True)
class ScalingSummary:
    panels: dict[tuple[str, str], dict[int, tuple[np.ndarray, np.ndarray]]]  # (optimizer, rule) → batch → curve
    finals: dict[tuple[str, str], list[tuple[int, float]]]  # (optimizer, rule) → [(batch, final loss)], by batch
    table: list[dict[str, Any]]  # a row per (optimizer, rule): curve spread, final-loss spread, diverged runs


def scaling_summary(runs: Iterable[ScalingRun]) -> ScalingSummary:
    """Which LR scaling rule keeps training aligned across batch sizes, per optimizer: each run's loss against
    samples seen, smoothed over the same number of samples at every batch size (`smoothing_for_batch`), the curve
    spread of each (optimizer, rule) panel (infinite when one of its runs diverged: a diverged curve ends early,
    so the shared range would hide it) and the spread of the final losses."""
    grouped: dict[tuple[str, str], list[ScalingRun]] = {}
    for run in runs:
        grouped.setdefault((run.optimizer, run.rule), []).append(run)
    panels: dict[tuple[str, str], dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    finals: dict[tuple[str, str], list[tuple[int, float]]] = {}
    table = []
    for (optimizer, rule), mine in sorted(grouped.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        panel: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for run in sorted(mine, key=lambda r: r.batch):
            if run.curve is not None:
                x, y = run.curve
                panel[run.batch] = (x, ema_smooth(y, smoothing_for_batch(run.batch, int(x[-1]) if len(x) else 1)))
        panels[optimizer, rule] = panel
        finals[optimizer, rule] = sorted((run.batch, run.final) for run in mine)
        finite = [run.final for run in mine if math.isfinite(run.final)]
        diverged = sum(run.status == "diverged" or not math.isfinite(run.final) for run in mine)
        table.append(
            {
                "optimizer": optimizer,
                "rule": rule,
                "batch sizes": len(mine),
                "curve spread": math.inf if diverged else curve_spread(list(panel.values())),
                "final loss spread (max − min)": max(finite) - min(finite) if finite else math.nan,
                "diverged": diverged,
            }
        )
    return ScalingSummary(panels, finals, table)


def best_per_group(
    summary: pd.DataFrame, by: Sequence[str], choose: str, value: str, higher: bool = False
) -> pd.DataFrame:
    """For each combination of `by` (say optimizer × batch size), the `choose` value (the LR) whose mean `value`
    over seeds is best, with that mean. Runs whose value is missing (diverged, NaN) are left out."""
    means = summary.dropna(subset=[value]).groupby([*by, choose], sort=True)[value].mean().reset_index()
    if means.empty:
        return means
    pick = means.groupby(list(by))[value].idxmax() if higher else means.groupby(list(by))[value].idxmin()
    return means.loc[pick.to_numpy()].reset_index(drop=True)


ANALYSIS_REFRESH_S = 10.0  # at most one full Sweeps-page rerun this often while runs finish (200-run sweeps)


def refresh_due(drawn_with: tuple[int, float], finished: int, done: bool, now: float | None = None) -> bool:
    """Whether a live sweep's analysis, drawn when `drawn_with` = (runs finished, time.monotonic()) held, should be
    drawn again: at once when the sweep is done, else when more runs have finished and it is
    `ANALYSIS_REFRESH_S` old, so the heatmap fills in as runs finish without a full rerun every two seconds."""
    drawn_finished, drawn_at = drawn_with
    now = time.monotonic() if now is None else now
    return done or (finished > drawn_finished and now - drawn_at >= ANALYSIS_REFRESH_S)


DEFAULT_SECONDS_PER_STEP = 0.004  # a small task's step on one CPU core, until a run of the task has finished


DEFAULT_PACK_SPEEDUP = 3.0  # K runs packed take K/3 of their time alone, until a packed run of the task has finished
# (bench/packed.py measured 4.9× for 32 runs on 2 CPU cores; a GPU does better)


def seconds_per_step(runs: Iterable[Any]) -> dict[str, float]:
    """Per task name: the median seconds per step of its completed runs that trained alone (RunInfo-like: status,
    spec, progress, duration, pack_size), the basis of a sweep's estimated duration."""
    samples: dict[str, list[float]] = {}
    for run in runs:
        if run.status == "completed" and run.progress > 0 and run.duration and (getattr(run, "pack_size", 0) or 1) == 1:
            samples.setdefault(run.spec["task"]["name"], []).append(run.duration / run.progress)
    return {task: float(np.median(values)) for task, values in samples.items()}


def seconds_per_member_step(runs: Iterable[Any]) -> dict[str, float]:
    """Per task name: the median seconds per step that each member of a pack cost, from completed packed runs (a
    member's duration is its pack's, shared by `pack_size` runs)."""
    samples: dict[str, list[float]] = {}
    for run in runs:
        size = getattr(run, "pack_size", 0) or 1
        if run.status == "completed" and run.progress > 0 and run.duration and size > 1:
            samples.setdefault(run.spec["task"]["name"], []).append(run.duration / run.progress / size)
    return {task: float(np.median(values)) for task, values in samples.items()}


def estimate_seconds(
    specs: Iterable[Mapping[str, Any]],
    per_step: Mapping[str, float],
    packs: Sequence[Sequence[int]] = (),
    per_member_step: Mapping[str, float] | None = None,
) -> float:
    """Seconds one worker needs for these run specs (dicts with task.name and steps), the runs listed in `packs`
    (indices into the specs) trained in those packs: at the pace packed runs of the task had (`per_member_step`),
    else at the pace alone divided by DEFAULT_PACK_SPEEDUP."""
    specs = list(specs)
    fallback = float(np.median(list(per_step.values()))) if per_step else DEFAULT_SECONDS_PER_STEP
    packed = {i for pack in packs for i in pack}
    total = sum(s["steps"] * per_step.get(s["task"]["name"], fallback) for i, s in enumerate(specs) if i not in packed)
    for pack in packs:
        first = specs[pack[0]]
        task = first["task"]["name"]
        member = (per_member_step or {}).get(task)
        if member is None:
            member = per_step.get(task, fallback) / DEFAULT_PACK_SPEEDUP
        total += first["steps"] * len(pack) * member
    return total


@dataclass(frozen=True)
class RangeSuggestion:
    steepest: float  # the LR where the loss falls fastest per decade
    valley: float  # a tenth of the LR at the lowest loss
    low: float
    high: float
    cut: int  # points used: up to where the loss passed 4× its minimum so far (the blow-up)


def suggest_lr_range(lrs: Sequence[float], losses: Sequence[float], smoothing: float = 0.9) -> RangeSuggestion:
    """From an LR range test (loss against an exponentially growing LR): the steepest-descent LR and a tenth of
    the lowest-loss LR (Smith 2017; fastai's `lr_steep`/`lr_min`), the range between them, after TensorBoard
    smoothing and ignoring what follows the blow-up."""
    lr, loss = np.asarray(lrs, float), ema_smooth(np.asarray(losses, float), smoothing)
    keep = np.isfinite(loss) & (lr > 0)
    lr, loss = lr[keep], loss[keep]
    if len(lr) < 5:
        raise ValueError("a range test needs at least five finite points")
    best = np.minimum.accumulate(loss)
    blown = np.flatnonzero(loss > 4 * best)
    cut = int(blown[0]) if len(blown) else len(loss)
    lr, loss = lr[:cut], loss[:cut]
    slope = np.gradient(loss, np.log10(lr))
    steepest = float(lr[int(np.argmin(slope))])
    valley = float(lr[int(np.argmin(loss))]) / 10
    return RangeSuggestion(steepest, valley, min(steepest, valley), max(steepest, valley), cut)


GAUSSIAN_L1_L2 = math.sqrt(2 / math.pi)  # E‖g‖₁/(√d‖g‖₂) for g with i.i.d. Gaussian coordinates, large d


SEED = "seed"
PREFERRED_FIELDS = ("optimizer.lr", "batch.size", "optimizer.name", "schedule.name", "task.name")


def swept_fields(specs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The flattened spec fields that tell runs apart other than the seed (and the name), the usual suspects
    first (`PREFERRED_FIELDS`), leaving out any field that splits the runs no further than those before it
    (an optimizer's own parameters when `optimizer.name` is swept: `momentum` exists only for SGD)."""
    rows = list(specs)
    fields = [f for f in varying(rows) if f not in ("name", SEED)]
    fields.sort(key=lambda f: PREFERRED_FIELDS.index(f) if f in PREFERRED_FIELDS else len(PREFERRED_FIELDS))
    chosen: list[str] = []
    parts = 1
    for field in fields:
        n = len({tuple(repr(row.get(f)) for f in [*chosen, field]) for row in rows})
        if n > parts:
            chosen.append(field)
            parts = n
    return chosen


def compare_group(specs: Iterable[Mapping[str, Any]]) -> list[str]:
    """What the Compare page groups a sweep's runs by when opened from the sweep: its swept fields other than
    the seed, so seeds fold into one mean curve with a band; none (each run its own curve, raw underneath)
    when that would fold nothing."""
    rows = list(specs)
    fields = swept_fields(rows)
    groups = {tuple(repr(row.get(f)) for f in fields) for row in rows}
    return fields if fields and len(groups) < len(rows) else []


def heatmap_axes(swept: Sequence[str], fields: Sequence[str]) -> tuple[str, str]:
    """The heatmap's default x and y among `fields` (every field that differs): the first two swept fields
    other than the seed (`swept_fields`), so each cell averages its seeds; the seed, then any other field,
    only where fewer than two are swept. Both the same field only when there is a single one."""
    if not fields:
        raise ValueError("a heatmap needs at least one field")
    order = [f for f in swept if f in fields]
    order += [f for f in fields if f == SEED] + [f for f in fields if f not in order and f != SEED]
    return order[0], order[1] if len(order) > 1 else order[0]


AXIS_EXAMPLES = {  # field: (values, range)
    "optimizer.lr": ("0.001, 0.01", "1e-4, 1e-1"),
    "batch.size": ("32, 128", "16, 256"),
    "seed": ("0, 1, 2", "0, 1000"),
    "steps": ("200, 500", "100, 1000"),
}


def axis_example(field: str, kind: str, default: Any = None, choices: Sequence[str] = ()) -> str | None:
    """Example text for a sweep builder axis over `field`: values (`kind` "values", a comma-separated list) or
    a range ("log range"/"linear range": low, high), made from the field's default or choices when it is not
    one of the usual suspects. None for a range over a field that is not a number (a name, a choice, a flag)."""
    values = kind == "values"
    if field in AXIS_EXAMPLES:
        return AXIS_EXAMPLES[field][0 if values else 1]
    if isinstance(default, bool) or choices:
        if not values:
            return None
        return "true, false" if isinstance(default, bool) else ", ".join(choices[:2])
    if isinstance(default, int):
        if values:
            return f"{default}, {2 * default}" if default else "0, 1"
        return f"{max(1, default // 2)}, {2 * default}" if default > 0 else "0, 10"
    if isinstance(default, float) and math.isfinite(default) and default > 0:
        return f"{default:g}, {default * 10:g}" if values else f"{default / 10:g}, {default * 10:g}"
    return "0, 0.1" if values else "0, 1"


@dataclass(frozen=True)
class QueueSpot:
    position: int  # 1 = next to start in its queue
    queue: str
    starts_in: float | None  # seconds, estimated; None when no live worker takes this queue


def queue_estimates(
    orders: Mapping[str, Sequence[int]],
    workers: Sequence[tuple[str, float]],
    typical_seconds: float,
) -> dict[int, QueueSpot]:
    """Each queued run's place in its queue and when it should start.

    `orders` is each queue's fair-share order (Store.dispatch_order); `workers` lists the live workers that take
    runs as (kind, seconds until their current run ends: 0 when idle). A `cuda` worker takes the `cuda` and
    `auto` queues, a `cpu` worker `cpu` and `auto`. Each run is handed to whichever able worker is free first and
    then holds it for `typical_seconds` (the median length of recent runs). Queues are simulated one after
    another, `cpu` and `cuda` before `auto`, a rough but honest estimate: the page says "about".
    """
    free = [(kind, max(0.0, left)) for kind, left in workers]
    spots: dict[int, QueueSpot] = {}
    for queue in ("cuda", "cpu", "auto"):
        able = [i for i, (kind, _) in enumerate(free) if queue == "auto" or kind == queue]
        for position, run_id in enumerate(orders.get(queue, ()), start=1):
            if not able:
                spots[run_id] = QueueSpot(position, queue, None)
                continue
            i = min(able, key=lambda j: free[j][1])
            kind, at = free[i]
            spots[run_id] = QueueSpot(position, queue, at)
            free[i] = (kind, at + typical_seconds)
    return spots
