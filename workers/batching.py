"""Batch-size policies, and the learning-rate scaling rule applied whenever the batch size changes.

A policy says how many examples step `t` draws (`size_at`). The adaptive policy also looks at per-sample
gradients every `test_interval` steps (`wants_test` / `observe`) and grows the batch when the sampling test
says the mini-batch gradient is too noisy (AdAdaGrad, Lau, Liu & Kolar 2024). Sizes never exceed `max_size`.

LR scaling (Granziol et al., JMLR 2022): when the batch grows from b0 to b, `linear` multiplies the learning
rate by b/b0 (SGD), `sqrt` by √(b/b0) (Adam and other adaptive methods), `none` leaves it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from workers.registry import Entry, Param, Registry

if TYPE_CHECKING:
    import torch


def lr_factor(rule: str, size: int, base_size: int) -> float:
    """Granziol et al.'s rules: how much to scale the LR for a batch of `size` tuned at `base_size`."""
    ratio = size / base_size
    return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]


# --- sampling tests on per-sample gradients (rows of G: one sample's flattened gradient) ---------------------


@dataclass(frozen=True)
class TestResult:
    size: int  # the batch size the test asks for
    ratio: float  # the test's left side over its right side at the current batch size: > 1 means too noisy


def norm_test(grads: torch.Tensor, batch_size: int, eta: float) -> TestResult:
    """Byrd et al.: E‖ḡ − ∇F‖² ≤ η²‖∇F‖², estimated by V = Σ_j Var_i(g_ij) (unbiased) and ‖ḡ‖²:
    b ≥ V / (η² ‖ḡ‖²)."""
    mean = grads.mean(dim=0)
    v = grads.var(dim=0, unbiased=True).sum().item()
    g2 = mean.square().sum().item()
    return _result(v / (eta**2 * g2) if g2 > 0 else math.inf, batch_size)


def inner_product_test(grads: torch.Tensor, batch_size: int, theta: float) -> TestResult:
    """Bollapragada et al.: Var_i(⟨g_i, ḡ⟩) / b ≤ θ² ‖ḡ‖⁴."""
    mean = grads.mean(dim=0)
    s = (grads @ mean).var(unbiased=True).item()
    g2 = mean.square().sum().item()
    return _result(s / (theta**2 * g2**2) if g2 > 0 else math.inf, batch_size)


def orthogonality_test(grads: torch.Tensor, batch_size: int, nu: float) -> TestResult:
    """Bollapragada et al.: the part of each g_i orthogonal to ḡ, O = Σ_j Var_i, over b ≤ ν² ‖ḡ‖²."""
    mean = grads.mean(dim=0)
    g2 = mean.square().sum().item()
    if g2 == 0:
        return _result(math.inf, batch_size)
    orthogonal = grads - (grads @ mean / g2)[:, None] * mean[None, :]
    o = orthogonal.var(dim=0, unbiased=True).sum().item()
    return _result(o / (nu**2 * g2), batch_size)


def _result(required: float, batch_size: int) -> TestResult:
    size = math.ceil(required) if math.isfinite(required) else 2**31 - 1
    return TestResult(size=max(1, size), ratio=required / batch_size)


def per_sample_grads(model: torch.nn.Module, loss_fn: object, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One flattened gradient per example (n × d), with torch.func: vmap over grad of a one-example loss."""
    import torch
    from torch.func import functional_call, grad, vmap

    params = {name: p.detach() for name, p in model.named_parameters()}

    def one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model, p, (xi[None],)), yi[None])  # type: ignore[operator, no-any-return]

    per = vmap(grad(one), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([per[name].reshape(len(x), -1) for name in params], dim=1)


# --- policies --------------------------------------------------------------------------------------------------


@dataclass
class ConstantBatch:
    size: int
    lr_scaling: str = "none"
    statistic: float = math.nan

    def size_at(self, step: int, total_steps: int) -> int:
        return self.size

    def lr_factor(self, size: int) -> float:
        return lr_factor(self.lr_scaling, size, self.size)

    def wants_test(self, step: int) -> bool:
        return False


@dataclass
class StepRamp(ConstantBatch):
    milestones: Sequence[float] = (0.5,)
    factor: int = 2
    max_size: int = 1024

    def size_at(self, step: int, total_steps: int) -> int:
        passed = sum(step >= round(m * total_steps) for m in self.milestones)
        return min(self.max_size, self.size * self.factor**passed)


@dataclass
class LinearRamp(ConstantBatch):
    max_size: int = 1024

    def size_at(self, step: int, total_steps: int) -> int:
        return min(self.max_size, round(self.size + (self.max_size - self.size) * step / max(1, total_steps - 1)))


@dataclass
class Adaptive(ConstantBatch):
    """AdAdaGrad's policy: every `test_interval` steps, test `test_samples` examples of the batch; grow only."""

    max_size: int = 1024
    test: str = "norm"
    eta: float = 0.1
    theta: float = 0.5
    nu: float = 1.0
    test_interval: int = 10
    test_samples: int = 64
    current: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.current = self.size

    def size_at(self, step: int, total_steps: int) -> int:
        return self.current

    def wants_test(self, step: int) -> bool:
        return step % self.test_interval == 0

    def observe(self, grads: torch.Tensor) -> None:
        if self.test == "norm":
            result = norm_test(grads, self.current, self.eta)
        else:
            ip, orth = (
                inner_product_test(grads, self.current, self.theta),
                orthogonality_test(grads, self.current, self.nu),
            )
            result = ip if ip.size >= orth.size else orth
            result = TestResult(result.size, max(ip.ratio, orth.ratio))
        self.statistic = result.ratio
        self.current = min(self.max_size, max(self.current, result.size))


_SIZE = Param("size", "int", 64, "examples per step (the starting size for growing policies)", ge=1)
_MAX = Param("max_size", "int", 512, "the largest batch the policy may reach (a critical batch size)", ge=1)
_SCALING = Param(
    "lr_scaling", "choice", "none", "when the batch grows: linear (SGD) or square-root (Adam) LR scaling",
    choices=("none", "linear", "sqrt"),
)  # fmt: skip

_ENTRIES: Sequence[Entry] = [
    Entry("constant", "The same batch size at every step.", "—", (_SIZE,), ConstantBatch),
    Entry(
        "step",
        "Multiply the batch size by `factor` at each milestone (fractions of the run), up to max_size; "
        "an alternative to decaying the learning rate.",
        "Smith et al., Don't Decay the Learning Rate, Increase the Batch Size, ICLR 2018, arXiv:1711.00489",
        (
            _SIZE,
            Param("milestones", "floats", (0.5,), "fractions of the run where the batch grows", gt=0.0, lt=1.0),
            Param("factor", "int", 2, "growth factor at each milestone", ge=1),
            _MAX,
            _SCALING,
        ),
        StepRamp,
    ),
    Entry(
        "linear",
        "Grow the batch size linearly from size to max_size over the run.",
        "Devarakonda et al., AdaBatch, arXiv:1712.02029 (batch ramps)",
        (_SIZE, _MAX, _SCALING),
        LinearRamp,
    ),
    Entry(
        "adaptive",
        "AdAdaGrad: every test_interval steps, per-sample gradients of test_samples examples decide whether the "
        "batch is big enough (norm test, or the augmented inner-product + orthogonality test); it only grows.",
        "Lau, Liu & Kolar, AdAdaGrad, arXiv:2402.11215; Byrd et al. 2012; Bollapragada et al. 2018",
        (
            _SIZE,
            _MAX,
            Param("test", "choice", "norm", "which sampling test", choices=("norm", "augmented")),
            Param("eta", "float", 0.1, "norm test: relative error η", gt=0.0),
            Param("theta", "float", 0.5, "inner-product test: θ", gt=0.0),
            Param("nu", "float", 1.0, "orthogonality test: ν", gt=0.0),
            Param("test_interval", "int", 10, "steps between tests", ge=1),
            Param(
                "test_samples", "int", 64, "examples of the batch the test uses (per-sample gradients cost b×d)", ge=2
            ),
            _SCALING,
        ),
        Adaptive,
    ),
]

BATCH_POLICIES = Registry("batch policy", _ENTRIES)
