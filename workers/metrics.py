"""The metrics a run logs: names, labels, descriptions. No torch here: exports, the API and the pages read these
names without loading a deep-learning library (the capture itself is workers/flat.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    description: str
    every_step: bool = True  # False: only at evaluations, or only for some optimizers or policies


METRICS: tuple[Metric, ...] = (
    Metric("loss", "train loss", "mini-batch training loss at this step, before the update"),
    Metric("lr", "learning rate", "learning rate used for this step's update"),
    Metric("grad_l2", "‖g‖₂", "global ℓ2 norm of the mini-batch gradient, before the update"),
    Metric("grad_l1", "‖g‖₁", "global ℓ1 norm of the mini-batch gradient"),
    Metric("grad_l1_l2_ratio", "‖g‖₁/(√d‖g‖₂)", "in [1/√d, 1]; √(2/π) ≈ 0.798 for an i.i.d. Gaussian gradient"),
    Metric("update_l2", "‖Δθ‖₂", "ℓ2 norm of this step's parameter change"),
    Metric("param_l2", "‖θ‖₂", "ℓ2 norm of all parameters after the update"),
    Metric("batch_size", "batch size", "examples drawn for this step"),
    Metric("samples_seen", "samples seen", "training examples drawn so far, this step included"),
    Metric("step_time", "step time (s)", "host seconds spent on this step"),
    Metric("wall_time", "wall time (s)", "seconds since the run started training"),
    Metric("optimizer_state_bytes", "optimizer state (bytes)", "memory of the optimizer's state tensors"),
    Metric(
        "batch_test_ratio",
        "batch test ratio",
        "adaptive batch policies: the sampling test's statistic over "
        "its bound at the current batch size (> 1: too noisy, the batch grows)",
        every_step=False,
    ),
    Metric(
        "compression_error_worker",
        "‖e_worker‖",
        "1-bit Adam: mean norm of the workers' error feedback",
        every_step=False,
    ),
    Metric(
        "compression_error_server", "‖e_server‖", "1-bit Adam: norm of the server's error feedback", every_step=False
    ),
    Metric(
        "compression_cosine",
        "cos(m, m_exact)",
        "1-bit Adam: cosine of the compressed momentum with the exact one",
        every_step=False,
    ),
    Metric(
        "replica_dispersion",
        "replica dispersion",
        "DiLoCo/NoLoCo: mean distance of the replicas' weights from their average",
        every_step=False,
    ),
    Metric(
        "val_loss",
        "validation loss",
        "loss on the whole validation set (every eval_every steps and at the end)",
        every_step=False,
    ),
    Metric(
        "val_accuracy", "validation accuracy", "accuracy on the validation set (classification tasks)", every_step=False
    ),
)
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
EVERY_STEP: tuple[str, ...] = tuple(m.name for m in METRICS if m.every_step)
LABELS = {m.name: m.label for m in METRICS}

# Columns of the per-step device row, in order; the ratio is derived on the host at flush time.
DEVICE_COLUMNS = ("loss", "grad_l2", "grad_l1", "update_l2", "param_l2")
