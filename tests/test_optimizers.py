"""Every optimizer: the registry's build equals the paper's update computed by hand (numpy, float64) for
20 steps, and its state_dict round trip resumes identically."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from workers.optimizers import OPTIMIZERS

A = np.diag(np.linspace(0.5, 3.0, 6))
B = np.linspace(-1.0, 1.0, 6)
THETA0 = np.linspace(1.0, -0.5, 6)
STEPS = 20


def grad(theta: np.ndarray) -> np.ndarray:
    return A @ theta - B  # gradient of ½θᵀAθ − bᵀθ


def sgd_ref(lr: float, momentum: float, nesterov: bool, weight_decay: float) -> np.ndarray:
    theta, buf = THETA0.copy(), None
    for _ in range(STEPS):
        g = grad(theta) + weight_decay * theta
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + g
            g = g + momentum * buf if nesterov else buf
        theta = theta - lr * g
    return theta


def adam_ref(lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, decoupled: bool) -> np.ndarray:
    theta, m, v = THETA0.copy(), np.zeros(6), np.zeros(6)
    for t in range(1, STEPS + 1):
        g = grad(theta)
        if decoupled:
            theta = theta - lr * weight_decay * theta
        else:
            g = g + weight_decay * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
    return theta


def adagrad_ref(lr: float, eps: float, weight_decay: float, initial_accumulator_value: float) -> np.ndarray:
    theta, acc = THETA0.copy(), np.full(6, initial_accumulator_value)
    for _ in range(STEPS):
        g = grad(theta) + weight_decay * theta
        acc = acc + g * g
        theta = theta - lr * g / (np.sqrt(acc) + eps)
    return theta


def adam_l2(**hyper: float) -> np.ndarray:
    return adam_ref(**hyper, decoupled=False)  # type: ignore[arg-type]


def adamw_ref(**hyper: float) -> np.ndarray:
    return adam_ref(**hyper, decoupled=True)  # type: ignore[arg-type]


REFERENCES: list[tuple[str, dict[str, object], Callable[..., np.ndarray]]] = [
    ("sgd", {"lr": 0.1, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}, sgd_ref),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": False, "weight_decay": 0.01}, sgd_ref),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0}, sgd_ref),
    ("adam", {"lr": 0.05, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1}, adam_l2),
    ("adam", {"lr": 0.05, "beta1": 0.8, "beta2": 0.99, "eps": 1e-3, "weight_decay": 0.0}, adam_l2),
    ("adamw", {"lr": 0.05, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1}, adamw_ref),
    ("adagrad", {"lr": 0.3, "eps": 1e-10, "weight_decay": 0.01, "initial_accumulator_value": 0.1}, adagrad_ref),
]  # fmt: skip


def run_registry(name: str, hyper: dict[str, object], steps: int = STEPS) -> tuple[torch.nn.Parameter, object]:
    theta = torch.nn.Parameter(torch.tensor(THETA0, dtype=torch.float64))
    opt = OPTIMIZERS[name].build([theta], **hyper)
    a, b = torch.tensor(A), torch.tensor(B)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * theta @ a @ theta - b @ theta).backward()
        opt.step()
    return theta, opt


@pytest.mark.parametrize(
    ("name", "hyper", "reference"), REFERENCES, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(REFERENCES)]
)
def test_matches_the_papers_update(name: str, hyper: dict[str, object], reference: Callable[..., np.ndarray]) -> None:
    theta, _ = run_registry(name, hyper)
    expected = reference(**hyper)
    np.testing.assert_allclose(theta.detach().numpy(), expected, rtol=0, atol=1e-6)
    assert not np.allclose(expected, THETA0)  # the reference moved: the comparison means something


def test_every_optimizer_has_a_reference() -> None:
    assert {name for name, _, _ in REFERENCES} == set(OPTIMIZERS)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_round_trip_resumes_identically(name: str) -> None:
    hyper = OPTIMIZERS[name].defaults
    theta, opt = run_registry(name, hyper, steps=10)
    straight, _ = run_registry(name, hyper, steps=20)

    resumed = torch.nn.Parameter(theta.detach().clone())
    opt2 = OPTIMIZERS[name].build([resumed], **hyper)
    opt2.load_state_dict(opt.state_dict())  # type: ignore[attr-defined]
    a, b = torch.tensor(A), torch.tensor(B)
    for _ in range(10):
        opt2.zero_grad()
        (0.5 * resumed @ a @ resumed - b @ resumed).backward()
        opt2.step()
    assert torch.equal(resumed, straight)
