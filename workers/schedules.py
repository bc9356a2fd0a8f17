"""Learning-rate schedules as pure functions of the step.

`lr_at(step, total_steps, lr, **params)` is the learning rate used for step `step` (0-based) of a run of
`total_steps` steps whose peak learning rate is `lr`. The worker calls these before every step, and the
Launch page's preview calls the very same functions, so what you see is what the run does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from workers.registry import Entry, Param, Registry


def constant(step: int, total_steps: int, lr: float) -> float:
    return lr


def step_decay(step: int, total_steps: int, lr: float, step_size: int, gamma: float) -> float:
    """Multiply by `gamma` every `step_size` steps (torch's StepLR)."""
    return lr * gamma ** (step // step_size)


def cosine(step: int, total_steps: int, lr: float, min_lr: float) -> float:
    """Cosine annealing from `lr` to `min_lr` over the run (torch's CosineAnnealingLR with T_max = steps)."""
    progress = step / total_steps
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(step: int, total_steps: int, lr: float, warmup_steps: int, min_lr: float) -> float:
    """Linear warm-up to `lr` over `warmup_steps` steps, then cosine annealing to `min_lr`.

    The first step already uses lr/warmup_steps (a step at LR 0 would be wasted); step warmup_steps-1 uses lr.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    return cosine(step - warmup_steps, total_steps - warmup_steps, lr, min_lr)


def curve(
    name: str, total_steps: int, lr: float, params: dict[str, float], points: int | None = None
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
_WARMUP = Param(
    "warmup_steps",
    "int",
    25,
    "steps of linear warm-up from lr/warmup_steps to lr",
    ge=1,
)

_ENTRIES: Sequence[Entry] = [
    Entry("constant", "The same learning rate at every step.", "—", (), constant),
    Entry(
        "step",
        "Multiply the learning rate by gamma every step_size steps.",
        "He et al., Deep Residual Learning, CVPR 2016 (step decay)",
        (
            Param("step_size", "int", 100, "steps between decays", ge=1),
            Param("gamma", "float", 0.1, "decay factor", gt=0.0, le=1.0),
        ),
        step_decay,
    ),
    Entry(
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
        (_WARMUP, _MIN_LR),
        warmup_cosine,
    ),
]

SCHEDULES = Registry("schedule", _ENTRIES)
