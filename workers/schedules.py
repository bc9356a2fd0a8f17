"""Learning-rate schedules as pure functions of the step.

`lr_at(step, total_steps, lr, **params)` is the learning rate used for step `step` (0-based) of a run of
`total_steps` steps whose peak learning rate is `lr`. The worker calls these before every step, and the
Launch page's preview calls the very same functions, so what you see is what the run does.

Most schedules take `warmup_steps` (default 0): a linear warm-up from lr/warmup_steps to lr, after which the
schedule runs over the remaining steps as if they were the whole run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import wraps
from typing import Any

from workers.registry import Entry, Param, Registry

Schedule = Callable[..., float]


def constant(step: int, total_steps: int, lr: float) -> float:
    return lr


def range_test(step: int, total_steps: int, lr: float, start_lr: float) -> float:
    """LR range test: an exponential ramp from `start_lr` at the first step to `lr` at the last."""
    if total_steps <= 1:
        return lr
    return start_lr * (lr / start_lr) ** (step / (total_steps - 1))


def step_decay(step: int, total_steps: int, lr: float, step_size: int, gamma: float) -> float:
    """Multiply by `gamma` every `step_size` steps (torch's StepLR)."""
    return lr * gamma ** (step // step_size)


def multistep(step: int, total_steps: int, lr: float, milestones: Sequence[float], gamma: float) -> float:
    """Multiply by `gamma` at each milestone, given as fractions of the run (torch's MultiStepLR)."""
    passed = sum(step >= round(m * total_steps) for m in milestones)
    return lr * gamma**passed


def exponential(step: int, total_steps: int, lr: float, gamma: float) -> float:
    """lr · γ^t (torch's ExponentialLR)."""
    return lr * gamma**step


def cosine(step: int, total_steps: int, lr: float, min_lr: float) -> float:
    """Cosine annealing from `lr` to `min_lr` over the run (torch's CosineAnnealingLR with T_max = steps)."""
    progress = step / total_steps
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_stable_decay(
    step: int, total_steps: int, lr: float, decay_fraction: float, cooldown: str, min_lr: float
) -> float:
    """Hold the peak, then cool down over the last `decay_fraction` of the run: linear, cosine or 1 − √p."""
    decay_steps = max(1, round(decay_fraction * total_steps))
    start = total_steps - decay_steps
    if step < start:
        return lr
    p = (step - start) / decay_steps
    shape = {"linear": 1 - p, "cosine": 0.5 * (1 + math.cos(math.pi * p)), "1-sqrt": 1 - math.sqrt(p)}[cooldown]
    return min_lr + (lr - min_lr) * shape


def one_cycle(
    step: int, total_steps: int, lr: float, pct_start: float, div_factor: float, final_div_factor: float
) -> float:
    """torch's OneCycleLR (two phases, cosine annealing): lr/div → lr over pct_start, then → lr/div/final_div."""
    initial = lr / div_factor
    final = initial / final_div_factor
    peak_step = float(pct_start * total_steps) - 1
    if step <= peak_step:
        start, end, pct = initial, lr, step / peak_step
    else:
        start, end, pct = lr, final, (step - peak_step) / (total_steps - 1 - peak_step)
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def inverse_sqrt(step: int, total_steps: int, lr: float, warmup_steps: int) -> float:
    """Linear warm-up, then lr·√(warmup/t) (Vaswani et al.), with t = step + 1."""
    t = step + 1
    return lr * min(t / warmup_steps, math.sqrt(warmup_steps / t))


def polynomial(step: int, total_steps: int, lr: float, power: float, min_lr: float) -> float:
    """min_lr + (lr − min_lr)(1 − t/T)^power (torch's PolynomialLR when min_lr = 0)."""
    return min_lr + (lr - min_lr) * (1 - step / total_steps) ** power


def cyclic(step: int, total_steps: int, lr: float, min_lr: float, step_size_up: int, mode: str) -> float:
    """Triangular cycles between min_lr and lr (torch's CyclicLR); triangular2 halves each cycle's height."""
    cycle = math.floor(1 + step / (2 * step_size_up))
    x = abs(step / step_size_up - 2 * cycle + 1)
    height = (lr - min_lr) * max(0.0, 1 - x)
    return min_lr + height * (1.0 if mode == "triangular" else 1 / 2 ** (cycle - 1))


def uba(step: int, total_steps: int, lr: float, phi: float, min_lr: float) -> float:
    """UBA, in the form ALGORITHMS.md §1 found in third-party code (UNVERIFIED against the paper).

    u = 1 + cos(πτ), η = min + (max − min)·2u / (2φ + (2 − φ)u). φ = 2 is cosine annealing; φ < 2 decays
    later, φ > 2 earlier; φ = 2·lr/min_lr gives the Chebyshev step sizes of gradient descent on a quadratic.
    """
    u = 1 + math.cos(math.pi * step / total_steps)
    return min_lr + (lr - min_lr) * 2 * u / (2 * phi + (2 - phi) * u)


def hypergradient(step: int, total_steps: int, lr: float, beta: float) -> float:
    """The starting LR: the loop adapts it online (see HypergradientLR), so the preview draws it flat."""
    return lr


class HypergradientLR:
    """Hypergradient descent on the LR (Baydin et al., ICLR 2018): α_t = α_{t−1} + β·g_t·u_{t−1}, where u_{t−1} is
    the previous step's descent direction, −Δθ_{t−1}/α_{t−1} (for SGD, g_{t−1}). The LR grows while successive
    steps agree and shrinks when they oppose; it is kept ≥ 0."""

    def __init__(self, lr: float, beta: float) -> None:
        self.lr, self.beta = lr, beta

    def observe(self, grad_dot_last_update: float, last_lr: float) -> float:
        """`grad_dot_last_update` = g_t · Δθ_{t−1}, taken with `last_lr`; returns the LR for step t."""
        if last_lr > 0:
            self.lr = max(0.0, self.lr - self.beta * grad_dot_last_update / last_lr)
        return self.lr


def with_warmup(fn: Schedule) -> Schedule:
    """Precede `fn` by a linear warm-up of `warmup_steps` steps; `fn` then runs over the remaining steps."""

    @wraps(fn)
    def scheduled(step: int, total_steps: int, lr: float, warmup_steps: int = 0, **params: Any) -> float:
        if step < warmup_steps:
            return lr * (step + 1) / warmup_steps
        return fn(step - warmup_steps, total_steps - warmup_steps, lr, **params)

    return scheduled


def warmup_cosine(step: int, total_steps: int, lr: float, warmup_steps: int, min_lr: float) -> float:
    """Linear warm-up to `lr` over `warmup_steps` steps, then cosine annealing to `min_lr`.

    The first step already uses lr/warmup_steps (a step at LR 0 would be wasted); step warmup_steps-1 uses lr.
    """
    return with_warmup(cosine)(step, total_steps, lr, warmup_steps=warmup_steps, min_lr=min_lr)


def curve(
    name: str, total_steps: int, lr: float, params: dict[str, Any], points: int | None = None
) -> tuple[list[int], list[float]]:
    """The schedule as (logged step, LR) pairs: what the preview draws and what the worker will log.

    Logged steps are 1-based (step k uses the LR for k − 1 steps taken). With `points`, about that many
    evenly spaced steps, always including the first and the last.
    """
    fn = SCHEDULES[name].build
    stride = 1 if points is None else max(1, math.ceil(total_steps / points))
    taken = sorted({*range(0, total_steps, stride), total_steps - 1})
    return [t + 1 for t in taken], [fn(t, total_steps, lr, **params) for t in taken]


_MIN_LR = Param("min_lr", "float", 0.0, "learning rate reached at the end of the run", ge=0.0)
_WARMUP = Param("warmup_steps", "int", 0, "steps of linear warm-up before the schedule (0 = none)", ge=0)
_GAMMA = Param("gamma", "float", 0.1, "decay factor", gt=0.0, le=1.0)


def _entry(name: str, description: str, paper: str, params: tuple[Param, ...], fn: Schedule) -> Entry:
    """A schedule that can be preceded by a linear warm-up (the `warmup_steps` parameter)."""
    return Entry(name, description, paper, (*params, _WARMUP), with_warmup(fn))


_ENTRIES: Sequence[Entry] = [
    _entry("constant", "The same learning rate at every step.", "—", (), constant),
    _entry(
        "step",
        "Multiply the learning rate by gamma every step_size steps.",
        "He et al., Deep Residual Learning, CVPR 2016 (step decay)",
        (Param("step_size", "int", 100, "steps between decays", ge=1), _GAMMA),
        step_decay,
    ),
    _entry(
        "multistep",
        "Multiply the learning rate by gamma at each milestone (fractions of the run, e.g. 0.5, 0.75).",
        "Goyal et al., arXiv:1706.02677 (decay at fixed epochs)",
        (Param("milestones", "floats", (0.5, 0.75), "fractions of the run where the LR drops", gt=0.0, lt=1.0), _GAMMA),
        multistep,
    ),
    _entry(
        "exponential",
        "Multiply the learning rate by gamma every step.",
        "—",
        (Param("gamma", "float", 0.995, "per-step decay factor", gt=0.0, le=1.0),),
        exponential,
    ),
    _entry(
        "cosine",
        "Half a cosine from the peak learning rate down to min_lr at the end of the run.",
        "Loshchilov & Hutter, SGDR, ICLR 2017, arXiv:1608.03983",
        (_MIN_LR,),
        cosine,
    ),
    Entry(
        "warmup-cosine",
        "Linear warm-up to the peak learning rate, then cosine annealing to min_lr.",
        "Goyal et al., arXiv:1706.02677 (warm-up); Loshchilov & Hutter, arXiv:1608.03983 (cosine)",
        (Param("warmup_steps", "int", 25, "steps of linear warm-up from lr/warmup_steps to lr", ge=1), _MIN_LR),
        warmup_cosine,
    ),
    _entry(
        "wsd",
        "Warmup-stable-decay: hold the peak, then cool down over the last decay_fraction of the run "
        "(linear, cosine, or 1 − √p).",
        "Hu et al., MiniCPM, arXiv:2404.06395; Hägele et al., arXiv:2405.18392 (1 − √p cool-down)",
        (
            Param("decay_fraction", "float", 0.2, "fraction of the run spent cooling down", gt=0.0, le=1.0),
            Param("cooldown", "choice", "1-sqrt", "shape of the cool-down", choices=("linear", "cosine", "1-sqrt")),
            _MIN_LR,
        ),
        warmup_stable_decay,
    ),
    _entry(
        "one-cycle",
        "Rise from lr/div_factor to lr over pct_start of the run, then anneal to lr/div_factor/final_div_factor "
        "(cosine phases, as torch's OneCycleLR).",
        "Smith & Topin, Super-Convergence, arXiv:1708.07120",
        (
            Param("pct_start", "float", 0.3, "fraction of the run spent rising", gt=0.0, lt=1.0),
            Param("div_factor", "float", 25.0, "initial lr = lr / div_factor", gt=0.0),
            Param(
                "final_div_factor", "float", 1e4, "final lr = initial lr / final_div_factor", gt=0.0, le=1e9, log=True
            ),
        ),
        one_cycle,
    ),
    Entry(
        "inverse-sqrt",
        "Linear warm-up, then decay as 1/√step: the original Transformer schedule.",
        "Vaswani et al., Attention Is All You Need, NeurIPS 2017",
        (Param("warmup_steps", "int", 100, "steps until the peak", ge=1),),
        inverse_sqrt,
    ),
    _entry(
        "polynomial",
        "Decay as (1 − t/T)^power to min_lr: power 1 is linear decay.",
        "—",
        (Param("power", "float", 1.0, "exponent of the decay", gt=0.0), _MIN_LR),
        polynomial,
    ),
    _entry(
        "cyclic",
        "Triangular cycles between min_lr and the peak; triangular2 halves the height every cycle.",
        "Smith, Cyclical Learning Rates, WACV 2017, arXiv:1506.01186",
        (
            Param("min_lr", "float", 1e-4, "bottom of each cycle", ge=0.0),
            Param("step_size_up", "int", 100, "steps from bottom to top (half a cycle)", ge=1),
            Param("mode", "choice", "triangular", "cycle shape", choices=("triangular", "triangular2")),
        ),
        cyclic,
    ),
    Entry(
        "hypergradient",
        "Hypergradient descent: the LR itself learns online from the dot product of successive gradients "
        "(steps that agree raise it, steps that oppose lower it). lr is the starting value.",
        "Baydin et al., Online Learning Rate Adaptation with Hypergradient Descent, ICLR 2018, arXiv:1703.04782",
        (Param("beta", "float", 1e-4, "β: the LR's own learning rate", gt=0.0, le=1.0, log=True),),
        hypergradient,
        {"online": HypergradientLR},
    ),
    replace(
        _entry(
            "range-test",
            "LR range test: the LR grows exponentially from start_lr to the optimizer's lr (its end, e.g. 10) over the "
            "run, which ends once the smoothed loss passes 4× its lowest; loss against LR shows where it works.",
            "Smith, Cyclical Learning Rates for Training Neural Networks, WACV 2017, arXiv:1506.01186",
            (Param("start_lr", "float", 1e-7, "the LR at the first step", gt=0.0, le=100.0, log=True),),
            range_test,
        ),
        extra={"stop_when_loss_exceeds": 4.0},
    ),
    _entry(
        "uba",
        "UBA (unverified form): a budget-aware decay with one knob φ; φ = 2 is cosine, φ < 2 decays later, "
        "φ > 2 earlier. Formula from third-party code, not yet checked against the paper (ALGORITHMS.md §1).",
        "Tang et al., Unified Budget-Aware schedule, NeurIPS 2025, arXiv:2505.24452",
        (Param("phi", "float", 2.0, "shape: 2 = cosine; larger decays earlier", gt=0.0), _MIN_LR),
        uba,
    ),
]

RULES = {
    "constant": "η_t = η",
    "step": "η_t = η·γ^⌊t/s⌋",
    "multistep": "η_t = η·γ^(milestones passed)",
    "exponential": "η_t = η·γ^t",
    "cosine": "η_t = η_min + (η − η_min)(1 + cos(πt/T))/2",
    "warmup-cosine": "η(t+1)/W for t < W, then cosine over T − W",
    "wsd": "η until the last fraction d of the run, then η_min + (η − η_min)·f(p), f = 1−p, (1+cos πp)/2 or 1−√p",
    "one-cycle": "cosine from η/div up to η over pct_start·T, then cosine down to η/(div·final_div)",
    "inverse-sqrt": "η·min(t/W, √(W/t)), t = step + 1",
    "polynomial": "η_min + (η − η_min)(1 − t/T)^p",
    "cyclic": "η_min + (η − η_min)·max(0, 1 − |t/s − 2c + 1|), c = ⌊1 + t/2s⌋ (÷2^(c−1) for triangular2)",
    "hypergradient": "α_t = α_{t−1} + β·g_t·u_{t−1},  u_{t−1} = −Δθ_{t−1}/α_{t−1}  (online; g·g for SGD)",
    "range-test": "η_t = η_0·(η/η_0)^(t/(T−1)),  η_0 = start_lr",
    "uba": "u = 1 + cos(πt/T);  η_t = η_min + (η − η_min)·2u/(2φ + (2 − φ)u)  (unverified form)",
}

SCHEDULES = Registry("schedule", _ENTRIES, RULES)
