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
