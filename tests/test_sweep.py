"""Sweep expansion: grid counts, random ranges on a log scale, seeds, switching components, errors by run."""

from __future__ import annotations

import math
import statistics

import pytest

from tests.conftest import Stack
from workers.spec import SpecError
from workers.sweep import MAX_RUNS, build, expand, load_sweep

GRID = """
name: lr-bs
base: {task: digits-mlp, optimizer: adamw, steps: 50, eval_every: 25}
grid:
  optimizer.lr: [0.001, 0.01]
  batch.size: [32, 128]
  seed: [0, 1]
"""


def test_grid_is_every_combination() -> None:
    specs = build(load_sweep(GRID))
    assert len(specs) == 8
    combos = {(s.optimizer.lr, s.batch.size, s.seed) for s in specs}
    assert combos == {(lr, bs, seed) for lr in (0.001, 0.01) for bs in (32, 128) for seed in (0, 1)}
    assert all(s.optimizer.name == "adamw" and s.steps == 50 for s in specs)
    assert specs[0].name == "lr-bs [lr=0.001, batch.size=32, seed=0]"


def test_random_ranges_on_a_log_scale() -> None:
    sweep = load_sweep("""
base: {task: digits-mlp, optimizer: sgd}
random:
  optimizer.lr: {low: 0.0001, high: 1.0, scale: log}
  batch.size: {low: 16, high: 64, integer: true}
samples: 400
""")
    specs = build(sweep)
    lrs = [s.optimizer.lr for s in specs]
    assert len(specs) == 400 and all(1e-4 <= lr <= 1.0 for lr in lrs)
    # log-uniform: log10(lr) is uniform on [-4, 0], so its median is near -2 (a linear draw would give ~-0.3)
    assert statistics.median(math.log10(lr) for lr in lrs) == pytest.approx(-2, abs=0.25)
    assert all(isinstance(s.batch.size, int) and 16 <= s.batch.size <= 64 for s in specs)
    assert expand(sweep) == expand(sweep)  # the sampler is seeded


def test_grid_times_samples() -> None:
    sweep = load_sweep(GRID + "random:\n  optimizer.weight_decay: {low: 0.0, high: 0.1}\nsamples: 3\n")
    assert sweep.size == 24 and len(build(sweep)) == 24


def test_switching_optimizer_starts_it_from_its_own_defaults() -> None:
    sweep = load_sweep("""
base: {task: digits-mlp, optimizer: {name: sgd, momentum: 0.5}}
grid:
  optimizer.name: [sgd, adam]
  optimizer.lr: [0.01]
""")
    sgd, adam = build(sweep)
    assert sgd.optimizer.name == "sgd" and sgd.optimizer.lr == 0.01 and sgd.optimizer.momentum == 0.9
    assert adam.optimizer.name == "adam" and adam.optimizer.lr == 0.01  # no momentum leaked into Adam


def test_an_invalid_run_names_its_number_and_field() -> None:
    sweep = load_sweep("base: {task: digits-mlp, optimizer: adamw}\ngrid:\n  optimizer.lr: [0.01, -1]\n")
    with pytest.raises(SpecError) as caught:
        build(sweep)
    (error,) = caught.value.errors
    assert error.field.startswith("run 2 (") and error.field.endswith("): optimizer.lr")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("base: {}\nrandom:\n  optimizer.lr: {low: 0, high: 1, scale: log}\n", "random.optimizer.lr"),
        ("base: {}\nrandom:\n  optimizer.lr: {low: 1, high: 0}\n", "random.optimizer.lr"),
        ("base: {}\ngrid:\n  seed: []\n", "grid.seed"),  # was "sweep": the error now names the axis
        ("grid: {seed: [1]}\n", "base"),
        ("base: {}\nsamples: 0\n", "samples"),
        ("base: {}\nearly_stopping: {rule: hyperband}\n", "early_stopping.rule"),
        ("base: {}\nearly_stopping: {rule: asha, reduction_factor: 1}\n", "early_stopping.reduction_factor"),
    ],
)
def test_bad_sweeps_name_the_field(text: str, field: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_sweep(text)
    assert any(e.field == field for e in caught.value.errors), caught.value.errors


def test_too_many_runs_is_refused() -> None:
    sweep = load_sweep(f"base: {{task: digits-mlp, optimizer: sgd}}\ngrid:\n  seed: {list(range(MAX_RUNS + 1))}\n")
    with pytest.raises(SpecError, match="more than the 1000"):
        build(sweep)


def test_cli_sweep_dry_run_queues_nothing_and_a_real_one_queues_every_run(stack: Stack) -> None:
    path = stack.tmp / "sweep.yaml"
    path.write_text(GRID)
    dry = stack.cli("sweep", str(path), "--dry-run")
    assert dry.returncode == 0 and "8 runs" in dry.stderr and len(dry.stdout.splitlines()) == 8
    assert stack.store.list_runs() == []

    real = stack.cli("sweep", str(path))
    assert real.returncode == 0, real.stderr
    sweep_id = int(real.stdout)
    runs = stack.store.list_runs(sweep_id=sweep_id)
    assert len(runs) == 8 and all(r.status == "queued" and r.sweep_id == sweep_id for r in runs)

    bad = stack.tmp / "bad.yaml"
    bad.write_text("base: {task: digits-mlp, optimizer: adamw}\ngrid:\n  optimizer.lr: [-1]\n")
    refused = stack.cli("sweep", str(bad))
    assert refused.returncode == 2 and "optimizer.lr" in refused.stderr and len(stack.store.list_runs()) == 8
