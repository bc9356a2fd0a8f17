"""Scaling laws for learning rate and batch size, as pure functions (the Laws page and tests use them).

- Step Law (Li et al., "Predictable Scale: Part I", arXiv:2503.04715): for N non-embedding parameters and D
  training tokens, η* = 1.79·N^−0.713·D^0.307 and B* = 0.58·D^0.571 tokens. Fitted on ~3,700 AdamW LLM
  pre-training runs (peak LR of their warm-up + decay recipe): a suggested default for language models only.
- LR–batch-size rules (Granziol et al., JMLR 2022): from a base η at batch B₀, η·B/B₀ (linear, SGD) or
  η·√(B/B₀) (square root, adaptive methods such as Adam). `workers.batching.lr_factor` applies them in training.
"""

from __future__ import annotations

import numpy as np

from workers.batching import lr_factor


def step_law(parameters: float, tokens: float) -> tuple[float, float]:
    """(optimal peak LR, optimal batch size in tokens) for N parameters and D tokens."""
    if parameters <= 0 or tokens <= 0:
        raise ValueError("parameters and tokens must be positive")
    return 1.79 * parameters**-0.713 * tokens**0.307, 0.58 * tokens**0.571


def step_law_grid(parameters: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """η* and B* over a grid: rows follow `tokens`, columns `parameters`."""
    n, d = np.meshgrid(parameters, tokens)
    return 1.79 * n**-0.713 * d**0.307, 0.58 * d**0.571


def scaled_lr(base_lr: float, base_batch: int, batch: int, rule: str) -> float:
    """The LR for `batch` when `base_lr` was tuned at `base_batch`: rule none, linear or sqrt."""
    return base_lr * lr_factor(rule, batch, base_batch)


BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024)


def scaling_experiment(
    task: str, base_lrs: dict[str, float], samples: int, train_size: int, base_batch: int = 16
) -> dict[str, list[dict[str, object]]]:
    """Run specs (dicts) for Granziol et al.'s experiment: per rule (linear, sqrt), each optimizer in `base_lrs`
    (its LR tuned at `base_batch`) at every batch size of BATCH_SIZES that fits the training set, its LR scaled
    by the rule, every run seeing `samples` samples."""
    sizes = [b for b in BATCH_SIZES if b <= train_size]
    return {
        rule: [
            {
                "name": f"scaling {rule} {opt} B={size}",
                "task": task,
                "batch": {"size": size},
                "optimizer": {"name": opt, "lr": scaled_lr(base, base_batch, size, rule)},
                "steps": max(1, samples // size),
                "eval_every": max(1, samples // size),
            }
            for opt, base in base_lrs.items()
            for size in sizes
        ]
        for rule in ("linear", "sqrt")
    }
