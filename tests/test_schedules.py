"""Schedules: golden values by hand and against torch.optim.lr_scheduler, first and last step included."""

from __future__ import annotations

import math

import pytest
import torch

from workers.schedules import SCHEDULES, cosine, curve, step_decay, warmup_cosine


def torch_lrs(make_scheduler, steps: int, lr: float) -> list[float]:  # type: ignore[no-untyped-def]
    """The LR torch's scheduler gives for each of `steps` steps (before each optimizer.step())."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_scheduler(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_constant() -> None:
    assert curve("constant", 5, 0.3, {}) == ([1, 2, 3, 4, 5], [0.3] * 5)


def test_step_matches_torch_steplr() -> None:
    ours = [step_decay(t, 30, 0.1, step_size=7, gamma=0.5) for t in range(30)]
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5), 30, 0.1)
    assert ours == pytest.approx(ref, rel=1e-12)
    assert ours[0] == 0.1 and ours[6] == 0.1 and ours[7] == 0.05 and ours[29] == 0.1 * 0.5**4


def test_cosine_matches_torch_cosineannealing() -> None:
    ours = [cosine(t, 100, 0.2, min_lr=0.01) for t in range(100)]
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=100, eta_min=0.01), 100, 0.2)
    assert ours == pytest.approx(ref, rel=1e-9)
    assert ours[0] == 0.2
    assert ours[50] == pytest.approx(0.105)  # half way: (max + min) / 2
    assert ours[99] == pytest.approx(0.01 + 0.19 * 0.5 * (1 + math.cos(math.pi * 0.99)))


def test_warmup_cosine_golden_values() -> None:
    lrs = [warmup_cosine(t, 110, 1.0, warmup_steps=10, min_lr=0.0) for t in range(110)]
    assert lrs[0] == pytest.approx(0.1)  # first step: lr / warmup_steps, never a wasted zero step
    assert lrs[4] == pytest.approx(0.5)
    assert lrs[9] == pytest.approx(1.0)  # warm-up reaches the peak on its last step
    assert lrs[10] == pytest.approx(1.0)  # cosine starts at the peak
    assert lrs[60] == pytest.approx(0.5)  # half way through the 100 cosine steps
    assert lrs[109] == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))


def test_curve_points_keep_first_and_last() -> None:
    steps, lrs = curve("cosine", 10_000, 1.0, {"min_lr": 0.0}, points=100)
    assert steps[0] == 1 and steps[-1] == 10_000 and len(steps) <= 102
    assert lrs[0] == 1.0 and lrs[-1] == pytest.approx(cosine(9_999, 10_000, 1.0, 0.0))


def test_every_schedule_is_positive_at_its_defaults() -> None:
    for name, entry in SCHEDULES.items():
        _, lrs = curve(name, 300, 0.1, entry.defaults)
        assert all(lr > 0 for lr in lrs[:-1]), name
