"""Sweep analysis functions on synthetic data with answers known by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from app.analysis import aggregate_grid, ema_smooth, fit_power_law, time_to_target


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
