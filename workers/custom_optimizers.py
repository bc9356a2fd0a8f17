"""The optimizers no library has (ALGORITHMS.md's "implement" list), and the Muon + AdamW pairing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.optim import Optimizer


class AdaGradNorm(Optimizer):
    """AdaGrad-Norm (Ward, Wu & Bottou 2020): b_t² = b_{t−1}² + ‖g_t‖², θ ← θ − η g_t / b_t.

    One scalar accumulator over every parameter of every group (the global gradient norm), kept in the state of
    the first parameter so that `state_dict()` carries it.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1.0, b0: float = 0.01) -> None:
        if lr <= 0 or b0 <= 0:
            raise ValueError(f"AdaGradNorm needs lr > 0 and b0 > 0, got lr={lr}, b0={b0}")
        super().__init__(params, {"lr": lr, "b0": b0})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return loss
        state = self.state[self.param_groups[0]["params"][0]]
        if "b_squared" not in state:
            state["b_squared"] = torch.tensor(
                self.param_groups[0]["b0"] ** 2, dtype=params[0].dtype, device=params[0].device
            )
        grads = [p.grad for p in params]
        state["b_squared"] += torch.stack(torch._foreach_norm(grads)).square().sum()  # type: ignore[arg-type]
        b = state["b_squared"].sqrt()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.addcdiv_(p.grad, b, value=-group["lr"])
        return loss


class Combined:
    """Several optimizers stepped as one: what the loop sees (param_groups, step, state, state_dict)."""

    def __init__(self, *optimizers: Optimizer) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    @property
    def state(self) -> dict[Any, Any]:
        return {k: v for opt in self.optimizers for k, v in opt.state.items()}

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {str(i): opt.state_dict() for i, opt in enumerate(self.optimizers)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, opt in enumerate(self.optimizers):
            opt.load_state_dict(state[str(i)])

    def __iter__(self) -> Iterator[Optimizer]:
        return iter(self.optimizers)


def muon_params(params: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(Muon, AdamW) split: 2-D hidden weight matrices on Muon; biases and the output layer (the last 2-D
    parameter in model order) on AdamW, as Keller Jordan's recipe prescribes."""
    matrices = [i for i, p in enumerate(params) if p.ndim == 2]
    hidden = set(matrices[:-1])
    return [p for i, p in enumerate(params) if i in hidden], [p for i, p in enumerate(params) if i not in hidden]


def muon_with_adamw(
    params: list[torch.Tensor],
    lr: float,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    adjust_lr: str,
    adamw_lr: float,
    adamw_weight_decay: float,
) -> Combined:
    """torch.optim.Muon on the hidden matrices, torch.optim.AdamW on the rest. The loop scales every group's LR
    by the schedule's factor, so both follow the same schedule from their own peaks."""
    hidden, rest = muon_params(params)
    parts: list[Optimizer] = []
    if hidden:
        parts.append(
            torch.optim.Muon(
                hidden,
                lr=lr,
                momentum=momentum,
                nesterov=nesterov,
                weight_decay=weight_decay,
                adjust_lr_fn=None if adjust_lr == "original" else adjust_lr,
            )
        )
    if rest:
        parts.append(torch.optim.AdamW(rest, lr=adamw_lr, betas=(0.9, 0.95), weight_decay=adamw_weight_decay))
    return Combined(*parts)


class Frugal(Optimizer):
    """FRUGAL (Zmushko et al., ICML 2025): gradient splitting. A state-full Adam on a subspace holding a fraction
    `density` of the parameters, a state-free signSGD (or SGD) on the rest; the subspace changes every
    `update_gap` steps, when the Adam moments are reset (re-projecting them is the paper's other option).

    Subspaces: `blockwise` takes whole tensors, cycling through the model in order, until `density` of all
    coordinates are covered; `random` takes each coordinate with probability `density`, and stores Adam's
    moments only for those coordinates (so optimizer memory really is about `density` of Adam's).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        density: float = 0.25,
        update_gap: int = 200,
        projection: str = "blockwise",
        state_free: str = "signsgd",
        free_lr_scale: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= density <= 1.0 or update_gap < 1 or projection not in ("blockwise", "random"):
            raise ValueError(f"bad FRUGAL settings: density={density}, update_gap={update_gap}, {projection}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "free_lr_scale": free_lr_scale}
        super().__init__(params, defaults)
        self.density, self.update_gap, self.projection, self.state_free = density, update_gap, projection, state_free
        self.generator = torch.Generator().manual_seed(seed)
        self.param_groups[0].setdefault("frugal_step", 0)
        self.param_groups[0].setdefault("frugal_cursor", 0)

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _refresh(self) -> None:
        """Choose the next state-full subspace and reset its Adam state."""
        params, meta = self._params(), self.param_groups[0]
        self.state.clear()
        if self.projection == "random":
            for p in params:
                mask = torch.rand(p.numel(), generator=self.generator) < self.density
                index = mask.nonzero().squeeze(1).to(p.device)
                self.state[p] = {"index": index, "step": 0, "exp_avg": p.new_zeros(len(index)),
                                 "exp_avg_sq": p.new_zeros(len(index))}  # fmt: skip
            return
        budget, total = self.density * sum(p.numel() for p in params), 0
        cursor = meta["frugal_cursor"]
        for k in range(len(params)):
            if total >= budget or budget == 0:
                break
            p = params[(cursor + k) % len(params)]
            self.state[p] = {
                "index": None,
                "step": 0,
                "exp_avg": torch.zeros_like(p),
                "exp_avg_sq": torch.zeros_like(p),
            }
            total += p.numel()
            meta["frugal_cursor"] = (cursor + k + 1) % len(params)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        meta = self.param_groups[0]
        if meta["frugal_step"] % self.update_gap == 0:
            self._refresh()
        meta["frugal_step"] += 1
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            free_lr = lr * group["free_lr_scale"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.reshape(-1)
                flat = p.view(-1)
                state = self.state.get(p)
                free = g.clone()
                if state:
                    index = state["index"]
                    full = g if index is None else g[index]
                    state["step"] += 1
                    m, v, t = state["exp_avg"].view(-1), state["exp_avg_sq"].view(-1), state["step"]
                    m.mul_(beta1).add_(full, alpha=1 - beta1)
                    v.mul_(beta2).addcmul_(full, full, value=1 - beta2)
                    update = (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + eps)
                    if index is None:
                        flat.sub_(update, alpha=lr)
                        continue
                    flat.index_add_(0, index, update, alpha=-lr)
                    free[index] = 0.0
                flat.sub_(free.sign() if self.state_free == "signsgd" else free, alpha=free_lr)
        return loss
