"""Packed optimizers: each member of a pack follows, step for step, the registry's single-run optimizer with its own
hyper-parameters, its own per-step LR and its own gradients; stopped members stay bit-identical; a checkpoint
round trip resumes identically."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from workers import packed_optim
from workers.optimizers import OPTIMIZERS
from workers.packed_optim import PACKED, SUPPORTED, PackedOptimizer, supported

K = 4
STEPS = 50
SHAPES = [(3, 5), (5,), (2, 2, 3)]  # a matrix, a vector, a 3-d tensor: the member axis broadcasts over each rank
TOLERANCE = {torch.float64: (1e-6, 1e-9), torch.float32: (1e-5, 1e-7)}  # (relative, absolute near zero)

# K members per optimizer, differing in every hyper-parameter the entry has (Nesterov / momentum on and off).
HYPERS: dict[str, list[dict[str, Any]]] = {
    "sgd": [
        {"lr": 0.05, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0},
        {"lr": 0.02, "momentum": 0.5, "nesterov": True, "weight_decay": 1e-2},
        {"lr": 0.1, "momentum": 0.0, "nesterov": False, "weight_decay": 1e-3},
        {"lr": 0.01, "momentum": 0.95, "nesterov": True, "weight_decay": 0.0},
    ],
    "adam": [
        {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
        {"lr": 1e-2, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 1e-2},
        {"lr": 3e-3, "beta1": 0.0, "beta2": 0.9, "eps": 1e-3, "weight_decay": 0.1},
        {"lr": 5e-4, "beta1": 0.95, "beta2": 0.9999, "eps": 1e-10, "weight_decay": 0.0},
    ],
    "adamw": [
        {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
        {"lr": 1e-2, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.0},
        {"lr": 3e-3, "beta1": 0.0, "beta2": 0.9, "eps": 1e-3, "weight_decay": 0.1},
        {"lr": 5e-4, "beta1": 0.95, "beta2": 0.9999, "eps": 1e-10, "weight_decay": 0.5},
    ],
    "lion": [
        {"lr": 1e-4, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.0},
        {"lr": 1e-3, "beta1": 0.95, "beta2": 0.98, "weight_decay": 0.1},
        {"lr": 3e-4, "beta1": 0.5, "beta2": 0.9, "weight_decay": 1.0},
        {"lr": 1e-2, "beta1": 0.0, "beta2": 0.999, "weight_decay": 0.01},
    ],
    "signsgd": [
        {"lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0},
        {"lr": 1e-2, "momentum": 0.0, "weight_decay": 0.1},
        {"lr": 3e-3, "momentum": 0.5, "weight_decay": 0.01},
        {"lr": 1e-4, "momentum": 0.99, "weight_decay": 1.0},
    ],
    "rmsprop": [
        {"lr": 1e-3, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "weight_decay": 0.0},
        {"lr": 1e-2, "alpha": 0.9, "eps": 1e-6, "momentum": 0.9, "weight_decay": 1e-2},
        {"lr": 3e-3, "alpha": 0.5, "eps": 1e-3, "momentum": 0.5, "weight_decay": 0.0},
        {"lr": 1e-4, "alpha": 0.999, "eps": 1e-10, "momentum": 0.0, "weight_decay": 0.1},
    ],
    "adagrad": [
        {"lr": 0.01, "eps": 1e-10, "weight_decay": 0.0, "initial_accumulator_value": 0.0},
        {"lr": 0.1, "eps": 1e-6, "weight_decay": 1e-2, "initial_accumulator_value": 0.1},
        {"lr": 0.05, "eps": 1e-3, "weight_decay": 0.0, "initial_accumulator_value": 1.0},
        {"lr": 0.001, "eps": 1e-8, "weight_decay": 0.1, "initial_accumulator_value": 0.0},
    ],
}
DTYPES = [torch.float64, torch.float32]


def test_registry_names() -> None:
    assert set(HYPERS) == SUPPORTED == set(PACKED)
    assert {"sgd", "adam", "adamw", "lion", "signsgd", "rmsprop", "adagrad"} == SUPPORTED
    assert set(OPTIMIZERS) >= SUPPORTED
    assert all(supported(name) for name in SUPPORTED)
    assert not supported("muon") and not supported("lamb") and not supported("no-such-optimizer")
    for name, members in HYPERS.items():
        assert all(set(m) == set(OPTIMIZERS[name].defaults) for m in members), name


class Problem:
    """A random separable quadratic per member plus a fixed noise sequence: g_t = a ⊙ (θ − c) + n_t.

    The gradient depends on the parameters, so any drift between a pack and its single runs compounds; it is
    elementwise, so the stacked and the per-member computations give the same bits.
    """

    def __init__(self, dtype: torch.dtype, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)

        def rand(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

        self.init = [rand(K, *s) for s in SHAPES]  # different initial parameters per member
        self.curv = [(0.2 + torch.rand(K, *s, generator=gen, dtype=torch.float64) * 2).to(dtype) for s in SHAPES]
        self.centre = [rand(K, *s) for s in SHAPES]
        self.noise = [[0.1 * rand(K, *s) for s in SHAPES] for _ in range(STEPS)]
        # each member's LR schedule: warm-up, cosine, step decay, constant (factors of the member's own lr)
        self.factors = torch.tensor(
            [
                [min(1.0, (t + 1) / 10) for t in range(STEPS)],
                [0.5 * (1 + math.cos(math.pi * t / STEPS)) for t in range(STEPS)],
                [0.3 ** (t // 15) for t in range(STEPS)],
                [1.0] * STEPS,
            ],
            dtype=torch.float64,
        ).T  # [STEPS, K]

    def grad(self, i: int, t: int, p: torch.Tensor, member: int | None = None) -> torch.Tensor:
        pick = slice(None) if member is None else member
        return self.curv[i][pick] * (p - self.centre[i][pick]) + self.noise[t][i][pick]

    def lrs(self, name: str, t: int) -> torch.Tensor:
        return torch.tensor([h["lr"] for h in HYPERS[name]], dtype=torch.float64) * self.factors[t]


def stacked(problem: Problem) -> list[torch.Tensor]:
    return [p.clone().requires_grad_(True) for p in problem.init]


def packed_step(opt: PackedOptimizer, problem: Problem, t: int, lrs: torch.Tensor | None) -> None:
    for i, p in enumerate(opt.params):
        p.grad = problem.grad(i, t, p.detach())
    opt.step(lrs)


class Single:
    """One member trained alone by the registry's own optimizer: `OPTIMIZERS[name].build(params, **hyper)`."""

    def __init__(self, name: str, problem: Problem, member: int) -> None:
        self.problem, self.member = problem, member
        self.params = [p[member].clone().requires_grad_(True) for p in problem.init]
        self.opt = OPTIMIZERS[name].build(self.params, **HYPERS[name][member])

    def step(self, t: int, lr: float) -> None:
        for i, p in enumerate(self.params):
            p.grad = self.problem.grad(i, t, p.detach(), self.member)
        for group in self.opt.param_groups:
            group["lr"] = lr  # as the training loop sets the schedule's value before every step
        self.opt.step()


def _prefix(label: str) -> Callable[[str], str]:
    return lambda message: f"{label}: {message}"


def assert_member(packed: list[torch.Tensor], single: Single, dtype: torch.dtype, where: str) -> None:
    rtol, atol = TOLERANCE[dtype]
    for i, (p, q) in enumerate(zip(packed, single.params, strict=True)):
        label = f"{where}, tensor {i}"
        torch.testing.assert_close(p[single.member].detach(), q.detach(), rtol=rtol, atol=atol, msg=_prefix(label))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(HYPERS))
def test_pack_equals_single_runs(name: str, dtype: torch.dtype) -> None:
    """50 steps, per-member hyper-parameters and per-step LRs: every member matches its single run at every step."""
    problem = Problem(dtype)
    opt = packed_optim.build(name, stacked(problem), HYPERS[name])
    singles = [Single(name, problem, k) for k in range(K)]
    for t in range(STEPS):
        lrs = problem.lrs(name, t)
        packed_step(opt, problem, t, lrs)
        for k, single in enumerate(singles):
            single.step(t, float(lrs[k]))
            assert_member(opt.params, single, dtype, f"{name} member {k} step {t + 1}")
    moved = [(p.detach() - p0).abs().max() for p, p0 in zip(opt.params, problem.init, strict=True)]
    assert all(float(m) > 0 for m in moved), "the parameters must actually move"


@pytest.mark.parametrize("name", sorted(HYPERS))
def test_default_lr_is_each_members_lr(name: str) -> None:
    """`step()` without `lrs` uses each member's constructor `lr` (constant schedule)."""
    dtype = torch.float64
    problem = Problem(dtype, seed=1)
    opt = packed_optim.build(name, stacked(problem), HYPERS[name])
    singles = [Single(name, problem, k) for k in range(K)]
    for t in range(10):
        packed_step(opt, problem, t, None)
        for k, single in enumerate(singles):
            single.step(t, HYPERS[name][k]["lr"])
    for single in singles:
        assert_member(opt.params, single, dtype, f"{name} member {single.member}")


@pytest.mark.parametrize("name", sorted(HYPERS))
def test_per_step_lr_vector_is_honoured(name: str) -> None:
    """A member whose LR this step is 0 does not move; the others move by their own LR (a larger LR, a larger step)."""
    problem = Problem(torch.float64, seed=2)
    opt = packed_optim.build(name, stacked(problem), HYPERS[name])
    packed_step(opt, problem, 0, problem.lrs(name, 0))
    before = [p.detach().clone() for p in opt.params]
    lrs = torch.tensor([0.0, 1e-3, 0.0, 2e-3], dtype=torch.float64)
    packed_step(opt, problem, 1, lrs)
    for p, b in zip(opt.params, before, strict=True):
        assert torch.equal(p[0], b[0]) and torch.equal(p[2], b[2])
        assert not torch.equal(p[1], b[1]) and not torch.equal(p[3], b[3])
    with pytest.raises(ValueError, match="expected \\(4,\\)"):
        opt.step(torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(HYPERS))
def test_inactive_members_stay_bit_identical(name: str, dtype: torch.dtype) -> None:
    """Members 1 and 3 stop for steps 10–24: their parameters, state and step count do not change at all; when
    they come back they continue as a single run that simply was not stepped meanwhile. The others go on."""
    problem = Problem(dtype, seed=3)
    opt = packed_optim.build(name, stacked(problem), HYPERS[name])
    singles = [Single(name, problem, k) for k in range(K)]
    stopped = torch.tensor([False, True, False, True])
    for t in range(30):
        paused = 10 <= t < 25
        opt.active = ~stopped if paused else None
        frozen = opt.state_dict()
        frozen_params = [p.detach().clone() for p in opt.params]
        lrs = problem.lrs(name, t)
        packed_step(opt, problem, t, lrs)
        for k, single in enumerate(singles):
            if not (paused and stopped[k]):
                single.step(t, float(lrs[k]))
            assert_member(opt.params, single, dtype, f"{name} member {k} step {t + 1}")
        if paused:
            after = opt.state_dict()
            for key, value in frozen.items():
                if key.startswith("state.") or key == "steps":
                    assert torch.equal(after[key][stopped], value[stopped]), key
            for p, p0 in zip(opt.params, frozen_params, strict=True):
                assert torch.equal(p.detach()[stopped], p0[stopped])
    assert opt.steps.tolist() == [30, 15, 30, 15]


def test_inactive_member_with_nan_gradient_stays_clean() -> None:
    """A diverged member (NaN gradients) that is masked out neither changes nor leaks into the others."""
    problem = Problem(torch.float32, seed=4)
    opt = packed_optim.build("adamw", stacked(problem), HYPERS["adamw"])
    opt.active = torch.tensor([True, False, True, True])
    before = [p.detach().clone() for p in opt.params]
    for p in opt.params:
        g = torch.randn_like(p)
        g[1] = float("nan")
        p.grad = g
    opt.step()
    for p, b in zip(opt.params, before, strict=True):
        assert torch.equal(p[1], b[1])
        assert torch.isfinite(p).all()
    assert all(torch.isfinite(v).all() for v in opt.state_dict().values() if v.is_floating_point())


@pytest.mark.parametrize("name", sorted(HYPERS))
def test_state_dict_round_trip_resumes_identically(name: str) -> None:
    """Save after 20 steps (through torch.save / weights_only load), restore into a fresh pack, go on 30 steps:
    bit-identical to the pack that never stopped."""
    dtype = torch.float32
    problem = Problem(dtype, seed=5)
    straight = packed_optim.build(name, stacked(problem), HYPERS[name])
    straight.active = torch.tensor([True, True, False, True])
    for t in range(20):
        packed_step(straight, problem, t, problem.lrs(name, t))
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in straight.params], "optim": straight.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    resumed = packed_optim.build(name, [p.clone().requires_grad_(True) for p in saved["params"]], HYPERS[name])
    resumed.load_state_dict(saved["optim"])
    assert torch.equal(resumed.active, straight.active)
    for t in range(20, STEPS):
        packed_step(straight, problem, t, problem.lrs(name, t))
        packed_step(resumed, problem, t, problem.lrs(name, t))
    for p, q in zip(straight.params, resumed.params, strict=True):
        assert torch.equal(p, q)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key

    bad = dict(saved["optim"])
    bad.pop("steps")
    with pytest.raises(ValueError, match="missing \\['steps'\\]"):
        resumed.load_state_dict(bad)


def test_stack_module_state_and_vmap() -> None:
    """A pack of tiny linear models built with torch.func (stack_module_state + functional_call + vmap) trained
    with packed AdamW equals each model trained alone with the registry's AdamW."""
    torch.manual_seed(0)
    models = [torch.nn.Linear(6, 3, dtype=torch.float64) for _ in range(K)]
    params, _ = torch.func.stack_module_state(models)  # type: ignore[arg-type]
    names = list(params)
    stacked_params = [params[n] for n in names]
    opt = packed_optim.build("adamw", stacked_params, HYPERS["adamw"])
    base = torch.nn.Linear(6, 3, dtype=torch.float64).to("meta")
    x = torch.randn(20, K, 8, 6, dtype=torch.float64)
    y = torch.randn(20, K, 8, 3, dtype=torch.float64)

    def loss(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return ((torch.func.functional_call(base, p, (xb,)) - yb) ** 2).mean()

    grads_fn = torch.vmap(torch.func.grad(loss))
    singles = [OPTIMIZERS["adamw"].build(list(m.parameters()), **HYPERS["adamw"][k]) for k, m in enumerate(models)]
    for t in range(20):
        grads = grads_fn({n: p.detach() for n, p in zip(names, stacked_params, strict=True)}, x[t], y[t])
        for n, p in zip(names, stacked_params, strict=True):
            p.grad = grads[n]
        opt.step()
        for k, (model, single) in enumerate(zip(models, singles, strict=True)):
            single.zero_grad()
            ((model(x[t, k]) - y[t, k]) ** 2).mean().backward()
            single.step()
    for n, p in zip(names, stacked_params, strict=True):
        for k, model in enumerate(models):
            torch.testing.assert_close(p[k].detach(), dict(model.named_parameters())[n].detach(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    ("name", "params", "hypers", "message"),
    [
        ("sgd", [torch.zeros(3, 2)], [{}] * 4, "leading member axis of 4"),
        ("sgd", [torch.zeros(4, 2)], [{"lr": 0.1, "betas": (0.9, 0.99)}] * 4, "unknown sgd hyper-parameter"),
        ("sgd", [torch.zeros(4, 2)], [{"momentum": 0.0, "nesterov": True}] * 4, "Nesterov momentum needs momentum > 0"),
        ("adam", [torch.zeros(4, 2)], [{"lr": "fast"}] * 4, "is not a number"),
        ("adam", [], [{}] * 4, "at least one parameter"),
        ("adam", [torch.zeros(4, 2, dtype=torch.int64)], [{}] * 4, "floating-point"),
    ],
)
def test_refuses(name: str, params: list[torch.Tensor], hypers: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        packed_optim.build(name, params, hypers)


def test_unknown_optimizer_and_defaults() -> None:
    with pytest.raises(KeyError, match="no packed version"):
        packed_optim.build("muon", [torch.zeros(4, 2)], [{}] * 4)
    opt = packed_optim.build("adamw", [torch.zeros(4, 2, requires_grad=True)], [{}, {"lr": 0.1}, {}, {}])
    assert opt.hyper["lr"].tolist() == [1e-3, 0.1, 1e-3, 1e-3]
    assert opt.hyper["weight_decay"].tolist() == [0.01] * 4  # the registry's defaults fill what a member omits
    with pytest.raises(ValueError, match="active mask has shape"):
        opt.active = torch.ones(3, dtype=torch.bool)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(HYPERS))
def test_no_host_sync_on_cuda(name: str) -> None:
    """A step (with an LR vector and an active mask) never synchronises with the host."""
    device = torch.device("cuda")
    params = [torch.randn(K, *s, device=device, requires_grad=True) for s in SHAPES]
    opt = packed_optim.build(name, params, HYPERS[name])
    opt.active = torch.tensor([True, False, True, True], device=device)
    lrs = torch.tensor([h["lr"] for h in HYPERS[name]], dtype=torch.float64, device=device)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step(lrs)  # warm-up (allocations)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            opt.step(lrs)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
