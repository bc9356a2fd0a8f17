"""1-bit Adam against the paper's two stages computed by hand (numpy, float64), K workers with different data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.custom_optimizers import OneBitAdam
from workers.optimizers import OPTIMIZERS

K, FREEZE, STEPS = 3, 5, 20
A = np.diag(np.linspace(0.5, 2.0, 5))
TARGETS = [np.linspace(-1, 1, 5) * (k + 1) for k in range(K)]
THETA0 = np.linspace(0.4, -0.4, 5)
SIZES = [2, 3]  # two "tensors": C compresses each segment with its own scale


def compress(x: np.ndarray) -> np.ndarray:
    out, start = [], 0
    for n in SIZES:
        seg = x[start : start + n]
        out.append(np.where(seg >= 0, 1.0, -1.0) * np.linalg.norm(seg) / np.sqrt(n))
        start += n
    return np.concatenate(out)


def worker_grads(theta: np.ndarray) -> np.ndarray:
    return np.stack([A @ (theta - c) for c in TARGETS])


def reference(lr: float, beta1: float, beta2: float, eps: float, shares: np.ndarray | None = None) -> np.ndarray:
    """The paper's two stages; `shares` weights every average over workers (each worker's part of the batch)."""
    w = np.full(K, 1.0 / K) if shares is None else shares
    theta, m, v = THETA0.copy(), np.zeros(5), np.zeros(5)
    e, e_s, v_star = np.zeros((K, 5)), np.zeros(5), None
    for t in range(1, STEPS + 1):
        g = worker_grads(theta)
        if t <= FREEZE:
            m = beta1 * m + (1 - beta1) * (w @ g)
            v = beta2 * v + (1 - beta2) * (w @ g) ** 2
            theta = theta - lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
            v_star = v / (1 - beta2**t)
            continue
        local = beta1 * m + (1 - beta1) * g + e
        sent = np.stack([compress(row) for row in local])
        e = local - sent
        a = w @ sent + e_s
        m = compress(a)
        e_s = a - m
        theta = theta - lr * m / (np.sqrt(v_star) + eps)
    return theta


def run_ours(lr: float, beta1: float, beta2: float, eps: float, steps: int = STEPS, opt=None, params=None, shares=None):  # type: ignore[no-untyped-def]
    t = torch.tensor(THETA0)
    params = params or [torch.nn.Parameter(t[:2].clone()), torch.nn.Parameter(t[2:].clone())]
    opt = opt or OneBitAdam(params, lr=lr, betas=(beta1, beta2), eps=eps, workers=K, freeze_step=FREEZE)
    for _ in range(steps):
        theta = torch.cat([p.detach() for p in params]).numpy()
        opt.worker_grads = torch.tensor(worker_grads(theta))
        if shares is not None:
            opt.worker_weights = torch.tensor(shares)
        opt.step()
    return params, opt


@pytest.mark.parametrize("eps", [1e-8, 1e-3])
def test_matches_the_two_stages_by_hand(eps: float) -> None:
    params, opt = run_ours(lr=0.05, beta1=0.9, beta2=0.999, eps=eps)
    got = torch.cat([p.detach() for p in params]).numpy()
    np.testing.assert_allclose(got, reference(0.05, 0.9, 0.999, eps), atol=1e-6)
    assert opt.step_metrics()["compression_error_worker"].item() > 0  # error feedback is carrying something


def test_warm_up_is_plain_adam() -> None:
    params, _ = run_ours(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8, steps=FREEZE)
    theta = torch.nn.Parameter(torch.tensor(THETA0))
    adam = torch.optim.Adam([theta], lr=0.05, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(FREEZE):
        theta.grad = torch.tensor(worker_grads(theta.detach().numpy()).mean(0))
        adam.step()
    np.testing.assert_allclose(torch.cat([p.detach() for p in params]).numpy(), theta.detach().numpy(), atol=1e-10)


def test_state_dict_round_trip_resumes_identically() -> None:
    straight, _ = run_ours(0.05, 0.9, 0.999, 1e-8)
    first, opt = run_ours(0.05, 0.9, 0.999, 1e-8, steps=8)
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in first]
    opt2 = OneBitAdam(resumed, lr=0.05, betas=(0.9, 0.999), eps=1e-8, workers=K, freeze_step=FREEZE)
    opt2.load_state_dict(opt.state_dict())
    run_ours(0.05, 0.9, 0.999, 1e-8, steps=STEPS - 8, opt=opt2, params=resumed)
    for a, b in zip(resumed, straight, strict=True):
        assert torch.equal(a, b)


def test_the_loop_gives_each_worker_its_share_of_the_batch() -> None:
    """Full batch split in 2: the logged loss and gradient norm equal those of the whole batch at init."""
    from models.tasks import TASKS
    from workers.spec import parse_spec
    from workers.training import ListSink, run

    problem = TASKS["digits-mlp"].build(seed=0, hidden=64)
    loss = problem.loss_fn(problem.model(problem.x_train), problem.y_train)
    grads = torch.autograd.grad(loss, list(problem.model.parameters()))
    norm = torch.cat([g.reshape(-1) for g in grads]).norm().item()
    s = parse_spec({"task": "digits-mlp", "optimizer": {"name": "onebit-adam", "workers": 2}, "steps": 1,
                    "batch": {"size": 1438}})  # fmt: skip
    sink = ListSink()
    run(s, sink, torch.device("cpu"))
    assert sink.series("loss")[1] == pytest.approx(loss.item(), rel=1e-5)
    assert sink.series("grad_l2")[1] == pytest.approx(norm, rel=1e-4)
    assert sink.series("compression_cosine")[1] == pytest.approx(1.0)
    assert "onebit-adam" in OPTIMIZERS


def test_unequal_shares_weight_every_average_over_workers() -> None:
    """Workers with 5, 3 and 2 of a batch of 10: the warm-up's gradient and the server's average of compressed
    momenta are weighted by those shares, as the whole batch's gradient is."""
    shares = np.array([0.5, 0.3, 0.2])
    params, _ = run_ours(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8, shares=shares)
    got = torch.cat([p.detach() for p in params]).numpy()
    np.testing.assert_allclose(got, reference(0.05, 0.9, 0.999, 1e-8, shares), atol=1e-6)
    assert np.abs(got - reference(0.05, 0.9, 0.999, 1e-8)).max() > 1e-3  # unweighted would differ


def test_the_loop_and_the_optimizer_use_the_same_gradient_when_the_batch_does_not_divide() -> None:
    """A batch of 10 among 4 workers (3, 3, 2, 2 examples): the warm-up step equals torch.optim.Adam on the whole
    batch's gradient from autograd, and the loop's `.grad` (what it logs) is that same gradient."""
    from models.tasks import TASKS
    from workers.flat import FlatParams
    from workers.training import _worker_gradients

    problem = TASKS["digits-mlp"].build(seed=0, hidden=16)
    reference_model = TASKS["digits-mlp"].build(seed=0, hidden=16).model
    x, y = problem.x_train[:10], problem.y_train[:10]
    params = list(problem.model.parameters())
    flat = FlatParams(params)
    opt = OPTIMIZERS["onebit-adam"].build(params, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, workers=4, freeze_step=5)
    adam = torch.optim.Adam(reference_model.parameters(), lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(3):
        _worker_gradients(problem, flat, opt, x, y)
        whole = torch.autograd.grad(problem.loss_fn(reference_model(x), y), list(reference_model.parameters()))
        torch.testing.assert_close(flat.grad, torch.cat([g.reshape(-1) for g in whole]), rtol=1e-5, atol=1e-7)
        for p, g in zip(reference_model.parameters(), whole, strict=True):
            p.grad = g
        opt.step()
        adam.step()
    for ours, theirs in zip(params, reference_model.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert not torch.equal(params[0], TASKS["digits-mlp"].build(seed=0, hidden=16).model[0].weight)


def test_more_workers_than_examples_leaves_the_extra_workers_without_a_share() -> None:
    """Batch 4 among 8 workers: four have no example this step (weight 0) instead of a NaN loss."""
    from workers.spec import parse_spec
    from workers.training import ListSink, run

    s = parse_spec({"task": "digits-mlp", "optimizer": {"name": "onebit-adam", "workers": 8, "freeze_step": 2},
                    "steps": 4, "batch": {"size": 4}})  # fmt: skip
    sink = ListSink()
    assert run(s, sink, torch.device("cpu")).status == "completed"
    assert all(np.isfinite(v) for v in sink.series("loss").values())
