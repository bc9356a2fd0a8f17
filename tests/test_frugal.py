"""FRUGAL by hand: Adam on the state-full subspace, signSGD (or SGD) on the rest, subspaces refreshed every T."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from tests.test_optimizers import THETA0, adam_ref, signsgd_ref
from workers.custom_optimizers import Frugal
from workers.optimizers import OPTIMIZERS

STEPS = 20


def run_vector(**hyper: object) -> np.ndarray:
    """The tests' quadratic (½θᵀAθ − bᵀθ, A diagonal) on one 6-vector."""
    from tests.test_optimizers import A, B

    theta = torch.nn.Parameter(torch.tensor(THETA0))
    opt = OPTIMIZERS["frugal"].build([theta], **{**OPTIMIZERS["frugal"].defaults, **hyper})
    a, b = torch.tensor(A), torch.tensor(B)
    for _ in range(STEPS):
        opt.zero_grad()
        (0.5 * theta @ a @ theta - b @ theta).backward()
        opt.step()
    return theta.detach().numpy()


def test_density_one_is_adam_and_zero_is_signsgd() -> None:
    adam = adam_ref(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=True)
    np.testing.assert_allclose(run_vector(lr=0.05, density=1.0), adam, atol=1e-6)
    sign = signsgd_ref(lr=0.05, momentum=0.0, weight_decay=0.0)
    np.testing.assert_allclose(run_vector(lr=0.05, density=0.0), sign, atol=1e-6)


def test_blockwise_splits_whole_tensors_and_cycles_at_each_refresh() -> None:
    """Two tensors with separable quadratics; density 0.4 selects the first (4 of 10 coordinates) for T steps,
    then the second, with fresh moments."""
    lr, beta1, beta2, eps, gap = 0.05, 0.9, 0.999, 1e-8, 10
    ca, cb = np.linspace(0.5, 2.0, 4), np.linspace(1.0, 3.0, 6)
    a0, b0 = np.linspace(1.0, -1.0, 4), np.linspace(-0.5, 0.8, 6)

    def adam_steps(x: np.ndarray, c: np.ndarray, n: int) -> np.ndarray:
        m, v = np.zeros_like(x), np.zeros_like(x)
        for t in range(1, n + 1):
            g = c * x - 1.0
            m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
            x = x - lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
        return x

    def sign_steps(x: np.ndarray, c: np.ndarray, n: int) -> np.ndarray:
        for _ in range(n):
            x = x - lr * np.sign(c * x - 1.0)
        return x

    expect_a = sign_steps(adam_steps(a0, ca, gap), ca, gap)  # state-full first, then state-free
    expect_b = adam_steps(sign_steps(b0, cb, gap), cb, gap)

    ta, tb = torch.nn.Parameter(torch.tensor(a0)), torch.nn.Parameter(torch.tensor(b0))
    opt = Frugal([ta, tb], lr=lr, density=0.4, update_gap=gap, projection="blockwise", betas=(beta1, beta2), eps=eps)
    ka, kb = torch.tensor(ca), torch.tensor(cb)
    for _ in range(2 * gap):
        opt.zero_grad()
        ((0.5 * ka * ta * ta).sum() - ta.sum() + (0.5 * kb * tb * tb).sum() - tb.sum()).backward()
        opt.step()
    np.testing.assert_allclose(ta.detach().numpy(), expect_a, atol=1e-6)
    np.testing.assert_allclose(tb.detach().numpy(), expect_b, atol=1e-6)


def test_random_subspace_adam_on_chosen_coordinates_sign_on_the_rest_and_memory_scales() -> None:
    lr, beta1, beta2, eps = 0.05, 0.9, 0.999, 1e-8
    d = 400
    c = np.linspace(0.5, 3.0, d)
    x0 = np.linspace(-1.0, 1.0, d)
    theta = torch.nn.Parameter(torch.tensor(x0))
    opt = Frugal([theta], lr=lr, density=0.25, update_gap=1000, projection="random", betas=(beta1, beta2), eps=eps)
    k = torch.tensor(c)
    for _ in range(STEPS):
        opt.zero_grad()
        ((0.5 * k * theta * theta).sum() - theta.sum()).backward()
        opt.step()
    index = opt.state[theta]["index"].numpy()
    assert 0.18 * d < len(index) < 0.32 * d  # about a quarter of the coordinates carry Adam state
    assert opt.state[theta]["exp_avg"].numel() == len(index)

    chosen = np.zeros(d, dtype=bool)
    chosen[index] = True
    x, m, v = x0.copy(), np.zeros(d), np.zeros(d)
    for t in range(1, STEPS + 1):
        g = c * x - 1.0
        m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
        adam = (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
        x = x - lr * np.where(chosen, adam, np.sign(g))
    np.testing.assert_allclose(theta.detach().numpy(), x, atol=1e-6)


def test_state_dict_round_trip_resumes_identically() -> None:
    def train(opt: Frugal, theta: torch.Tensor, steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad()
            (theta**2).sum().backward()
            opt.step()

    straight = torch.nn.Parameter(torch.tensor(THETA0))
    train(Frugal([straight], lr=0.05, density=1.0, update_gap=100), straight, 20)
    first = torch.nn.Parameter(torch.tensor(THETA0))
    opt = Frugal([first], lr=0.05, density=1.0, update_gap=100)
    train(opt, first, 10)
    resumed = torch.nn.Parameter(first.detach().clone())
    opt2 = Frugal([resumed], lr=0.05, density=1.0, update_gap=100)
    opt2.load_state_dict(opt.state_dict())
    train(opt2, resumed, 10)
    assert torch.equal(resumed, straight)


def test_density_one_stays_adam_across_subspace_refreshes() -> None:
    """ρ = 1 is Adam for any run length: with T = 3, the 20 steps cross six refreshes, none may reset a moment."""
    adam = adam_ref(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=True)
    for projection in ("blockwise", "random"):
        got = run_vector(lr=0.05, density=1.0, update_gap=3, projection=projection)
        np.testing.assert_allclose(got, adam, atol=1e-6, err_msg=projection)


def test_blockwise_refresh_keeps_the_moments_of_tensors_that_stay() -> None:
    """Three 4-vectors, density 0.6 (two tensors' worth): the subspaces are {0, 1}, {2, 0}, {1, 2}. Tensor 0 stays
    across the first refresh and keeps its moments and step count; tensor 1 leaves and comes back fresh."""
    lr, beta1, beta2, eps, gap = 0.05, 0.9, 0.999, 1e-8, 4
    curv = [np.linspace(0.5, 2.0, 4), np.linspace(1.0, 3.0, 4), np.linspace(0.2, 1.0, 4)]
    starts = [np.linspace(1.0, -1.0, 4), np.linspace(-0.5, 0.8, 4), np.linspace(0.3, 0.9, 4)]
    subspaces = [{0, 1}, {2, 0}, {1, 2}]

    xs = [x.copy() for x in starts]
    state: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}
    for step in range(3 * gap):
        if step % gap == 0:
            chosen = subspaces[step // gap]
            state = {i: state.get(i, (np.zeros(4), np.zeros(4), 0)) for i in chosen}
        for i in range(3):
            g = curv[i] * xs[i] - 1.0
            if i in state:
                m, v, t = state[i]
                m, v, t = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g, t + 1
                state[i] = (m, v, t)
                xs[i] = xs[i] - lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
            else:
                xs[i] = xs[i] - lr * np.sign(g)

    params = [torch.nn.Parameter(torch.tensor(x)) for x in starts]
    opt = Frugal(params, lr=lr, density=0.6, update_gap=gap, projection="blockwise", betas=(beta1, beta2), eps=eps)
    ks = [torch.tensor(c) for c in curv]
    for _ in range(3 * gap):
        opt.zero_grad()
        sum((0.5 * k * p * p).sum() - p.sum() for k, p in zip(ks, params, strict=True)).backward()  # type: ignore[union-attr]
        opt.step()
    for p, x in zip(params, xs, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), x, atol=1e-6)


def test_random_refresh_keeps_the_moments_of_coordinates_that_stay() -> None:
    """Random subspaces drawn anew every T steps: a coordinate chosen in two consecutive subspaces keeps its
    moments and its own step count (bias correction); one that joins starts from zero. The subspaces are read
    from the optimizer; the update given them is computed by hand."""
    lr, beta1, beta2, eps, gap, d, steps = 0.05, 0.9, 0.999, 1e-8, 5, 60, 20
    c, x0 = np.linspace(0.5, 3.0, d), np.linspace(-1.0, 1.0, d)
    theta = torch.nn.Parameter(torch.tensor(x0))
    opt = Frugal([theta], lr=lr, density=0.5, update_gap=gap, projection="random", betas=(beta1, beta2), eps=eps)
    k = torch.tensor(c)
    masks = []
    for step in range(steps):
        opt.zero_grad()
        ((0.5 * k * theta * theta).sum() - theta.sum()).backward()
        opt.step()
        if step % gap == 0:
            mask = np.zeros(d, dtype=bool)
            mask[opt.state[theta]["index"].numpy()] = True
            masks.append(mask)
    assert any((a & b).any() and (a != b).any() for a, b in itertools.pairwise(masks))

    x, m, v, t = x0.copy(), np.zeros(d), np.zeros(d), np.zeros(d)
    for step in range(steps):
        if step % gap == 0:
            mask = masks[step // gap]
            m, v, t = np.where(mask, m, 0.0), np.where(mask, v, 0.0), np.where(mask, t, 0)
        g = c * x - 1.0
        t = np.where(mask, t + 1, 0)
        m = np.where(mask, beta1 * m + (1 - beta1) * g, 0.0)
        v = np.where(mask, beta2 * v + (1 - beta2) * g * g, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            adam = (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
        x = x - lr * np.where(mask, adam, np.sign(g))
    np.testing.assert_allclose(theta.detach().numpy(), x, atol=1e-6)
