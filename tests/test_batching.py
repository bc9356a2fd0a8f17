"""Batch-size policies: sizes by hand, LR scaling rules, and the sampling tests on per-sample gradients whose
variance is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workers.batching import (
    Adaptive,
    LinearRamp,
    StepRamp,
    inner_product_test,
    lr_factor,
    norm_test,
    orthogonality_test,
    per_sample_grads,
)  # fmt: skip
from workers.spec import parse_spec
from workers.training import ListSink, run

A = math.sqrt(3) / 2  # ±A in a balanced column has mean 0 and unbiased variance 4A²/3 = 1 over 4 rows
SIGNS = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)


def designed(mu: torch.Tensor, sigma: float) -> torch.Tensor:
    """4 per-sample gradients g_i = μ + σ·s_i·A·1: mean exactly μ, per-coordinate unbiased variance exactly σ²."""
    return mu[None, :] + sigma * A * SIGNS[:, None] * torch.ones_like(mu)[None, :]


MU = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0], dtype=torch.float64)


def test_norm_test_on_known_variance() -> None:
    sigma, eta = 2.0, 0.5
    v, g2 = 5 * sigma**2, float(MU @ MU)  # V = d σ², ‖ḡ‖² = ‖μ‖²
    result = norm_test(designed(MU, sigma), batch_size=8, eta=eta)
    assert result.size == math.ceil(v / (eta**2 * g2))
    assert result.ratio == pytest.approx(v / (eta**2 * g2) / 8)


def test_inner_product_and_orthogonality_tests_on_known_variance() -> None:
    sigma, theta, nu = 0.5, 0.5, 1.0
    grads = designed(MU, sigma)
    g2, total = float(MU @ MU), float(MU.sum())
    s = sigma**2 * total**2  # Var_i ⟨g_i, μ⟩ = σ² (Σμ)² for this design
    assert inner_product_test(grads, 4, theta).size == math.ceil(s / (theta**2 * g2**2))
    ones = torch.ones_like(MU)
    o = sigma**2 * float(((ones - total / g2 * MU) ** 2).sum())  # the orthogonal part's summed variance
    result = orthogonality_test(grads, 4, nu)
    assert result.size == math.ceil(o / (nu**2 * g2)) and result.ratio == pytest.approx(o / (nu**2 * g2) / 4)


def test_norm_test_on_gaussian_gradients_estimates_d_sigma_squared() -> None:
    gen = torch.Generator().manual_seed(0)
    d, n, sigma = 50, 4000, 3.0
    mu = torch.ones(d, dtype=torch.float64)
    grads = mu + sigma * torch.randn(n, d, generator=gen, dtype=torch.float64)
    expected = d * sigma**2 / (0.1**2 * d)  # V/(η²‖μ‖²) = dσ²/(η² d) = 900
    assert norm_test(grads, 64, eta=0.1).size == pytest.approx(expected, rel=0.05)


def test_noiseless_gradients_need_no_bigger_batch() -> None:
    grads = MU.repeat(6, 1)
    assert norm_test(grads, 8, 0.1).size == 1 and norm_test(grads, 8, 0.1).ratio == 0


def test_per_sample_grads_equal_one_backward_per_example() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 1, 0, 1])
    fast = per_sample_grads(model, torch.nn.functional.cross_entropy, x, y)
    for i in range(5):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        slow = torch.cat([p.grad.reshape(-1) for p in model.parameters()])  # type: ignore[union-attr]
        assert torch.allclose(fast[i], slow, atol=1e-6)


def test_ramps_by_hand() -> None:
    step = StepRamp(size=16, milestones=(0.25, 0.5), factor=2, max_size=48)
    assert [step.size_at(t, 100) for t in (0, 24, 25, 49, 50, 99)] == [16, 16, 32, 32, 48, 48]  # capped at 48
    linear = LinearRamp(size=10, max_size=110)
    assert [linear.size_at(t, 101) for t in (0, 50, 100)] == [10, 60, 110]


def test_lr_scaling_rules() -> None:
    assert lr_factor("none", 256, 64) == 1.0
    assert lr_factor("linear", 256, 64) == 4.0
    assert lr_factor("sqrt", 256, 64) == 2.0


def test_adaptive_policy_grows_only_and_is_capped() -> None:
    policy = Adaptive(size=8, max_size=100, eta=0.5, test_interval=5)
    assert policy.wants_test(0) and not policy.wants_test(3)
    policy.observe(designed(MU, 2.0))  # asks for ceil(20/(0.25·14.25)) = 6 < 8: stays
    assert policy.size_at(1, 10) == 8
    policy.observe(designed(MU, 20.0))  # asks for 562: capped
    assert policy.size_at(2, 10) == 100
    policy.observe(MU.repeat(4, 1))  # noiseless: asks for 1, but batches never shrink
    assert policy.size_at(3, 10) == 100


def test_loop_logs_batch_size_test_ratio_and_scaled_lr() -> None:
    s = parse_spec({"task": "digits-mlp", "optimizer": {"name": "sgd", "lr": 0.01}, "steps": 40,
                    "batch": {"name": "step", "size": 16, "milestones": [0.5], "factor": 4, "max_size": 64,
                              "lr_scaling": "linear"}})  # fmt: skip
    sink = ListSink()
    run(s, sink, torch.device("cpu"))
    assert [sink.series("batch_size")[k] for k in (1, 20, 21, 40)] == [16, 16, 64, 64]
    assert sink.series("lr")[20] == pytest.approx(0.01) and sink.series("lr")[21] == pytest.approx(0.04)
    assert sink.series("samples_seen")[40] == 20 * 16 + 20 * 64

    adaptive = parse_spec({"task": "digits-mlp", "optimizer": "adam", "steps": 30,
                           "batch": {"name": "adaptive", "size": 8, "max_size": 256, "test_interval": 10}})  # fmt: skip
    sink = ListSink()
    run(adaptive, sink, torch.device("cpu"))
    ratio = sink.series("batch_test_ratio")
    assert sorted(ratio) == list(range(1, 31)) and all(np.isfinite(list(ratio.values())))
    sizes = [sink.series("batch_size")[k] for k in range(1, 31)]
    assert sizes == sorted(sizes) and sizes[-1] > 8  # a noisy 8-example batch grows


def test_max_size_is_validated() -> None:
    from workers.spec import SpecError

    with pytest.raises(SpecError, match=r"batch\.max_size: 5000 is larger than the 1438"):
        parse_spec({"task": "digits-mlp", "optimizer": "sgd", "batch": {"name": "linear", "max_size": 5000}})
