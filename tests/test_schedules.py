"""Schedules: golden values by hand and against torch.optim.lr_scheduler, first and last step included."""

from __future__ import annotations

import math

import pytest
import torch

from workers.schedules import (
    SCHEDULES,
    cosine,
    curve,
    cyclic,
    exponential,
    inverse_sqrt,
    multistep,
    one_cycle,
    polynomial,
    step_decay,
    uba,
    warmup_cosine,
    warmup_stable_decay,
)  # fmt: skip


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


def test_multistep_matches_torch_multisteplr() -> None:
    ours = [multistep(t, 100, 0.1, milestones=(0.3, 0.6), gamma=0.5) for t in range(100)]
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[30, 60], gamma=0.5), 100, 0.1)
    assert ours == pytest.approx(ref, rel=1e-12)
    assert ours[0] == 0.1 and ours[29] == 0.1 and ours[30] == 0.05 and ours[99] == 0.025


def test_exponential_matches_torch_exponentiallr() -> None:
    ours = [exponential(t, 50, 0.2, gamma=0.9) for t in range(50)]
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9), 50, 0.2)
    assert ours == pytest.approx(ref, rel=1e-9)
    assert ours[0] == 0.2 and ours[49] == pytest.approx(0.2 * 0.9**49)


def test_one_cycle_matches_torch_onecyclelr() -> None:
    ours = [one_cycle(t, 200, 0.5, pct_start=0.25, div_factor=10.0, final_div_factor=100.0) for t in range(200)]
    ref = torch_lrs(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=0.5, total_steps=200, pct_start=0.25, div_factor=10.0, final_div_factor=100.0,
            cycle_momentum=False,
        ),
        200, 0.5,
    )  # fmt: skip
    assert ours == pytest.approx(ref, rel=1e-9)
    assert ours[0] == pytest.approx(0.05) and ours[-1] == pytest.approx(0.0005) and max(ours) == pytest.approx(0.5)


def test_polynomial_matches_torch_polynomiallr() -> None:
    ours = [polynomial(t, 80, 0.3, power=2.0, min_lr=0.0) for t in range(80)]
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=80, power=2.0), 80, 0.3)
    assert ours == pytest.approx(ref, rel=1e-9)
    assert polynomial(40, 80, 1.0, power=1.0, min_lr=0.2) == pytest.approx(0.6)  # half way, linear, with a floor


@pytest.mark.parametrize("mode", ["triangular", "triangular2"])
def test_cyclic_matches_torch_cycliclr(mode: str) -> None:
    ours = [cyclic(t, 100, 1.0, min_lr=0.1, step_size_up=10, mode=mode) for t in range(100)]
    ref = torch_lrs(
        lambda o: torch.optim.lr_scheduler.CyclicLR(
            o, base_lr=0.1, max_lr=1.0, step_size_up=10, mode=mode, cycle_momentum=False
        ),
        100, 1.0,
    )  # fmt: skip
    assert ours == pytest.approx(ref, rel=1e-9)
    assert ours[0] == pytest.approx(0.1) and ours[10] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("cooldown", "at_half_decay"), [("linear", 0.5), ("cosine", 0.5), ("1-sqrt", 1 - math.sqrt(0.5))]
)
def test_wsd_golden_values(cooldown: str, at_half_decay: float) -> None:
    lrs = [warmup_stable_decay(t, 100, 1.0, decay_fraction=0.2, cooldown=cooldown, min_lr=0.0) for t in range(100)]
    assert lrs[0] == 1.0 and lrs[79] == 1.0 and lrs[80] == 1.0  # stable until the last 20 steps
    assert lrs[90] == pytest.approx(at_half_decay)
    assert lrs[99] < lrs[90] and lrs[99] >= 0


def test_wsd_with_warmup_golden_values() -> None:
    entry = SCHEDULES["wsd"]
    _, lrs = curve("wsd", 110, 1.0, {**entry.defaults, "warmup_steps": 10, "cooldown": "linear"})
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == 1.0 and lrs[10] == 1.0
    assert lrs[-1] == pytest.approx(1 / 20)  # last of 20 linear cool-down steps over the 100 after warm-up


def test_inverse_sqrt_golden_values() -> None:
    lrs = [inverse_sqrt(t, 1000, 1.0, warmup_steps=100) for t in range(1000)]
    assert lrs[0] == pytest.approx(0.01) and lrs[99] == pytest.approx(1.0)
    assert lrs[399] == pytest.approx(0.5) and lrs[999] == pytest.approx(math.sqrt(0.1))


def test_uba_with_phi_two_is_cosine() -> None:
    for t in range(500):
        assert uba(t, 500, 0.3, phi=2.0, min_lr=0.01) == pytest.approx(cosine(t, 500, 0.3, 0.01), abs=1e-12)


def test_uba_phi_shapes_and_the_chebyshev_identity() -> None:
    """φ < 2 stays above cosine, φ > 2 below (ALGORITHMS.md §1); φ = 2κ gives the Chebyshev step sizes."""
    assert uba(250, 500, 1.0, phi=0.5, min_lr=0.0) == pytest.approx(0.8)
    assert uba(250, 500, 1.0, phi=5.0, min_lr=0.0) == pytest.approx(2 / 7)
    hi, lo = 1.0, 0.05
    for t in range(0, 500, 7):
        tau = t / 500
        cheb = 2 * hi * lo / (hi * (1 - math.cos(math.pi * tau)) + lo * (1 + math.cos(math.pi * tau)))
        assert uba(t, 500, hi, phi=2 * hi / lo, min_lr=lo) == pytest.approx(cheb, rel=1e-12)


def test_every_schedule_takes_a_warmup() -> None:
    """A linear warm-up can precede any schedule (hypergradient learns its LR online instead)."""
    for name, entry in SCHEDULES.items():
        assert ("warmup_steps" in entry.defaults) == (name != "hypergradient"), name


def test_any_schedule_can_be_preceded_by_a_warmup() -> None:
    plain = [step_decay(t, 50, 1.0, step_size=10, gamma=0.5) for t in range(50)]
    _, warmed = curve("step", 60, 1.0, {"step_size": 10, "gamma": 0.5, "warmup_steps": 10})
    assert warmed[:10] == pytest.approx([(k + 1) / 10 for k in range(10)])
    assert warmed[10:] == pytest.approx(plain)


def test_milestones_parse_from_text_and_are_validated() -> None:
    from workers.spec import SpecError, parse_spec

    spec = parse_spec(
        {"task": "digits-mlp", "optimizer": "sgd", "schedule": {"name": "multistep", "milestones": "0.4, 0.8"}}
    )
    assert spec.schedule.milestones == (0.4, 0.8)
    with pytest.raises(SpecError, match=r"schedule\.milestones\.1: Input should be less than 1"):
        parse_spec(
            {"task": "digits-mlp", "optimizer": "sgd", "schedule": {"name": "multistep", "milestones": [0.5, 1.5]}}
        )


def test_hypergradient_sgd_matches_baydin_by_hand() -> None:
    """Full-batch SGD on the quadratic task: α_t = α_{t−1} + β g_t·g_{t−1}; θ_t = θ_{t−1} − α_t g_t."""
    import numpy as np

    from models.tasks import TASKS
    from workers.spec import parse_spec
    from workers.training import ListSink, run

    problem = TASKS["quadratic"].build(seed=0, **TASKS["quadratic"].defaults)
    x, y = problem.x_train.double().numpy(), problem.y_train.double().numpy()[:, 0]
    theta = problem.model.weight.detach().double().numpy()[0]
    alpha, beta, previous, lrs, losses = 0.05, 0.01, None, [], []
    for _ in range(30):
        residual = x @ theta - y
        losses.append(0.5 * np.mean(residual**2))
        g = x.T @ residual / len(y)
        if previous is not None:
            alpha = alpha + beta * g @ previous
        lrs.append(alpha)
        theta, previous = theta - alpha * g, g

    spec = parse_spec({"task": "quadratic", "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.0},
                       "schedule": {"name": "hypergradient", "beta": 0.01}, "batch": {"size": 820}, "steps": 30})  # fmt: skip
    sink = ListSink()
    run(spec, sink, torch.device("cpu"))
    assert [sink.series("lr")[k] for k in range(1, 31)] == pytest.approx(lrs, rel=1e-4)  # float32 run, float64 ref
    assert [sink.series("loss")[k] for k in range(1, 31)] == pytest.approx(losses, rel=1e-4)
    assert lrs[-1] > lrs[0]  # successive gradients agree on this problem: the LR grew


@pytest.mark.parametrize("name", [n for n in SCHEDULES if n != "hypergradient"])
def test_logged_lr_equals_the_preview_for_every_schedule(name: str) -> None:
    from workers.spec import parse_spec
    from workers.training import ListSink, run

    params = {**SCHEDULES[name].defaults}
    if "warmup_steps" in params:
        params["warmup_steps"] = min(params["warmup_steps"], 10) or (5 if name != "inverse-sqrt" else 10)
    spec = parse_spec({"task": "moons-mlp", "optimizer": {"name": "sgd", "lr": 0.05}, "steps": 60,
                       "schedule": {"name": name, **params}})  # fmt: skip
    sink = ListSink()
    run(spec, sink, torch.device("cpu"))
    steps, lrs = curve(name, 60, 0.05, {k: v for k, v in params.items()})
    assert [sink.series("lr")[k] for k in steps] == pytest.approx(lrs, rel=1e-12)


def test_range_test_ramps_exponentially_from_start_to_end() -> None:
    from workers.schedules import range_test

    lrs = [range_test(t, 5, 10.0, start_lr=1e-7) for t in range(5)]
    assert lrs == pytest.approx([1e-7, 1e-7 * 1e2, 1e-3, 1e-1, 10.0], rel=1e-9)  # 8 decades in 4 equal steps ×100
