"""Sweep analysis functions on synthetic data with answers known by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from app.analysis import (
    ScalingRun,
    aggregate_grid,
    axis_example,
    best_per_group,
    compare_group,
    curve_spread,
    ema_smooth,
    estimate_seconds,
    fit_power_law,
    group_band,
    heatmap_axes,
    legend_labels,
    refresh_due,
    scaling_summary,
    seconds_per_member_step,
    seconds_per_step,
    short_field,
    smoothing_for_batch,
    suggest_lr_range,
    swept_fields,
    time_to_target,
)


def test_ema_matches_tensorboards_debiased_formula_by_hand() -> None:
    # w = 0.6: last = 0.4, 1.04, 1.824; debiased by 1 − 0.6^n = 0.4, 0.64, 0.784
    assert ema_smooth([1.0, 2.0, 3.0], 0.6) == pytest.approx([1.0, 1.625, 1.824 / 0.784])


def test_ema_passes_non_finite_points_through_and_skips_them() -> None:
    out = ema_smooth([1.0, math.nan, 3.0], 0.5)
    assert out[0] == 1.0 and math.isnan(out[1])
    assert out[2] == pytest.approx((0.5 * 0.5 * 1.0 + 0.5 * 3.0) / (1 - 0.25))  # the NaN did not count


def test_ema_edge_cases() -> None:
    assert list(ema_smooth([5.0, 5.0, 5.0], 0.9)) == [5.0, 5.0, 5.0]
    assert list(ema_smooth([1.0, 4.0, 2.0], 0.0)) == [1.0, 4.0, 2.0]
    with pytest.raises(ValueError, match="weight"):
        ema_smooth([1.0], 1.5)


def test_aggregate_grid_means_over_seeds_and_marks_divergence() -> None:
    rows = []
    for lr in (0.01, 0.1):
        for bs in (32, 64):
            for seed, noise in ((0, -0.5), (1, 0.5)):
                status = "diverged" if (lr, bs, seed) == (0.1, 64, 1) else "completed"
                rows.append({"lr": lr, "bs": bs, "seed": seed, "final": lr * 100 + bs + noise, "status": status})
    cells = aggregate_grid(pd.DataFrame(rows), "lr", "bs", "final")
    assert len(cells) == 4 and set(cells["count"]) == {2}
    cell = cells[(cells.lr == 0.01) & (cells.bs == 32)].iloc[0]
    assert cell["mean"] == pytest.approx(33.0) and cell["std"] == pytest.approx(math.sqrt(0.5))
    assert list(cells["diverged"]) == [False, False, False, True]


def test_power_law_recovers_a_known_exponent() -> None:
    batch = np.array([16, 32, 64, 128, 256, 512])
    fit = fit_power_law(batch, 0.01 * batch**0.5)
    assert fit.exponent == pytest.approx(0.5) and fit.coefficient == pytest.approx(0.01)
    noisy = 0.003 * batch**1.0 * np.exp(np.random.default_rng(0).normal(0, 0.05, len(batch)))
    assert fit_power_law(batch, noisy).exponent == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ValueError, match="two distinct"):
        fit_power_law([4, 4], [1, 2])


def test_time_to_target_step_samples_and_seconds() -> None:
    steps = range(1, 6)
    loss = [2.0, 1.5, 0.9, 0.7, 0.95]
    curve = pd.DataFrame(
        [{"step": s, "metric": "loss", "value": v} for s, v in zip(steps, loss, strict=True)]
        + [{"step": s, "metric": "samples_seen", "value": 32.0 * s} for s in steps]
        + [{"step": s, "metric": "wall_time", "value": 0.1 * s} for s in steps]
    )
    hit = time_to_target(curve, "loss", 1.0)
    assert (hit.step, hit.samples, hit.seconds) == (3, 96.0, pytest.approx(0.3))
    assert time_to_target(curve, "loss", 0.5).step is None


def test_ema_vectorised_equals_the_loop_on_a_long_noisy_series() -> None:
    rng = np.random.default_rng(1)
    y = rng.standard_normal(5000).cumsum()
    y[[10, 999]] = np.nan
    last, count, expected = 0.0, 0, []
    for v in y:  # TensorBoard's loop, written out
        if not np.isfinite(v):
            expected.append(v)
            continue
        last, count = last * 0.9 + 0.1 * v, count + 1
        expected.append(last / (1 - 0.9**count))
    np.testing.assert_allclose(ema_smooth(y, 0.9), expected, rtol=1e-9, equal_nan=True)


def test_legend_labels_name_only_what_differs() -> None:
    specs = {
        1: {"name": "a", "optimizer.name": "adam", "optimizer.lr": 0.001, "seed": 0, "steps": 100},
        2: {"name": "b", "optimizer.name": "adam", "optimizer.lr": 0.01, "seed": 1, "steps": 100},
    }
    assert legend_labels(specs, {1: "#1 a", 2: "#2 b"}) == {1: "lr=0.001, seed=0", 2: "lr=0.01, seed=1"}
    same = {1: {"name": "a", "seed": 0}, 2: {"name": "b", "seed": 0}}
    assert legend_labels(same, {1: "#1 a", 2: "#2 b"}) == {1: "#1 a", 2: "#2 b"}
    assert short_field("optimizer.name") == "optimizer" and short_field("batch.size") == "batch.size"


def test_group_band_mean_std_and_minmax_by_hand() -> None:
    x = np.arange(1, 4)
    curves = [(x, np.array([1.0, 2.0, 3.0])), (x, np.array([3.0, 2.0, np.nan]))]
    band = group_band(curves, "std")
    assert list(band.centre) == [2.0, 2.0, 3.0] and band.runs == 2
    assert band.upper[0] - band.centre[0] == pytest.approx(math.sqrt(2))  # sample std of (1, 3)
    minmax = group_band(curves, "minmax")
    assert list(minmax.lower[:2]) == [1.0, 2.0] and list(minmax.upper[:2]) == [3.0, 2.0]


def test_group_band_interpolates_when_x_differs() -> None:
    a = (np.array([0.0, 10.0]), np.array([0.0, 10.0]))
    b = (np.array([0.0, 5.0, 20.0]), np.array([2.0, 7.0, 22.0]))  # y = x + 2
    band = group_band([a, b], "none", points=11)
    assert band.x[0] == 0.0 and band.x[-1] == 10.0  # the range both cover
    np.testing.assert_allclose(band.centre, band.x + 1.0)


def test_best_per_group_picks_the_lr_with_the_best_mean_over_seeds() -> None:
    rows = [
        {"opt": "sgd", "bs": 32, "lr": 0.1, "final": 0.5},
        {"opt": "sgd", "bs": 32, "lr": 0.1, "final": 0.9},  # mean 0.7
        {"opt": "sgd", "bs": 32, "lr": 0.3, "final": 0.6},
        {"opt": "sgd", "bs": 32, "lr": 0.3, "final": 0.6},  # mean 0.6: best
        {"opt": "sgd", "bs": 64, "lr": 1.0, "final": math.nan},  # diverged: left out
        {"opt": "sgd", "bs": 64, "lr": 0.3, "final": 0.4},
    ]
    best = best_per_group(pd.DataFrame(rows), ["opt", "bs"], "lr", "final")
    assert best[["bs", "lr"]].values.tolist() == [[32, 0.3], [64, 0.3]]
    accuracy = best_per_group(pd.DataFrame(rows), ["opt", "bs"], "lr", "final", higher=True)
    assert accuracy[["bs", "lr"]].values.tolist() == [[32, 0.1], [64, 0.3]]


def test_duration_estimate_from_finished_runs() -> None:
    class Run:
        def __init__(self, task: str, status: str, progress: int, duration: float) -> None:
            self.spec, self.status, self.progress, self.duration = {"task": {"name": task}}, status, progress, duration

    history = [Run("digits-mlp", "completed", 100, 1.0), Run("digits-mlp", "completed", 100, 3.0),
               Run("digits-mlp", "failed", 100, 99.0), Run("moons-mlp", "completed", 1000, 1.0)]  # fmt: skip
    pace = seconds_per_step(history)
    assert pace == {"digits-mlp": pytest.approx(0.02), "moons-mlp": pytest.approx(0.001)}
    specs = [{"task": {"name": "digits-mlp"}, "steps": 500}, {"task": {"name": "charlm"}, "steps": 100}]
    assert estimate_seconds(specs, pace) == pytest.approx(500 * 0.02 + 100 * 0.0105)  # unknown task: the median


def test_a_packed_sweep_is_estimated_at_the_pace_packs_had() -> None:
    class Run:
        def __init__(self, status: str, progress: int, duration: float, pack_size: int | None) -> None:
            self.spec, self.status, self.progress = {"task": {"name": "digits-mlp"}}, status, progress
            self.duration, self.pack_size = duration, pack_size

    alone, packed = Run("completed", 100, 2.0, None), Run("completed", 100, 2.0, 8)  # the pack: 8 runs in 2 s
    assert seconds_per_step([alone, packed]) == {"digits-mlp": pytest.approx(0.02)}  # the pack's run left out
    assert seconds_per_member_step([alone, packed]) == {"digits-mlp": pytest.approx(2.0 / 100 / 8)}
    specs = [{"task": {"name": "digits-mlp"}, "steps": 500}] * 5
    pace, member = seconds_per_step([alone]), seconds_per_member_step([alone, packed])
    assert estimate_seconds(specs, pace, [[0, 1, 2, 3]], member) == pytest.approx(500 * 4 * 0.0025 + 500 * 0.02)
    guess = estimate_seconds(specs, pace, [[0, 1, 2, 3]], {})  # no packed run finished yet: alone's pace / 3
    assert guess == pytest.approx(500 * 4 * 0.02 / 3 + 500 * 0.02)


def test_lr_range_suggestion_on_a_synthetic_curve() -> None:
    lrs = np.geomspace(1e-7, 10, 400)
    u = np.log10(lrs / 1e-3)
    loss = 2 - np.tanh(u) + 10 ** (2 * (u - 3))  # falls fastest at 1e-3, blows up past ~1
    exact = suggest_lr_range(lrs, loss, smoothing=0.0)
    assert exact.steepest == pytest.approx(1e-3, rel=0.05)
    assert exact.valley == pytest.approx(lrs[np.argmin(loss)] / 10)  # numpy's argmin on the raw curve
    assert exact.low == exact.steepest and exact.high == exact.valley and exact.cut < len(lrs)
    noisy = loss * np.exp(np.random.default_rng(0).normal(0, 0.05, len(lrs)))
    assert suggest_lr_range(lrs, noisy).steepest == pytest.approx(1e-3, rel=1.0)  # within a factor of 2


def test_step_law_at_the_published_points() -> None:
    from workers.scaling import scaled_lr, step_law

    lr, batch = step_law(1e8, 2e9)  # ALGORITHMS.md: η* ≈ 2.5e-3, B* ≈ 1.19e5 tokens
    assert lr == pytest.approx(2.54e-3, rel=0.01) and batch == pytest.approx(1.19e5, rel=0.01)
    lr, batch = step_law(1e9, 1e11)  # η* ≈ 1.6e-3, B* ≈ 1.1e6 tokens
    assert lr == pytest.approx(1.6e-3, rel=0.03) and batch == pytest.approx(1.1e6, rel=0.03)
    assert scaled_lr(0.1, 32, 128, "linear") == pytest.approx(0.4) and scaled_lr(0.1, 32, 128, "sqrt") == 0.2
    with pytest.raises(ValueError):
        step_law(0, 1e9)


def test_scaling_experiment_plan() -> None:
    from workers.scaling import scaling_experiment

    plan = scaling_experiment("moons-mlp", {"sgd": 0.02, "adam": 0.001}, samples=4096, train_size=800)
    assert set(plan) == {"linear", "sqrt"} and len(plan["linear"]) == 2 * 6  # B = 1024 does not fit 800 examples
    by_name = {spec["name"]: spec for spec in plan["sqrt"]}
    b256 = by_name["scaling sqrt adam B=256"]
    assert b256["optimizer"] == {"name": "adam", "lr": pytest.approx(0.001 * 4)} and b256["steps"] == 16
    assert plan["linear"][5]["optimizer"]["lr"] == pytest.approx(0.02 * 512 / 16)  # type: ignore[index]


def test_curve_spread_is_the_mean_std_of_log10_loss_at_equal_samples() -> None:
    x = np.linspace(0, 1000, 50)
    y = np.exp(-x / 300) + 0.1
    assert curve_spread([(x, y), (x, y), (x, y)]) == pytest.approx(0.0)
    assert curve_spread([(x, y), (x, 10 * y)]) == pytest.approx(0.5)  # log10 differs by 1: population std ½
    # on different sample grids, compared on the range both cover (400…1000) after interpolation
    x2 = np.linspace(400, 2000, 30)
    assert curve_spread([(x, y), (x2, 100 * (np.exp(-x2 / 300) + 0.1))]) == pytest.approx(1.0, abs=1e-3)
    assert curve_spread([(x, y), (x, np.where(x > 500, np.nan, y))]) == math.inf  # a diverged curve
    assert math.isnan(curve_spread([(x, y)]))


def test_scaling_summary_scores_each_rule_per_optimizer() -> None:
    x = np.linspace(0, 64_000, 200)
    flat = np.full_like(x, 0.5)  # constant curves: the EMA (debiased) leaves them as they are

    def run(opt: str, rule: str, batch: int, scale: float, status: str = "completed") -> ScalingRun:
        final = math.nan if status == "diverged" else 0.5 * scale
        return ScalingRun(opt, rule, batch, status, final, (x, flat * scale))

    summary = scaling_summary([
        run("sgd", "linear", 64, 1.0), run("sgd", "linear", 16, 1.0),  # aligned
        run("sgd", "sqrt", 16, 1.0), run("sgd", "sqrt", 64, 10.0),  # a factor 10 apart
        run("adam", "sqrt", 16, 1.0), run("adam", "sqrt", 64, 1.0, status="diverged"),
    ])  # fmt: skip
    rows = {(r["optimizer"], r["rule"]): r for r in summary.table}
    assert rows["sgd", "linear"]["curve spread"] == pytest.approx(0.0)
    assert rows["sgd", "sqrt"]["curve spread"] == pytest.approx(0.5)  # log10 differs by 1: population std ½
    assert rows["sgd", "sqrt"]["final loss spread (max − min)"] == pytest.approx(5.0 - 0.5)
    assert rows["adam", "sqrt"]["curve spread"] == math.inf and rows["adam", "sqrt"]["diverged"] == 1
    assert rows["adam", "sqrt"]["final loss spread (max − min)"] == pytest.approx(0.0)  # the finite one only
    assert summary.finals["sgd", "linear"] == [(16, 0.5), (64, 0.5)]  # by batch size
    assert sorted(summary.panels["sgd", "sqrt"]) == [16, 64]
    np.testing.assert_allclose(summary.panels["sgd", "sqrt"][64][1], 5.0)


def test_smoothing_averages_over_the_same_samples_at_every_batch_size() -> None:
    # w = 1 − B / (0.02 · samples): the EMA's window B / (1 − w) = 0.02 · samples, whatever B is
    for batch in (16, 64, 256):
        w = smoothing_for_batch(batch, 64_000)
        assert batch / (1 - w) == pytest.approx(0.02 * 64_000)
    assert smoothing_for_batch(2048, 64_000) == 0.0  # a batch larger than the window: no smoothing


def test_a_live_sweeps_analysis_is_redrawn_as_runs_finish_but_not_every_poll() -> None:
    drawn = (3, 100.0)  # drawn when 3 runs had finished, at t = 100 s
    assert not refresh_due(drawn, 3, done=False, now=200.0)  # nothing new finished
    assert not refresh_due(drawn, 5, done=False, now=105.0)  # new runs, but drawn 5 s ago
    assert refresh_due(drawn, 5, done=False, now=110.0)  # new runs, and 10 s since
    assert refresh_due(drawn, 3, done=True, now=100.5)  # the sweep is done: at once


def _grid(axes: dict[str, tuple]) -> list[dict]:  # type: ignore[type-arg]
    """Flattened specs of a full grid over `axes`, each run with its own name."""
    import itertools

    return [
        {"name": f"r{i}", "task.name": "moons-mlp", **dict(zip(axes, combo, strict=True))}
        for i, combo in enumerate(itertools.product(*axes.values()))
    ]


def test_swept_fields_leave_out_the_seed_the_name_and_what_splits_no_further() -> None:
    specs = _grid({"seed": (0, 1), "batch.size": (32, 128), "optimizer.lr": (0.01, 0.1)})
    assert swept_fields(specs) == ["optimizer.lr", "batch.size"]  # the usual suspects first, whatever the order
    # optimizer.name swept: SGD's momentum and Adam's beta1 exist for one each, so they split nothing further
    two = [{**s, "optimizer.name": n, **({"optimizer.momentum": 0.9} if n == "sgd" else {"optimizer.beta1": 0.9})}
           for s in _grid({"optimizer.lr": (0.01, 0.1), "seed": (0, 1)}) for n in ("sgd", "adam")]  # fmt: skip
    assert swept_fields(two) == ["optimizer.lr", "optimizer.name"]
    assert swept_fields(_grid({"seed": (0, 1, 2)})) == []


def test_a_sweep_opened_in_compare_folds_its_seeds_into_groups() -> None:
    assert compare_group(_grid({"optimizer.lr": (0.01, 0.1), "batch.size": (32, 128), "seed": (0, 1)})) == [
        "optimizer.lr", "batch.size"
    ]  # fmt: skip
    assert compare_group(_grid({"optimizer.lr": (0.01, 0.1), "batch.size": (32, 128)})) == []  # no seeds: nothing folds
    assert compare_group(_grid({"seed": (0, 1)})) == []  # only seeds: each its own curve


def test_the_heatmap_defaults_to_two_swept_fields_other_than_the_seed() -> None:
    fields = ["optimizer.name", "optimizer.lr", "optimizer.momentum", "optimizer.beta1", "seed"]
    assert heatmap_axes(["optimizer.lr", "optimizer.name"], fields) == ("optimizer.lr", "optimizer.name")
    assert heatmap_axes(["optimizer.lr", "batch.size"], ["optimizer.lr", "batch.size", "seed"]) == (
        "optimizer.lr", "batch.size"
    )  # fmt: skip
    assert heatmap_axes(["optimizer.lr"], ["optimizer.lr", "seed"]) == ("optimizer.lr", "seed")  # all there is
    assert heatmap_axes([], ["seed"]) == ("seed", "seed")


def test_an_axis_example_fits_its_field() -> None:
    assert axis_example("optimizer.lr", "values") == "0.001, 0.01"
    assert axis_example("batch.size", "values") == "32, 128"
    assert axis_example("batch.size", "log range") == "16, 256"
    assert axis_example("seed", "values") == "0, 1, 2"
    assert axis_example("optimizer.name", "values", choices=["sgd", "adam", "adamw"]) == "sgd, adam"
    assert axis_example("optimizer.name", "log range", choices=["sgd", "adam"]) is None  # not a number
    assert axis_example("optimizer.nesterov", "values", False) == "true, false"
    assert axis_example("optimizer.nesterov", "linear range", False) is None
    assert axis_example("schedule.warmup_steps", "values", 100) == "100, 200"
    assert axis_example("schedule.warmup_steps", "linear range", 100) == "50, 200"
    assert axis_example("optimizer.weight_decay", "values", 0.01) == "0.01, 0.1"
    assert axis_example("optimizer.weight_decay", "log range", 0.01) == "0.001, 0.1"
    assert axis_example("optimizer.weight_decay", "values", 0.0) == "0, 0.1"


def test_queue_estimates_by_hand() -> None:
    from app.analysis import queue_estimates

    # two CPU workers: one idle, one busy for 30 s more; runs of 100 s; a cuda run with no GPU worker
    spots = queue_estimates({"auto": [11, 12, 13], "cuda": [21]}, [("cpu", 0.0), ("cpu", 30.0)], 100.0)
    assert [(spots[r].position, spots[r].starts_in) for r in (11, 12, 13)] == [(1, 0.0), (2, 30.0), (3, 100.0)]
    assert spots[21].position == 1 and spots[21].queue == "cuda" and spots[21].starts_in is None
    # a cpu run is served before auto runs by the same workers
    spots = queue_estimates({"auto": [1], "cpu": [2]}, [("cpu", 0.0)], 60.0)
    assert spots[2].starts_in == 0.0 and spots[1].starts_in == 60.0
