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


def rmsprop_ref(lr: float, alpha: float, eps: float, momentum: float, weight_decay: float) -> np.ndarray:
    theta, v, buf = THETA0.copy(), np.zeros(6), np.zeros(6)
    for _ in range(STEPS):
        g = grad(theta) + weight_decay * theta
        v = alpha * v + (1 - alpha) * g * g
        step = g / (np.sqrt(v) + eps)
        buf = momentum * buf + step
        theta = theta - lr * (buf if momentum else step)
    return theta


def adagrad_norm_ref(lr: float, b0: float) -> np.ndarray:
    theta, b2 = THETA0.copy(), b0**2
    for _ in range(STEPS):
        g = grad(theta)
        b2 += g @ g
        theta = theta - lr * g / np.sqrt(b2)
    return theta


def signsgd_ref(lr: float, momentum: float, weight_decay: float) -> np.ndarray:
    theta, m = THETA0.copy(), np.zeros(6)
    for _ in range(STEPS):
        g = grad(theta)
        m = momentum * m + (1 - momentum) * g
        theta = theta * (1 - lr * weight_decay) - lr * np.sign(m)
    return theta


def lion_ref(lr: float, beta1: float, beta2: float, weight_decay: float) -> np.ndarray:
    theta, m = THETA0.copy(), np.zeros(6)
    for _ in range(STEPS):
        g = grad(theta)
        c = beta1 * m + (1 - beta1) * g
        theta = theta * (1 - lr * weight_decay) - lr * np.sign(c)
        m = beta2 * m + (1 - beta2) * g
    return theta


def adabelief_ref(lr: float, beta1: float, beta2: float, eps: float, weight_decay: float) -> np.ndarray:
    theta, m, s = THETA0.copy(), np.zeros(6), np.zeros(6)
    for t in range(1, STEPS + 1):
        g = grad(theta)
        theta = theta * (1 - lr * weight_decay)
        m = beta1 * m + (1 - beta1) * g
        s = beta2 * s + (1 - beta2) * (g - m) ** 2 + eps
        m_hat, s_hat = m / (1 - beta1**t), s / (1 - beta2**t)
        theta = theta - lr * m_hat / (np.sqrt(s_hat) + eps)
    return theta


def adahessian_ref(
    lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, hessian_power: float
) -> np.ndarray:
    """On ½θᵀAθ − bᵀθ with A diagonal, Hutchinson's z ⊙ (Az) is diag(A) exactly for Rademacher z."""
    theta, m, v, d = THETA0.copy(), np.zeros(6), np.zeros(6), np.diag(A)
    for t in range(1, STEPS + 1):
        g = grad(theta)
        theta = theta * (1 - lr * weight_decay)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * d * d
        denom = (v / (1 - beta2**t)) ** (hessian_power / 2) + eps
        theta = theta - lr * (m / (1 - beta1**t)) / denom
    return theta


def lamb_ref(lr: float, beta1: float, beta2: float, eps: float, weight_decay: float) -> np.ndarray:
    """LAMB, You et al. (ICLR 2020) Algorithm 2 by hand: m̂, v̂ bias-corrected, r = m̂/(√v̂ + ε) + λθ,
    θ ← θ − η·φ(‖θ‖)/‖r‖·r with φ(z) = min(z, 10) (pytorch-optimizer's clamp; the paper leaves φ open)."""
    theta, m, v = THETA0.copy(), np.zeros(6), np.zeros(6)
    for t in range(1, STEPS + 1):
        g = grad(theta)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        r = (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps) + weight_decay * theta
        w, u = min(np.linalg.norm(theta), 10.0), np.linalg.norm(r)
        trust = 1.0 if w == 0 or u == 0 else w / u
        theta = theta - lr * trust * r
    return theta


def schedulefree_ref(
    lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, warmup_steps: int
) -> np.ndarray:
    """Defazio et al.: gradient at y = (1−β1)z + β1x; z ← z − γ(g/(√v̂+ε) + λy); x ← (1−c)x + cz, c = 1/t.
    Returns x, the averaged weights the optimizer's eval mode exposes."""
    assert warmup_steps == 0
    x, z, v = THETA0.copy(), THETA0.copy(), np.zeros(6)
    for t in range(1, STEPS + 1):
        y = (1 - beta1) * z + beta1 * x
        g = grad(y)
        v = beta2 * v + (1 - beta2) * g * g
        z = z - lr * (g / (np.sqrt(v / (1 - beta2**t)) + eps) + weight_decay * y)
        x = (1 - 1 / t) * x + (1 / t) * z
    return x


REFERENCES: list[tuple[str, dict[str, object], Callable[..., np.ndarray]]] = [
    ("sgd", {"lr": 0.1, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}, sgd_ref),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": False, "weight_decay": 0.01}, sgd_ref),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0}, sgd_ref),
    ("adam", {"lr": 0.05, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1}, adam_l2),
    ("adam", {"lr": 0.05, "beta1": 0.8, "beta2": 0.99, "eps": 1e-3, "weight_decay": 0.0}, adam_l2),
    ("adamw", {"lr": 0.05, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1}, adamw_ref),
    ("adagrad", {"lr": 0.3, "eps": 1e-10, "weight_decay": 0.01, "initial_accumulator_value": 0.1}, adagrad_ref),
    ("adagrad-norm", {"lr": 0.5, "b0": 0.1}, adagrad_norm_ref),
    ("rmsprop", {"lr": 0.01, "alpha": 0.9, "eps": 1e-8, "momentum": 0.0, "weight_decay": 0.0}, rmsprop_ref),
    ("rmsprop", {"lr": 0.01, "alpha": 0.99, "eps": 1e-6, "momentum": 0.5, "weight_decay": 0.1}, rmsprop_ref),
    ("signsgd", {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0}, signsgd_ref),
    ("signsgd", {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.1}, signsgd_ref),
    ("lion", {"lr": 0.01, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.5}, lion_ref),
    ("adabelief", {"lr": 0.05, "beta1": 0.9, "beta2": 0.999, "eps": 1e-16, "weight_decay": 0.1}, adabelief_ref),
    ("adahessian", {"lr": 0.1, "beta1": 0.9, "beta2": 0.999, "eps": 1e-4, "weight_decay": 0.0, "hessian_power": 1.0}, adahessian_ref),
    ("lamb", {"lr": 0.05, "beta1": 0.9, "beta2": 0.999, "eps": 1e-6, "weight_decay": 0.1}, lamb_ref),
    ("lamb", {"lr": 0.02, "beta1": 0.8, "beta2": 0.99, "eps": 1e-3, "weight_decay": 0.0}, lamb_ref),
    ("schedulefree-adamw", {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1, "warmup_steps": 0}, schedulefree_ref),
    ("adahessian", {"lr": 0.1, "beta1": 0.8, "beta2": 0.99, "eps": 1e-4, "weight_decay": 0.1, "hessian_power": 0.5}, adahessian_ref),
]  # fmt: skip


def run_registry(name: str, hyper: dict[str, object], steps: int = STEPS) -> tuple[torch.nn.Parameter, object]:
    theta = torch.nn.Parameter(torch.tensor(THETA0, dtype=torch.float64))
    opt = OPTIMIZERS[name].build([theta], **hyper)
    a, b = torch.tensor(A), torch.tensor(B)
    create_graph = bool(OPTIMIZERS[name].extra.get("create_graph"))
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * theta @ a @ theta - b @ theta).backward(create_graph=create_graph)
        opt.step()
    return theta, opt


@pytest.mark.parametrize(
    ("name", "hyper", "reference"), REFERENCES, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(REFERENCES)]
)
def test_matches_the_papers_update(name: str, hyper: dict[str, object], reference: Callable[..., np.ndarray]) -> None:
    theta, opt = run_registry(name, hyper)
    if OPTIMIZERS[name].extra.get("train_eval"):
        opt.eval()  # type: ignore[attr-defined]  # compare the averaged weights
    expected = reference(**hyper)
    np.testing.assert_allclose(theta.detach().numpy(), expected, rtol=0, atol=1e-6)
    assert not np.allclose(expected, THETA0)  # the reference moved: the comparison means something


def test_every_optimizer_has_a_reference() -> None:
    elsewhere = {"lars", "muon", "frugal", "onebit-adam", "diloco", "noloco"}  # below, and in their own test files
    assert {name for name, _, _ in REFERENCES} | elsewhere == set(OPTIMIZERS)


def test_lamb_moves_each_tensor_by_lr_times_its_clamped_norm_from_the_first_step() -> None:
    """The trust ratio normalises r, so by the paper every tensor moves by exactly η·min(‖θ‖, 10) at every step,
    whatever the moments say; a bias correction applied after the ratio would make step 1 ten times longer."""
    rng = np.random.default_rng(3)
    w = torch.nn.Parameter(torch.tensor(rng.standard_normal((4, 3)) * 8.0))  # ‖w‖ > 10: the clamp applies
    b = torch.nn.Parameter(torch.tensor(rng.standard_normal(3)))
    opt = OPTIMIZERS["lamb"].build([w, b], lr=0.01, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.05)
    assert w.norm().item() > 10
    for _ in range(30):
        before = [w.detach().clone(), b.detach().clone()]
        opt.zero_grad()
        ((w.sum(0) - 1.0) ** 2).sum().add((b * torch.arange(3.0, dtype=b.dtype)).sum()).backward()
        opt.step()
        for p, old in zip((w, b), before, strict=True):
            moved = (p.detach() - old).norm().item()
            assert moved == pytest.approx(0.01 * min(old.norm().item(), 10.0), rel=1e-9)


def test_lamb_matches_torch_optimizer_without_decay() -> None:
    """An independent implementation: torch-optimizer's Lamb (no bias correction, debias=False). Without weight
    decay the trust ratio cancels any scale of r, so the paper's bias-corrected r and torch-optimizer's
    uncorrected one give the same step (up to ε, made negligible here)."""
    import torch_optimizer

    rng = np.random.default_rng(4)
    start = [rng.standard_normal((3, 5)), rng.standard_normal(5)]
    target = torch.tensor(rng.standard_normal((3, 5)))

    def train(make: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]) -> list[np.ndarray]:
        params = [torch.nn.Parameter(torch.tensor(x)) for x in start]
        opt = make(params)
        for _ in range(STEPS):
            opt.zero_grad()
            (((params[0] - target) ** 2).sum() + (params[1] ** 4).sum()).backward()
            opt.step()
        return [p.detach().numpy() for p in params]

    ours = train(lambda ps: OPTIMIZERS["lamb"].build(ps, lr=0.05, beta1=0.9, beta2=0.99, eps=1e-12, weight_decay=0.0))
    theirs = train(lambda ps: torch_optimizer.Lamb(ps, lr=0.05, betas=(0.9, 0.99), eps=1e-12, weight_decay=0.0))
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
    assert not np.allclose(ours[0], start[0])


def test_adahessian_averages_a_conv_kernels_curvature_over_its_spatial_taps() -> None:
    """Yao et al. (§3.2, and the authors' optim_adahessian.py): for a conv kernel (out, in, kh, kw) the Hutchinson
    estimate is |z ⊙ Hz| averaged over kh × kw; a bias keeps its own per coordinate. On ½Σc·w² − Σw the Hessian is
    diag(c), so for Rademacher z the estimate is c exactly and the whole update can be computed by hand."""
    lr, beta1, beta2, eps, power = 0.1, 0.9, 0.999, 1e-4, 1.0
    rng = np.random.default_rng(5)
    c_w = rng.uniform(0.2, 4.0, (2, 1, 3, 3))  # a different curvature at every tap
    c_b = np.array([0.5, 3.0])
    w0, b0 = rng.standard_normal((2, 1, 3, 3)), rng.standard_normal(2)

    def by_hand(averaged: bool) -> tuple[np.ndarray, np.ndarray]:
        d_w = np.broadcast_to(c_w.mean(axis=(2, 3), keepdims=True), c_w.shape) if averaged else c_w
        out = []
        for x, c, d in ((w0, c_w, d_w), (b0, c_b, c_b)):
            x, m, v = x.copy(), np.zeros_like(x), np.zeros_like(x)
            for t in range(1, STEPS + 1):
                g = c * x - 1.0
                m = beta1 * m + (1 - beta1) * g
                v = beta2 * v + (1 - beta2) * d * d
                x = x - lr * (m / (1 - beta1**t)) / ((v / (1 - beta2**t)) ** (power / 2) + eps)
            out.append(x)
        return out[0], out[1]

    w, b = torch.nn.Parameter(torch.tensor(w0)), torch.nn.Parameter(torch.tensor(b0))
    opt = OPTIMIZERS["adahessian"].build(
        [w, b], lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=0.0, hessian_power=power
    )
    cw, cb = torch.tensor(c_w), torch.tensor(c_b)
    for _ in range(STEPS):
        opt.zero_grad()
        (0.5 * (cw * w * w).sum() - w.sum() + 0.5 * (cb * b * b).sum() - b.sum()).backward(create_graph=True)
        opt.step()
    expect_w, expect_b = by_hand(averaged=True)
    np.testing.assert_allclose(w.detach().numpy(), expect_w, rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.detach().numpy(), expect_b, rtol=0, atol=1e-9)
    per_tap, _ = by_hand(averaged=False)
    assert np.abs(per_tap - expect_w).max() > 0.05  # the averaging changes the update materially


def test_lars_trust_ratio_on_matrices_plain_momentum_on_vectors() -> None:
    """You et al.: for a weight matrix, r = γ‖θ‖/(‖g‖ + λ‖θ‖), v ← μv + r(g + λθ), θ ← θ − ηv; biases (1-D)
    get plain momentum SGD, as in pytorch-optimizer."""
    lr, mu, gamma, wd = 0.5, 0.9, 0.01, 0.05
    rng = np.random.default_rng(0)
    a_w, a_b = rng.uniform(0.5, 2.0, (2, 3)), rng.uniform(0.5, 2.0, 3)
    w0, b0 = rng.standard_normal((2, 3)), rng.standard_normal(3)

    w, b, vw, vb = w0.copy(), b0.copy(), np.zeros((2, 3)), np.zeros(3)
    for _ in range(STEPS):
        gw, gb = a_w * w - 1.0, a_b * b - 1.0
        r = gamma * np.linalg.norm(w) / (np.linalg.norm(gw) + wd * np.linalg.norm(w))
        vw = mu * vw + r * (gw + wd * w)
        vb = mu * vb + gb
        w, b = w - lr * vw, b - lr * vb

    tw, tb = torch.nn.Parameter(torch.tensor(w0)), torch.nn.Parameter(torch.tensor(b0))
    opt = OPTIMIZERS["lars"].build([tw, tb], lr=lr, momentum=mu, trust_coefficient=gamma, weight_decay=wd)
    cw, cb = torch.tensor(a_w), torch.tensor(a_b)
    for _ in range(STEPS):
        opt.zero_grad()
        ((0.5 * cw * tw * tw).sum() - tw.sum() + (0.5 * cb * tb * tb).sum() - tb.sum()).backward()
        opt.step()
    np.testing.assert_allclose(tw.detach().numpy(), w, atol=1e-6)
    np.testing.assert_allclose(tb.detach().numpy(), b, atol=1e-6)


def test_muon_entry_is_torch_muon_on_hidden_matrices_and_adamw_on_the_rest() -> None:
    """The Muon update itself is torch.optim.Muon's; what the entry adds is the split, checked against torch."""
    from models.tasks import TASKS

    def model() -> torch.nn.Module:
        return TASKS["digits-mlp"].build(seed=0, hidden=16).model

    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    y = torch.arange(32) % 10
    hyper = OPTIMIZERS["muon"].defaults
    ours, ref = model(), model()
    opt = OPTIMIZERS["muon"].build(list(ours.parameters()), **hyper)
    weights = [p for p in ref.parameters() if p.ndim == 2]
    hidden = weights[:-1]  # the output layer is the last matrix
    rest = [p for p in ref.parameters() if all(p is not h for h in hidden)]
    assert len(hidden) == 2 and len(rest) == 4  # two hidden matrices; three biases and the head on AdamW
    muon = torch.optim.Muon(hidden, lr=hyper["lr"], momentum=hyper["momentum"], nesterov=True, weight_decay=0.0)
    adamw = torch.optim.AdamW(rest, lr=hyper["adamw_lr"], betas=(0.9, 0.95), weight_decay=0.0)
    for _ in range(STEPS):
        for net, steppers in ((ours, [opt]), (ref, [muon, adamw])):
            for s in steppers:
                s.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            for s in steppers:
                s.step()
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(next(iter(ours.parameters())), next(iter(model().parameters())))


@pytest.mark.parametrize(
    "name", [n for n in OPTIMIZERS if n not in ("muon", "diloco", "noloco", "onebit-adam")]
)  # see below
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
        (0.5 * resumed @ a @ resumed - b @ resumed).backward(
            create_graph=bool(OPTIMIZERS[name].extra.get("create_graph"))
        )
        opt2.step()
    assert torch.equal(resumed, straight)


def test_muon_state_dict_round_trip_resumes_identically() -> None:
    from models.tasks import TASKS

    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 10

    def train(net: torch.nn.Module, opt: object, steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad()  # type: ignore[attr-defined]
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()  # type: ignore[attr-defined]

    hyper = OPTIMIZERS["muon"].defaults
    straight = TASKS["digits-mlp"].build(seed=0, hidden=16).model
    train(straight, OPTIMIZERS["muon"].build(list(straight.parameters()), **hyper), 20)
    first = TASKS["digits-mlp"].build(seed=0, hidden=16).model
    opt = OPTIMIZERS["muon"].build(list(first.parameters()), **hyper)
    train(first, opt, 10)
    second = TASKS["digits-mlp"].build(seed=0, hidden=16).model
    second.load_state_dict(first.state_dict())
    opt2 = OPTIMIZERS["muon"].build(list(second.parameters()), **hyper)
    opt2.load_state_dict(opt.state_dict())
    train(second, opt2, 10)
    for a, b in zip(second.parameters(), straight.parameters(), strict=True):
        assert torch.equal(a, b)
