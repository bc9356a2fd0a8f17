"""The Playground's engine and lessons: trajectories against updates computed by hand, the landscapes' hand-written
gradients against autograd, the Step Law's published points, and lessons through the URL."""

from __future__ import annotations

import base64
import math

import numpy as np
import pytest
import torch

from app.lessons import LESSONS, decode, encode
from models.landscapes import LANDSCAPES
from workers.playground import PLAYGROUND_OPTIMIZERS, PLAYGROUND_SCHEDULES, internals, trajectory

KAPPA, START, LR = 4.0, (-4.5, 1.5), 0.1
QUADRATIC = LANDSCAPES["quadratic"].build(condition_number=KAPPA)


def grad(p: np.ndarray) -> np.ndarray:
    return np.array([p[0] / KAPPA, p[1]])  # ∇ ½(x²/κ + y²)


@pytest.mark.parametrize("name", list(PLAYGROUND_OPTIMIZERS))
def test_every_optimizer_steps_as_its_own_step_method_does(name: str) -> None:
    """The Playground calls each optimizer's step body without torch's per-call wrapper; the path must be the one
    plain `optimizer.step()` calls give, gradient by autograd, for every optimizer it offers."""
    entry = PLAYGROUND_OPTIMIZERS[name]
    hyper = {**entry.defaults, "lr": 0.01}
    point = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    opt = entry.build([point], **hyper)
    expected = [START]
    for _ in range(20):
        opt.zero_grad()
        QUADRATIC(point).backward(create_graph=bool(entry.extra.get("create_graph")))
        opt.step()
        expected.append(tuple(point.tolist()))
    run = trajectory(QUADRATIC, {"name": name, "lr": 0.01}, steps=20, start=START)
    np.testing.assert_allclose(run.points, np.array(expected), rtol=1e-9, atol=1e-12)


def test_sgd_three_steps_by_hand() -> None:
    p, expected = np.array(START), [np.array(START)]
    for _ in range(3):
        p = p - LR * grad(p)
        expected.append(p)
    run = trajectory(QUADRATIC, {"name": "sgd", "lr": LR, "momentum": 0.0}, steps=3)
    np.testing.assert_allclose(run.points, expected, rtol=1e-12)
    assert run.loss[0] == pytest.approx(0.5 * (4.5**2 / KAPPA + 1.5**2))


def test_heavy_ball_momentum_three_steps_by_hand() -> None:
    p, buf, expected = np.array(START), np.zeros(2), [np.array(START)]
    for _ in range(3):
        buf = 0.9 * buf + grad(p)  # PyTorch's form: b ← μb + g, θ ← θ − ηb
        p = p - LR * buf
        expected.append(p)
    run = trajectory(QUADRATIC, {"name": "sgd", "lr": LR, "momentum": 0.9}, steps=3)
    np.testing.assert_allclose(run.points, expected, rtol=1e-12)
    np.testing.assert_allclose(run.state["momentum_buffer"][-1], buf, rtol=1e-12)


def test_adam_three_steps_by_hand() -> None:
    b1, b2, eps = 0.9, 0.999, 1e-8
    p, m, v, expected = np.array(START), np.zeros(2), np.zeros(2), [np.array(START)]
    for t in range(1, 4):
        g = grad(p)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        p = p - LR * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        expected.append(p)
    run = trajectory(QUADRATIC, {"name": "adam", "lr": LR, "beta1": b1, "beta2": b2, "eps": eps}, steps=3)
    np.testing.assert_allclose(run.points, expected, rtol=1e-10)
    np.testing.assert_allclose(run.state["exp_avg_sq"][-1], v, rtol=1e-10)
    # Adam's first step has length η in each coordinate, whatever the gradient's size
    np.testing.assert_allclose(np.abs(run.updates[0]), [LR, LR], rtol=1e-6)


def test_internals_show_the_sign_update_of_lion_and_the_effective_step() -> None:
    run = trajectory(QUADRATIC, {"name": "lion", "lr": 0.01, "weight_decay": 0.0}, steps=5)
    shown = internals(run, 3)
    assert shown["update / LR"] == pytest.approx((1.0, -1.0))  # start (−4.5, 1.5): x rises, y falls
    sgd = trajectory(QUADRATIC, {"name": "sgd", "lr": LR, "momentum": 0.0}, steps=2)
    assert internals(sgd, 1)["effective step Δθ/(−g)"] == pytest.approx((LR, LR))


@pytest.mark.parametrize("name", list(LANDSCAPES))
def test_hand_written_gradients_equal_autograd(name: str) -> None:
    land = LANDSCAPES[name].build(**LANDSCAPES[name].defaults)
    rng = np.random.default_rng(0)
    for x, y in rng.uniform(-2, 2, size=(10, 2)):
        point = torch.tensor([x, y], dtype=torch.float64, requires_grad=True)
        land(point).backward()
        assert land.grad(float(x), float(y)) == pytest.approx(point.grad.tolist(), rel=1e-9, abs=1e-12)


def test_noise_warmup_and_divergence() -> None:
    calm = trajectory(QUADRATIC, {"name": "sgd", "lr": LR}, steps=50)
    noisy = trajectory(QUADRATIC, {"name": "sgd", "lr": LR}, steps=50, noise=1.0, seed=1)
    batched = trajectory(QUADRATIC, {"name": "sgd", "lr": LR}, steps=50, noise=1.0, batch=100, seed=1)
    assert np.abs(noisy.grads - calm.grads).mean() > 5 * np.abs(batched.grads - calm.grads).mean()  # σ/√B
    warm = trajectory(QUADRATIC, {"name": "sgd", "lr": LR}, steps=10, warmup=4)
    assert list(warm.lr[:5]) == pytest.approx([LR / 4, LR / 2, 3 * LR / 4, LR, LR])
    wild = trajectory(QUADRATIC, {"name": "sgd", "lr": 1e3}, steps=500)
    assert wild.diverged_at is not None and len(wild.points) == wild.diverged_at + 1


def test_every_playground_entry_runs_on_every_landscape() -> None:
    for land_name, land_entry in LANDSCAPES.items():
        land = land_entry.build(**land_entry.defaults)
        for name, entry in PLAYGROUND_OPTIMIZERS.items():
            run = trajectory(land, {"name": name, **entry.defaults, "lr": 1e-3}, steps=5)
            assert run.points.shape == (6, 2), (land_name, name)
    assert "hypergradient" not in PLAYGROUND_SCHEDULES and "muon" not in PLAYGROUND_OPTIMIZERS


def test_lessons_round_trip_through_the_url() -> None:
    for lesson in LESSONS.values():
        assert decode(encode(lesson.setup)) == lesson.setup
        assert all(key.startswith("pg.") for key in lesson.open)
    with pytest.raises(ValueError, match="not a Playground setup"):
        decode("bm90IGpzb24")  # "not json"
    with pytest.raises(ValueError, match="pg"):
        decode(base64.urlsafe_b64encode(b'{"x": 1}').decode())  # JSON, but not our controls
    assert math.isfinite(LESSONS["momentum"].setup["pg.land:quadratic:condition_number"])


def test_every_lesson_names_real_controls() -> None:
    """A preset is widget keys; each `pg.<slot>:<entry>:<param>` must name a parameter of that registry entry,
    so renaming a hyper-parameter cannot silently drop it from a lesson."""
    registries = {"pg.land": LANDSCAPES, "pg.sched": PLAYGROUND_SCHEDULES}
    for name, lesson in LESSONS.items():
        for key in [*lesson.setup, *lesson.open]:
            if key.count(":") != 2:
                continue
            slot, entry, param = key.split(":")
            registry = PLAYGROUND_OPTIMIZERS if slot.startswith("pg.opt") else registries[slot]
            assert param in registry[entry].defaults, (name, key)
            if key in lesson.setup and f"{slot}.name" in lesson.setup:
                assert lesson.setup[f"{slot}.name"] == entry, (name, key)


def test_check_names_the_field_by_the_registrys_bounds() -> None:
    from workers.playground import check

    assert check(LANDSCAPES, {"name": "quadratic", "condition_number": 0.0}, "landscape") == [
        "landscape.condition_number: Input should be greater than or equal to 1"
    ]
    assert check(PLAYGROUND_OPTIMIZERS, {"name": "adam", "lr": -1.0}, "optimizer 2") == [
        "optimizer 2.lr: Input should be greater than 0"
    ]
    assert check(PLAYGROUND_OPTIMIZERS, {"name": "adam", "lr": 0.01}, "optimizer 1") == []


def test_a_locked_lessons_note_names_its_own_controls_as_the_page_labels_them() -> None:
    from app.lessons import Lesson, open_controls

    assert open_controls(LESSONS["momentum"]) == ["condition_number (landscape)", "momentum (optimizer 2)", "Step"]
    assert open_controls(LESSONS["warmup"])[0] == "warm-up steps (optimizer 2)"
    every_kind = ("pg.land.name", "pg.sched:cosine:warmup_steps", "pg.opt2.name", "pg.batch0", "pg.noise", "pg.n")
    assert open_controls(Lesson("t", "t", {}, every_kind)) == [
        "Landscape", "warmup_steps (schedule)", "Optimizer 3", "batch (optimizer 1)", "gradient noise σ", "optimizers"
    ]  # fmt: skip
