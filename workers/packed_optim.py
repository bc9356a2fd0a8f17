"""Vectorised optimizers for packed sweeps: K runs trained as one model whose parameters carry a member axis.

A pack's parameters are stacked tensors `[K, *shape]` (as from `torch.func.stack_module_state`); member k's
hyper-parameters are the registry's params of its own run (`workers.optimizers.OPTIMIZERS[name]`). Each update
here mirrors, member by member, what the registry's single-run optimizer of the same name does:

- `sgd`, `adam`, `adamw`, `rmsprop`, `adagrad`: torch.optim's single-tensor code path (coupled L2 added to the
  gradient; AdamW's decay θ ← θ(1 − ηλ) before the moments; Adam's bias corrections and ε outside the square
  root; SGD's buffer starts as the first gradient, dampening 0);
- `lion`, `signsgd`: pytorch_optimizer's `Lion` / `SignSGD` with `weight_decouple=True` (θ ← θ(1 − ηλ) first;
  Signum's buffer is `m.lerp_(g, 1 − β)`, and momentum 0 is plain signSGD on the raw gradient).

Scalars that the single run computes in Python doubles (1 − β, bias corrections, η/(1 − β1^t), 1 − ηλ) are
computed here in float64 over the member axis and cast to the parameters' dtype, as the library casts a Python
scalar. A member's trajectory matches its single run to a few ulps (the library's fused kernels, e.g. addcdiv,
round some steps differently; measured on CPU over 50 steps: ≤ 8e-16 in float64, ≤ 4e-7 in float32); the
sign-based updates (Lion, signSGD) match bit for bit.

`step(lrs)` takes the step's learning rate per member (a `[K]` tensor: each member's schedule value); `active`
masks members that stopped (diverged, cancelled, early-stopped): their parameters, state and step count stay
as they are. Nothing in a step reads a value back to the host.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch

from workers.optimizers import OPTIMIZERS

Tensor = torch.Tensor
Coeffs = dict[str, Tensor]  # name → [K] (float64 on the pack's device), or a [K, 1, …] view cast for one tensor


class PackedOptimizer:
    """Base class: per-member hyper-parameters as `[K]` tensors, per-member step counts, masked commits.

    Subclasses name the registry entry (`name`), their state tensors (`state_keys`), how to initialise them,
    the per-step coefficients over the member axis (`coefficients`) and the update of one stacked tensor
    (`update`), written out of place: the base commits it under the `active` mask.
    """

    name: ClassVar[str]
    state_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Sequence[Tensor], hypers: Sequence[Mapping[str, Any]]) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("a packed optimizer needs at least one parameter tensor")
        self.k = len(hypers)
        if self.k < 1:
            raise ValueError("a pack needs at least one member's hyper-parameters")
        self.device = self.params[0].device
        for i, p in enumerate(self.params):
            if p.dim() < 1 or p.shape[0] != self.k:
                raise ValueError(
                    f"parameter {i} has shape {tuple(p.shape)}; expected a leading member axis of {self.k}"
                )
            if not p.is_floating_point():
                raise ValueError(f"parameter {i} is {p.dtype}; a packed optimizer needs floating-point parameters")
            if p.device != self.device:
                raise ValueError(f"parameter {i} is on {p.device}, parameter 0 on {self.device}")
        # the dtype of per-member scalars: float64, like the single run's Python floats (MPS has no float64)
        self.scalar_dtype = torch.float32 if self.device.type == "mps" else torch.float64
        members = [self._member_hyper(dict(h), i) for i, h in enumerate(hypers)]
        self.hyper: dict[str, Tensor] = {
            key: torch.tensor([float(m[key]) for m in members], dtype=self.scalar_dtype, device=self.device)
            for key in OPTIMIZERS[self.name].defaults
        }
        self.steps = torch.zeros(self.k, dtype=self.scalar_dtype, device=self.device)  # updates taken, per member
        self.state: list[dict[str, Tensor]] = [self.init_state(p) for p in self.params]
        self._active: Tensor | None = None  # None: every member is active (no masking cost)

    # -- hyper-parameters ------------------------------------------------------------------------------------
    def _member_hyper(self, given: dict[str, Any], index: int) -> dict[str, Any]:
        defaults = OPTIMIZERS[self.name].defaults
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise ValueError(
                f"member {index}: unknown {self.name} hyper-parameter(s) {unknown}; known: {sorted(defaults)}"
            )
        merged = {**defaults, **given}
        for key, value in merged.items():
            if not isinstance(value, int | float):
                raise ValueError(f"member {index}: {self.name} hyper-parameter {key}={value!r} is not a number")
        self.check(merged, index)
        return merged

    def check(self, hyper: dict[str, Any], index: int) -> None:
        """Refuse a member's hyper-parameters that the single-run library would refuse."""

    # -- the mask of members that are updated ----------------------------------------------------------------
    @property
    def active(self) -> Tensor:
        """`[K]` bool: members updated by `step`. Stopped members keep their parameters, state and step count."""
        if self._active is None:
            return torch.ones(self.k, dtype=torch.bool, device=self.device)
        return self._active

    @active.setter
    def active(self, mask: Tensor | None) -> None:
        if mask is None:
            self._active = None
            return
        if tuple(mask.shape) != (self.k,):
            raise ValueError(f"active mask has shape {tuple(mask.shape)}; expected ({self.k},)")
        self._active = mask.to(device=self.device, dtype=torch.bool)

    # -- the step --------------------------------------------------------------------------------------------
    def init_state(self, p: Tensor) -> dict[str, Tensor]:
        return {key: torch.zeros_like(p, memory_format=torch.preserve_format) for key in self.state_keys}

    def coefficients(self, lr: Tensor, step: Tensor) -> Coeffs:
        """This step's per-member scalars, `[K]` in `scalar_dtype`, from `self.hyper`, `lr` and the step count."""
        raise NotImplementedError

    def update(self, p: Tensor, g: Tensor, state: dict[str, Tensor], c: Coeffs) -> tuple[Tensor, dict[str, Tensor]]:
        """The new value of one stacked tensor and of its state; `c` holds `[K, 1, …]` views in `p`'s dtype."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, lrs: Tensor | None = None) -> None:
        """One update of every active member; `lrs` is each member's LR for this step (default: its `lr`)."""
        if lrs is None:
            lr = self.hyper["lr"]
        else:
            if tuple(lrs.shape) != (self.k,):
                raise ValueError(f"lrs has shape {tuple(lrs.shape)}; expected ({self.k},)")
            lr = lrs.to(device=self.device, dtype=self.scalar_dtype)
        mask = self._active
        step = self.steps + 1
        coeffs = self.coefficients(lr, step)
        self.steps.copy_(step if mask is None else torch.where(mask, step, self.steps))
        views: dict[tuple[torch.dtype, int], Coeffs] = {}
        for p, state in zip(self.params, self.state, strict=True):
            if p.grad is None:
                continue
            key = (p.dtype, p.dim())
            if key not in views:
                shape = (self.k,) + (1,) * (p.dim() - 1)
                cast = {name: v.to(p.dtype) if v.is_floating_point() else v for name, v in coeffs.items()}
                views[key] = {name: v.view(shape) for name, v in cast.items()}
            c = views[key]
            new_p, new_state = self.update(p, p.grad, state, c)
            if mask is None:
                p.copy_(new_p)
                for name, value in new_state.items():
                    state[name].copy_(value)
            else:
                m = mask.view((self.k,) + (1,) * (p.dim() - 1))
                p.copy_(torch.where(m, new_p, p))
                for name, value in new_state.items():
                    state[name].copy_(torch.where(m, value, state[name]))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    # -- checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only (safe for `torch.load(weights_only=True)`): step counts, mask, hyper-parameters, state."""
        out: dict[str, Tensor] = {"steps": self.steps.clone(), "active": self.active.clone()}
        out.update({f"hyper.{key}": value.clone() for key, value in self.hyper.items()})
        for i, state in enumerate(self.state):
            out.update({f"state.{i}.{key}": value.clone() for key, value in state.items()})
        return out

    def load_state_dict(self, saved: Mapping[str, Tensor]) -> None:
        expected = set(self.state_dict())
        if set(saved) != expected:
            missing, extra = sorted(expected - set(saved)), sorted(set(saved) - expected)
            raise ValueError(f"{self.name} packed state does not fit: missing {missing}, unexpected {extra}")
        targets: dict[str, Tensor] = {"steps": self.steps}
        targets.update({f"hyper.{key}": value for key, value in self.hyper.items()})
        for i, state in enumerate(self.state):
            targets.update({f"state.{i}.{key}": value for key, value in state.items()})
        for key, target in targets.items():
            if saved[key].shape != target.shape:
                raise ValueError(f"{key} has shape {tuple(saved[key].shape)}; expected {tuple(target.shape)}")
        for key, target in targets.items():
            target.copy_(saved[key])
        self.active = saved["active"]


def _lerp(start: Tensor, end: Tensor, weight: Tensor) -> Tensor:
    """`start.lerp(end, weight)` with a tensor weight (the same kernel formula as a scalar weight)."""
    return torch.lerp(start, end, weight)


class PackedSGD(PackedOptimizer):
    """torch.optim.SGD (dampening 0): b ← μb + g, g including λθ; θ ← θ − η·(g + μb if Nesterov else b)."""

    name = "sgd"
    state_keys = ("momentum_buffer",)

    def check(self, hyper: dict[str, Any], index: int) -> None:
        if hyper["nesterov"] and hyper["momentum"] <= 0:
            raise ValueError(f"member {index}: Nesterov momentum needs momentum > 0")

    def coefficients(self, lr: Tensor, step: Tensor) -> Coeffs:
        h = self.hyper
        return {
            "neg_lr": -lr,
            "wd": h["weight_decay"],
            "momentum": h["momentum"],
            "nesterov": h["nesterov"] != 0,
        }

    def update(self, p: Tensor, g: Tensor, state: dict[str, Tensor], c: Coeffs) -> tuple[Tensor, dict[str, Tensor]]:
        g = g + c["wd"] * p
        # torch starts the buffer as a copy of the first gradient: μ·0 + g is that, exactly
        buf = state["momentum_buffer"] * c["momentum"] + g
        direction = torch.where(c["nesterov"], g + c["momentum"] * buf, buf)  # momentum 0: buf is g
        return p + c["neg_lr"] * direction, {"momentum_buffer": buf}


class PackedAdam(PackedOptimizer):
    """torch.optim.Adam (amsgrad off): coupled L2; m̂/(√v̂ + ε) with ε outside the root, as the library."""

    name = "adam"
    state_keys = ("exp_avg", "exp_avg_sq")
    decoupled: ClassVar[bool] = False

    def coefficients(self, lr: Tensor, step: Tensor) -> Coeffs:
        h = self.hyper
        beta1, beta2 = h["beta1"], h["beta2"]
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        return {
            "decay": 1 - lr * h["weight_decay"],
            "wd": h["weight_decay"],
            "one_minus_beta1": 1 - beta1,
            "beta2": beta2,
            "one_minus_beta2": 1 - beta2,
            "neg_step_size": -(lr / bias_correction1),
            "bias_correction2_sqrt": bias_correction2.sqrt(),
            "eps": h["eps"],
        }

    def update(self, p: Tensor, g: Tensor, state: dict[str, Tensor], c: Coeffs) -> tuple[Tensor, dict[str, Tensor]]:
        if self.decoupled:
            p = p * c["decay"]
        else:
            g = g + c["wd"] * p
        exp_avg = _lerp(state["exp_avg"], g, c["one_minus_beta1"])
        exp_avg_sq = state["exp_avg_sq"] * c["beta2"] + c["one_minus_beta2"] * g * g
        denom = exp_avg_sq.sqrt() / c["bias_correction2_sqrt"] + c["eps"]
        return p + c["neg_step_size"] * exp_avg / denom, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}


class PackedAdamW(PackedAdam):
    """torch.optim.AdamW: θ ← θ(1 − ηλ), then Adam's step (without the L2 term)."""

    name = "adamw"
    decoupled = True


class PackedRMSprop(PackedOptimizer):
    """torch.optim.RMSprop (not centered): v ← αv + (1−α)g²; θ ← θ − η·g/(√v + ε), or through a momentum buffer."""

    name = "rmsprop"
    state_keys = ("square_avg", "momentum_buffer")

    def coefficients(self, lr: Tensor, step: Tensor) -> Coeffs:
        h = self.hyper
        return {
            "neg_lr": -lr,
            "wd": h["weight_decay"],
            "alpha": h["alpha"],
            "one_minus_alpha": 1 - h["alpha"],
            "eps": h["eps"],
            "momentum": h["momentum"],
            "has_momentum": h["momentum"] > 0,
        }

    def update(self, p: Tensor, g: Tensor, state: dict[str, Tensor], c: Coeffs) -> tuple[Tensor, dict[str, Tensor]]:
        g = g + c["wd"] * p
        square_avg = state["square_avg"] * c["alpha"] + c["one_minus_alpha"] * g * g
        avg = square_avg.sqrt() + c["eps"]
        buf = state["momentum_buffer"] * c["momentum"] + g / avg
        new_p = torch.where(c["has_momentum"], p + c["neg_lr"] * buf, p + c["neg_lr"] * g / avg)
        buf = torch.where(c["has_momentum"], buf, state["momentum_buffer"])  # the library keeps none without μ
        return new_p, {"square_avg": square_avg, "momentum_buffer": buf}


class PackedAdagrad(PackedOptimizer):
    """torch.optim.Adagrad (lr_decay 0): G ← G + g², starting at initial_accumulator_value; θ ← θ − η·g/(√G + ε)."""

    name = "adagrad"
    state_keys = ("sum",)

    def init_state(self, p: Tensor) -> dict[str, Tensor]:
        start = self.hyper["initial_accumulator_value"].to(p.dtype).view((self.k,) + (1,) * (p.dim() - 1))
        return {"sum": (torch.zeros_like(p) + start).contiguous()}

    def coefficients(self, lr: Tensor, step: Tensor) -> Coeffs:
        return {"neg_lr": -lr, "wd": self.hyper["weight_decay"], "eps": self.hyper["eps"]}

    def update(self, p: Tensor, g: Tensor, state: dict[str, Tensor], c: Coeffs) -> tuple[Tensor, dict[str, Tensor]]:
        g = g + c["wd"] * p
        total = state["sum"] + g * g
        std = total.sqrt() + c["eps"]
        return p + c["neg_lr"] * g / std, {"sum": total}


class PackedLion(PackedOptimizer):
    """pytorch_optimizer.Lion, decay decoupled: θ ← θ(1 − ηλ); θ ← θ − η·sign(lerp(m, g, 1−β1));
    m ← lerp(m, g, 1−β2)."""

    name = "lion"
    state_keys = ("exp_avg",)

    def coefficients(self, lr: Tensor, step: Tensor) -> Coeffs:
        h = self.hyper
        return {
            "decay": 1.0 - h["weight_decay"] * lr,
            "neg_lr": -lr,
            "one_minus_beta1": 1.0 - h["beta1"],
            "one_minus_beta2": 1.0 - h["beta2"],
        }

    def update(self, p: Tensor, g: Tensor, state: dict[str, Tensor], c: Coeffs) -> tuple[Tensor, dict[str, Tensor]]:
        p = p * c["decay"]
        direction = _lerp(state["exp_avg"], g, c["one_minus_beta1"]).sign()
        exp_avg = _lerp(state["exp_avg"], g, c["one_minus_beta2"])
        return p + c["neg_lr"] * direction, {"exp_avg": exp_avg}


class PackedSignSGD(PackedOptimizer):
    """pytorch_optimizer.SignSGD (decoupled decay): θ ← θ(1 − ηλ); m ← lerp(m, g, 1−β); θ ← θ − η·sign(m or g)."""

    name = "signsgd"
    state_keys = ("momentum_buffer",)

    def coefficients(self, lr: Tensor, step: Tensor) -> Coeffs:
        h = self.hyper
        return {
            "decay": 1.0 - h["weight_decay"] * lr,
            "neg_lr": -lr,
            "one_minus_momentum": 1.0 - h["momentum"],
            "has_momentum": h["momentum"] > 0,
        }

    def update(self, p: Tensor, g: Tensor, state: dict[str, Tensor], c: Coeffs) -> tuple[Tensor, dict[str, Tensor]]:
        p = p * c["decay"]
        buf = _lerp(state["momentum_buffer"], g, c["one_minus_momentum"])
        direction = torch.where(c["has_momentum"], buf, g).sign()  # momentum 0: plain signSGD, no buffer
        buf = torch.where(c["has_momentum"], buf, state["momentum_buffer"])
        return p + c["neg_lr"] * direction, {"momentum_buffer": buf}


_CLASSES: list[type[PackedOptimizer]] = [
    PackedSGD,
    PackedAdam,
    PackedAdamW,
    PackedLion,
    PackedSignSGD,
    PackedRMSprop,
    PackedAdagrad,
]
PACKED: dict[str, type[PackedOptimizer]] = {cls.name: cls for cls in _CLASSES}
SUPPORTED: set[str] = set(PACKED)


def supported(spec_optimizer_name: str) -> bool:
    """Whether runs with this registry optimizer can train in a pack (the others run alone)."""
    return spec_optimizer_name in PACKED


def build(name: str, params: Sequence[Tensor], hypers: Sequence[Mapping[str, Any]]) -> PackedOptimizer:
    """The packed optimizer of registry entry `name` over stacked `params`, member k with `hypers[k]`."""
    if name not in PACKED:
        raise KeyError(f"optimizer {name!r} has no packed version; packed: {', '.join(PACKED)}")
    factory: Callable[..., PackedOptimizer] = PACKED[name]
    return factory(params, hypers)
