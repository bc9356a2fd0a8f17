"""The training loop on its own (no Celery, no Streamlit): recipes, metric identities, determinism, divergence."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from models.tasks import TASKS
from workers.metrics import EVERY_STEP
from workers.schedules import curve
from workers.spec import parse_spec
from workers.training import ListSink, build, evaluate, run

PER_STEP = list(EVERY_STEP)

RECIPES = [  # optimizer → hyper-parameters that train digits-mlp in 150 steps (val loss below half of log 10)
    ({"name": "sgd", "lr": 0.1, "momentum": 0.9}, 0.5),
    ({"name": "adam", "lr": 3e-3}, 0.5),
    ({"name": "adamw", "lr": 3e-3}, 0.5),
    ({"name": "adagrad", "lr": 3e-2}, 0.5),
    ({"name": "adagrad-norm", "lr": 1.0}, 0.5),
    ({"name": "rmsprop", "lr": 1e-3}, 0.5),
    ({"name": "signsgd", "lr": 1e-3}, 0.5),
    ({"name": "lion", "lr": 1e-3}, 0.5),
    ({"name": "adabelief", "lr": 3e-3}, 0.5),
    ({"name": "lamb", "lr": 1e-2}, 0.5),
    ({"name": "lars", "lr": 1.0}, 0.5),
    ({"name": "muon"}, 0.5),
    ({"name": "schedulefree-adamw", "lr": 3e-3}, 0.5),
    ({"name": "frugal", "lr": 3e-3}, 0.5),
    ({"name": "onebit-adam", "lr": 3e-3, "freeze_step": 50}, 0.5),
    ({"name": "diloco", "lr": 3e-3, "replicas": 2, "inner_steps": 15}, 0.6),
    ({"name": "noloco", "lr": 3e-3, "replicas": 2, "inner_steps": 15}, 0.6),
    ({"name": "adahessian", "lr": 0.15}, 0.5),
]


def spec(**changes: object):  # type: ignore[no-untyped-def]
    data = {"task": "digits-mlp", "optimizer": {"name": "adamw", "lr": 3e-3}, "steps": 60, "eval_every": 20}
    data.update(changes)
    return parse_spec(data)


@pytest.mark.parametrize(("optimizer", "ratio"), RECIPES, ids=[o["name"] for o, _ in RECIPES])
def test_recipe_loss_falls(optimizer: dict[str, object], ratio: float) -> None:
    sink = ListSink()
    outcome = run(spec(optimizer=optimizer, steps=150, eval_every=50), sink, torch.device("cpu"))
    assert outcome.status == "completed" and outcome.steps == 150
    val = sink.series("val_loss")
    assert sorted(val) == [50, 100, 150]
    assert val[150] < ratio * math.log(10)  # log(10): the loss of a uniform guess over 10 classes
    assert sink.series("val_accuracy")[150] > 0.8


def test_every_step_has_every_metric_and_evals_on_schedule() -> None:
    sink = ListSink()
    run(spec(steps=45, eval_every=20), sink, torch.device("cpu"))
    for metric in PER_STEP:
        assert sorted(sink.series(metric)) == list(range(1, 46)), metric
    assert sorted(sink.series("val_loss")) == [20, 40, 45]  # every eval_every, and at the end


TASK_RECIPES = {  # task → (optimizer, steps) that brings the validation loss well below its starting value
    "digits-mlp": ({"name": "adamw", "lr": 3e-3}, 100),
    "moons-mlp": ({"name": "adamw", "lr": 1e-2}, 100),
    "digits-logreg": ({"name": "adamw", "lr": 1e-2}, 100),
    "digits-cnn": ({"name": "adamw", "lr": 3e-3}, 100),
    "mnist1d-mlp": ({"name": "adamw", "lr": 3e-3}, 300),
    "quadratic": ({"name": "sgd", "lr": 0.5, "momentum": 0.9}, 100),
    "charlm-transformer": ({"name": "adamw", "lr": 3e-3}, 60),
}


@pytest.mark.parametrize("task", list(TASK_RECIPES))
def test_every_task_trains(task: str) -> None:
    optimizer, steps = TASK_RECIPES[task]
    sink = ListSink()
    s = parse_spec({"task": task, "optimizer": optimizer, "steps": steps, "eval_every": steps, "batch": {"size": 32}})
    untrained = float(evaluate(build(s, torch.device("cpu"))[0])["val_loss"])  # the same seed: the same start
    assert run(s, sink, torch.device("cpu")).status == "completed"
    val = sink.series("val_loss")
    assert val[steps] < 0.7 * untrained, (untrained, val[steps])


def test_every_task_has_a_recipe() -> None:
    assert set(TASK_RECIPES) == set(TASKS)


def test_every_optimizer_has_a_recipe() -> None:
    from workers.optimizers import OPTIMIZERS

    assert [o["name"] for o, _ in RECIPES] == list(OPTIMIZERS)


def test_optimizer_state_bytes_show_what_each_keeps() -> None:
    """SGD with momentum keeps one buffer per parameter, Adam two, AdaGrad-Norm a single scalar."""
    d = sum(p.numel() for p in TASKS["digits-mlp"].build(seed=0, hidden=64).model.parameters())
    measured = {}
    for optimizer in ({"name": "sgd", "momentum": 0.9}, {"name": "adam"}, {"name": "adagrad-norm"}):
        sink = ListSink()
        run(spec(optimizer=optimizer, steps=3), sink, torch.device("cpu"))
        measured[optimizer["name"]] = sink.series("optimizer_state_bytes")[3]
    assert measured["sgd"] == 4 * d
    assert 8 * d <= measured["adam"] <= 8 * d + 64  # two fp32 moments (+ a step counter per tensor)
    assert measured["adagrad-norm"] == 4


def test_schedule_free_evaluates_the_averaged_weights() -> None:
    """Validation runs in the optimizer's eval mode (x), training in its train mode (y)."""
    sink = ListSink()
    run(spec(optimizer={"name": "schedulefree-adamw", "lr": 3e-3}, steps=40, eval_every=20), sink, torch.device("cpu"))
    assert sink.series("val_accuracy")[40] > 0.5


def test_metric_identities_plain_sgd() -> None:
    """Plain SGD: Δθ = −η g exactly, so ‖Δθ‖ = η‖g‖; samples and the ratio's bounds follow from definitions."""
    sink = ListSink()
    s = spec(optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.0}, batch={"size": 32}, steps=30)
    run(s, sink, torch.device("cpu"))
    g2, upd, ratio = sink.series("grad_l2"), sink.series("update_l2"), sink.series("grad_l1_l2_ratio")
    d = sum(p.numel() for p in TASKS["digits-mlp"].build(seed=0, hidden=64).model.parameters())
    for step in range(1, 31):
        assert upd[step] == pytest.approx(0.05 * g2[step], rel=1e-4)
        assert 1 / math.sqrt(d) <= ratio[step] <= 1
        assert ratio[step] == pytest.approx(sink.series("grad_l1")[step] / (math.sqrt(d) * g2[step]))
        assert sink.series("samples_seen")[step] == 32 * step
        assert sink.series("batch_size")[step] == 32
    walls = [sink.series("wall_time")[k] for k in range(1, 31)]
    assert walls == sorted(walls) and all(sink.series("step_time")[k] > 0 for k in range(1, 31))


def test_first_step_norms_equal_plain_autograd() -> None:
    """Full-batch: the first step's loss and gradient norms equal those torch computes on the fresh model."""
    task = TASKS["digits-mlp"]
    problem = task.build(seed=3, hidden=64)
    loss = problem.loss_fn(problem.model(problem.x_train), problem.y_train)
    grads = torch.autograd.grad(loss, list(problem.model.parameters()))
    flat = torch.cat([g.reshape(-1) for g in grads])
    theta = torch.cat([p.detach().reshape(-1) for p in problem.model.parameters()])

    sink = ListSink()
    s = spec(seed=3, optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.0}, batch={"size": 1438}, steps=1)
    run(s, sink, torch.device("cpu"))
    assert sink.series("loss")[1] == pytest.approx(loss.item(), rel=1e-5)
    assert sink.series("grad_l2")[1] == pytest.approx(flat.norm().item(), rel=1e-4)
    assert sink.series("grad_l1")[1] == pytest.approx(flat.abs().sum().item(), rel=1e-4)
    assert sink.series("param_l2")[1] == pytest.approx((theta - 0.1 * flat).norm().item(), rel=1e-5)


def test_loop_trains_exactly_like_a_bare_torch_loop() -> None:
    """Same seed, same batches: the loop's losses equal a hand-written loop's (the flat buffers change nothing)."""
    s = spec(optimizer={"name": "adam", "lr": 1e-3}, batch={"size": 50}, steps=40, seed=7)
    sink = ListSink()
    run(s, sink, torch.device("cpu"))

    problem = TASKS["digits-mlp"].build(seed=7, hidden=64)
    opt = torch.optim.Adam(problem.model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(7)
    order, pos, losses = torch.randperm(1438, generator=gen), 0, []
    for _ in range(40):
        if pos + 50 > 1438:
            order, pos = torch.randperm(1438, generator=gen), 0
        idx = order[pos : pos + 50]
        pos += 50
        opt.zero_grad()
        loss = problem.loss_fn(problem.model(problem.x_train[idx]), problem.y_train[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    ours = [sink.series("loss")[k] for k in range(1, 41)]
    assert ours == pytest.approx(losses, rel=1e-5, abs=1e-6)


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    def losses(seed: int) -> dict[tuple[int, str], float]:
        """Keyed by (step, metric): when time-based flushes happen decides the rows' order, not their values."""
        sink = ListSink()
        run(spec(seed=seed), sink, torch.device("cpu"))
        return {(step, m): v for step, m, v in sink.rows if m in ("loss", "grad_l2", "val_loss")}

    assert losses(1) == losses(1)
    assert losses(1) != losses(2)


def test_logged_lr_equals_the_preview() -> None:
    s = spec(schedule={"name": "warmup-cosine", "warmup_steps": 10, "min_lr": 1e-4}, steps=50)
    sink = ListSink()
    run(s, sink, torch.device("cpu"))
    steps, lrs = curve("warmup-cosine", 50, 3e-3, {"warmup_steps": 10, "min_lr": 1e-4})
    assert [sink.series("lr")[k] for k in steps] == lrs


def test_divergence_ends_the_run_at_that_step_keeping_everything_before() -> None:
    s = parse_spec({"task": "quadratic", "optimizer": {"name": "sgd", "lr": 50.0, "momentum": 0.0}, "steps": 500})
    sink = ListSink()
    outcome = run(s, sink, torch.device("cpu"))
    assert outcome.status == "diverged"
    loss = sink.series("loss")
    last = max(loss)
    assert outcome.steps == last and str(last) in outcome.message
    assert sorted(loss) == list(range(1, last + 1))  # every step up to the divergence, none after
    assert not math.isfinite(loss[last]) and all(math.isfinite(loss[k]) for k in range(1, last))
    assert all(step <= last for step, _, _ in sink.rows)
    assert loss[2] > loss[1]  # it really was blowing up


def test_stop_request_cancels_at_a_flush() -> None:
    sink = ListSink(stop_after_rows=1)
    outcome = run(spec(steps=100_000), sink, torch.device("cpu"))
    assert outcome.status == "cancelled" and outcome.steps < 100_000
    assert max(step for step, _, _ in sink.rows) == outcome.steps


def test_training_module_imports_neither_celery_nor_streamlit() -> None:
    code = "import sys, workers.training; print(any(m in sys.modules for m in ('celery', 'streamlit')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_workers_package_imports_nothing_heavy() -> None:
    code = "import sys, workers, workers.spec; print(any(m in sys.modules for m in ('torch', 'celery', 'streamlit')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_matches_cpu_closely() -> None:
    cpu, gpu = ListSink(), ListSink()
    run(spec(steps=30), cpu, torch.device("cpu"))
    run(spec(steps=30), gpu, torch.device("cuda"))
    assert gpu.series("loss")[30] == pytest.approx(cpu.series("loss")[30], rel=1e-3)


def test_blowup_watch_stops_at_four_times_the_lowest_smoothed_loss() -> None:
    from workers.training import BlowUp

    losses = [1.0] * 20 + [0.5] * 20 + [100.0] * 20  # EMA: 1 → 0.5; then rises past 2.0 a few steps into the 100s
    watch = BlowUp(4.0)
    rows = [(i + 1, "loss", v) for i, v in enumerate(losses)] + [(1, "lr", 1.0)]
    at = watch(rows)
    assert at is not None and 41 <= at <= 43  # by hand: 0.9·~0.5 + 0.1·100 > 2 at the first step of the jump
    assert BlowUp(4.0)([(i, "loss", 1.0 / i) for i in range(1, 100)]) is None  # a falling loss never stops


def test_a_range_test_run_ends_when_the_loss_leaves_the_useful_range() -> None:
    spec = parse_spec({"task": "moons-mlp", "optimizer": {"name": "adam", "lr": 10.0}, "steps": 400,
                       "eval_every": 400, "schedule": {"name": "range-test", "start_lr": 1e-6}})  # fmt: skip
    sink = ListSink()
    outcome = run(spec, sink)
    lrs = sink.series("lr")
    assert outcome.status in ("completed", "diverged") and outcome.steps < 400, outcome
    assert "range test ended" in outcome.message or outcome.status == "diverged"
    assert lrs[1] == pytest.approx(1e-6) and lrs[max(lrs)] > 1e-3  # the ramp got past the useful range first


def test_a_flush_as_columns_by_hand() -> None:
    import numpy as np

    from workers.training import flush_columns

    device = np.array([[2.0, 1.0, 4.0, 0.1, 3.0], [1.5, 0.0, 0.0, 0.1, 3.0], [1.0, 2.0, np.nan, 0.1, 3.0],
                       [0.5, 1.0, 1.0, 0.1, 3.0]])  # fmt: skip
    steps = np.array([11, 12, 13, 14])
    columns, diverged = flush_columns(device, steps, {"lr": np.array([0.1, 0.2, 0.3, 0.4])},
                                      [(12, {"val_loss": 1.25}), (14, {"val_loss": 9.0})], sqrt_d=2.0)  # fmt: skip
    assert diverged == (13, "grad_l1")  # the first non-finite loss or gradient norm ends the flush, at its step
    assert columns["loss"][0].tolist() == [11, 12, 13] and columns["loss"][1].tolist() == [2.0, 1.5, 1.0]
    ratio = columns["grad_l1_l2_ratio"][1]
    assert ratio[0] == 4.0 / (2.0 * 1.0) and np.isnan(ratio[1]) and np.isnan(ratio[2])  # ‖g‖₁ / (√d ‖g‖₂)
    assert columns["lr"][1].tolist() == [0.1, 0.2, 0.3]
    assert {m: (s.tolist(), v.tolist()) for m, (s, v) in columns.items() if m == "val_loss"} == {
        "val_loss": ([12], [1.25])
    }  # the evaluation after the divergence is not logged
