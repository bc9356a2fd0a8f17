"""Early stopping inside a sweep: stop a run that is unlikely to win, and say why.

Two rules, chosen per sweep (`early_stopping:` in the sweep spec); diverged runs always stop at once (the loop).

- **median** (Golovin et al., "Google Vizier", 2017): at each check step s (every `every` steps from
  `grace_steps` on), a run stops if its running mean of the metric over steps ≤ s is worse than the median of the
  running means, up to the same s, of the sweep's other runs that have reached s. Needs `min_runs` such runs.
- **asha** (Li et al., "A System for Massively Parallel Hyperparameter Tuning", 2020): rungs at
  r·η^k steps (r = `grace_steps`, η = `reduction_factor`). At a rung a run continues only if its value is among
  the best ⌊n/η⌋ of the n values recorded at that rung so far, itself included. While fewer than η runs have
  reached the rung, only the best so far continues (as optuna's SuccessiveHalvingPruner, since a stopped run is
  never resumed). A run's value at step s is the mean of the metric over the last max(1, s/10) steps (one noisy
  minibatch loss would be a poor judge).

The rules are pure functions of numbers; `workers/tasks.py` asks the store for the sweep's numbers.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class EarlyStopping(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: Literal["none", "median", "asha"] = "none"
    metric: str = Field("loss", min_length=1, max_length=64)
    mode: Literal["min", "max"] = Field("min", description="min: lower is better (losses); max: accuracies")
    grace_steps: int = Field(50, ge=1, description="no check before this step; ASHA's first rung")
    every: int = Field(50, ge=1, description="median: steps between checks")
    min_runs: int = Field(3, ge=1, description="median: other runs that must have reached the step")
    reduction_factor: int = Field(3, ge=2, description="ASHA's η: keep the best 1/η at each rung")

    @model_validator(mode="after")
    def _known_metric(self) -> EarlyStopping:
        from workers.metrics import METRIC_NAMES

        if self.metric not in METRIC_NAMES:
            raise ValueError(f"unknown metric {self.metric!r}; one of {', '.join(METRIC_NAMES)}")
        return self

    def checkpoints(self, steps: int) -> Iterator[int]:
        """The steps at which a run of `steps` steps is judged (never the last: a finished run just finishes)."""
        if self.rule == "median":
            yield from range(self.grace_steps, steps, self.every)
        elif self.rule == "asha":
            rung = self.grace_steps
            while rung < steps:
                yield rung
                rung *= self.reduction_factor

    def window(self, step: int) -> tuple[int, int]:
        """The steps (lo, hi] whose mean judges a run at `step`."""
        if self.rule == "median":
            return 0, step
        return step - max(1, step // 10), step


def _worse(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "min" else a < b


def median_rule(own: float, others: Sequence[float], mode: str, min_runs: int) -> str | None:
    """The reason to stop, or None to go on. `own`/`others`: running means up to the same step."""
    if len(others) < min_runs:
        return None
    median = statistics.median(others)
    if _worse(own, median, mode):
        return f"running mean {own:.4g} is worse than the median {median:.4g} of {len(others)} other runs"
    return None


def asha_rule(own: float, others: Sequence[float], mode: str, reduction_factor: int) -> str | None:
    """The reason to stop, or None to be promoted to the next rung. `others`: values at this rung so far."""
    values = sorted([own, *others], reverse=mode == "max")
    keep = max(1, len(values) // reduction_factor)
    cutoff = values[keep - 1]
    if _worse(own, cutoff, mode):
        return f"value {own:.4g} is not in the best {keep} of {len(values)} runs at this rung (cut-off {cutoff:.4g})"
    return None


def decide(config: EarlyStopping, step: int, own: float, others: Sequence[float]) -> str | None:
    """Apply the sweep's rule at `step`; the reason names the rule, the metric and the step."""
    if config.rule == "median":
        reason = median_rule(own, others, config.mode, config.min_runs)
    elif config.rule == "asha":
        reason = asha_rule(own, others, config.mode, config.reduction_factor)
    else:
        return None
    return f"{config.rule} rule at step {step} on {config.metric}: {reason}" if reason else None
