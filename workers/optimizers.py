"""Optimizer registry. Each entry wraps a library class (torch.optim here) and builds it from the spec.

`build(params, **hyper)` returns a torch optimizer. The learning rate is set by the loop before every step
from the schedule, so `lr` here is only the initial value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from workers.registry import Entry, Param, Registry

if TYPE_CHECKING:
    import torch


def _sgd(
    params: Iterable[torch.Tensor],
    lr: float,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
) -> Any:
    import torch

    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


def _adam(
    params: Iterable[torch.Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> Any:
    import torch

    return torch.optim.Adam(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)


def _adamw(
    params: Iterable[torch.Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> Any:
    import torch

    return torch.optim.AdamW(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)


def _adagrad(
    params: Iterable[torch.Tensor],
    lr: float,
    eps: float,
    weight_decay: float,
    initial_accumulator_value: float,
) -> Any:
    import torch

    return torch.optim.Adagrad(
        params,
        lr=lr,
        eps=eps,
        weight_decay=weight_decay,
        initial_accumulator_value=initial_accumulator_value,
    )


def _lr(default: float) -> Param:
    return Param(
        "lr",
        "float",
        default,
        "peak learning rate (the schedule scales it)",
        gt=0.0,
        log=True,
    )


def _wd(default: float, what: str) -> Param:
    return Param("weight_decay", "float", default, what, ge=0.0)


_BETA1 = Param("beta1", "float", 0.9, "first-moment decay β1", ge=0.0, lt=1.0)
_BETA2 = Param("beta2", "float", 0.999, "second-moment decay β2", ge=0.0, lt=1.0)
_EPS = Param("eps", "float", 1e-8, "added to the denominator for stability", gt=0.0, log=True)


def _check_sgd(hyper: dict[str, Any]) -> list[tuple[str, str]]:
    if hyper["nesterov"] and hyper["momentum"] <= 0:
        return [("nesterov", "Nesterov momentum needs momentum > 0")]
    return []


_ENTRIES: Sequence[Entry] = [
    Entry(
        "sgd",
        "Stochastic gradient descent with optional heavy-ball or Nesterov momentum; weight decay is coupled "
        "(added to the gradient).",
        "Polyak 1964; Sutskever et al., ICML 2013",
        (
            _lr(0.05),
            Param(
                "momentum",
                "float",
                0.9,
                "momentum factor μ (0 = plain SGD)",
                ge=0.0,
                lt=1.0,
            ),
            Param("nesterov", "bool", False, "use Nesterov momentum"),
            _wd(0.0, "L2 penalty added to the gradient"),
        ),
        _sgd,
        {"check": _check_sgd},
    ),
    Entry(
        "adam",
        "Adam: per-coordinate steps from bias-corrected first and second moment estimates; weight decay is "
        "coupled (L2).",
        "Kingma & Ba, ICLR 2015, arXiv:1412.6980",
        (_lr(1e-3), _BETA1, _BETA2, _EPS, _wd(0.0, "L2 penalty added to the gradient")),
        _adam,
    ),
    Entry(
        "adamw",
        "AdamW: Adam with decoupled weight decay (θ ← θ − ηλθ applied apart from the adaptive step).",
        "Loshchilov & Hutter, ICLR 2019, arXiv:1711.05101",
        (
            _lr(1e-3),
            _BETA1,
            _BETA2,
            _EPS,
            _wd(0.01, "decoupled weight decay λ (multiplied by the LR)"),
        ),
        _adamw,
    ),
    Entry(
        "adagrad",
        "AdaGrad: steps scaled by the root of the sum of all past squared gradients, per coordinate.",
        "Duchi, Hazan & Singer, JMLR 2011",
        (
            _lr(0.01),
            Param(
                "eps",
                "float",
                1e-10,
                "added to the denominator for stability",
                gt=0.0,
                log=True,
            ),
            _wd(0.0, "L2 penalty added to the gradient"),
            Param(
                "initial_accumulator_value",
                "float",
                0.0,
                "starting value of the sum of squares",
                ge=0.0,
            ),
        ),
        _adagrad,
    ),
]

OPTIMIZERS = Registry("optimizer", _ENTRIES)
