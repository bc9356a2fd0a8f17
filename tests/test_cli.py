"""The CLI as a user runs it: a subprocess, a real worker, exit codes that scripts can trust."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import Stack

GOOD = """name: cli-run
task: moons-mlp
optimizer: {name: sgd, lr: 0.1}
schedule: {name: cosine}
batch: {size: 32}
steps: 120
eval_every: 40
"""


def test_invalid_spec_exits_2_naming_the_field_and_queues_nothing(stack: Stack) -> None:
    bad = stack.tmp / "bad.yaml"
    bad.write_text("task: digits-mlp\noptimizer: {name: adamw, lr: -1}\n")
    result = stack.cli("submit", str(bad))
    assert result.returncode == 2
    assert "optimizer.lr: Input should be greater than 0 (got -1)" in result.stderr
    assert "nothing was queued" in result.stderr and result.stdout == ""
    assert stack.store.list_runs() == []


def test_missing_file_and_bad_arguments_exit_2(stack: Stack) -> None:
    assert stack.cli("submit", str(stack.tmp / "nope.yaml")).returncode == 2
    assert stack.cli("export", "-o", "x.csv").returncode == 2  # needs --run or --all
    assert stack.cli("cancel", "12345").returncode == 2


@pytest.mark.live_worker
def test_submit_wait_status_export(stack: Stack, worker) -> None:  # type: ignore[no-untyped-def]
    spec = stack.tmp / "run.yaml"
    spec.write_text(GOOD)
    result = stack.cli("submit", str(spec), "--wait", "--timeout", "90")
    assert result.returncode == 0, result.stderr
    run_id = int(result.stdout.strip())
    assert f"run {run_id} completed" in result.stderr

    status = stack.cli("status")
    assert status.returncode == 0 and "completed" in status.stdout and "cli-run" in status.stdout

    out = stack.tmp / "runs.csv"
    exported = stack.cli("export", "--run", str(run_id), "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    frame = pd.read_csv(out)
    assert len(frame) == 120 and set(frame.run_id) == {run_id}
    assert frame["optimizer.name"].iloc[0] == "sgd" and frame.loss.notna().all()
    assert stack.cli("export", "--all", "-o", str(out)).returncode == 0
    assert stack.cli("export", "--run", "999", "-o", str(out)).returncode == 2


@pytest.mark.live_worker
def test_submit_wait_exits_1_when_the_run_diverges(stack: Stack, worker) -> None:  # type: ignore[no-untyped-def]
    result = stack.cli(
        "submit", "-", "--wait", stdin="task: quadratic\noptimizer: {name: sgd, lr: 50, momentum: 0}\nsteps: 300\n"
    )
    assert result.returncode == 1 and "diverged" in result.stderr


@pytest.mark.live_worker
def test_cancel_from_the_cli(stack: Stack, worker) -> None:  # type: ignore[no-untyped-def]
    from tests.test_queue import finished, running_with_progress

    submitted = stack.cli("submit", "-", stdin="task: digits-mlp\noptimizer: adam\nsteps: 100000\n")
    run_id = int(submitted.stdout)
    running_with_progress(stack, run_id)
    result = stack.cli("cancel", str(run_id))
    assert result.returncode == 0 and "cancel requested" in result.stdout
    assert finished(stack, run_id) == "cancelled"


def test_list_prints_each_registry(stack: Stack) -> None:
    for what, expected in (("optimizers", "adamw"), ("schedules", "warmup-cosine"), ("tasks", "digits-mlp"),
                           ("batch-policies", "constant")):  # fmt: skip
        result = stack.cli("list", what)
        assert result.returncode == 0 and expected in result.stdout and "paper:" in result.stdout


def test_export_a_sweep_long_summary_and_parquet(stack: Stack) -> None:
    store = stack.store
    sweep_id = store.create_sweep("s", {})
    for lr in (0.1, 0.01):
        rid = store.create_run(f"lr {lr}", {"optimizer": {"name": "sgd", "lr": lr}, "steps": 5}, sweep_id)
        store.record(rid, [(s, "loss", lr / s) for s in range(1, 6)])
    out = stack.tmp / "sweep.csv"
    result = stack.cli("export", "--sweep", str(sweep_id), "-o", str(out))
    assert result.returncode == 0, result.stderr
    long = pd.read_csv(out)
    assert len(long) == 10 and set(long["optimizer.lr"]) == {0.1, 0.01} and set(long["metric"]) == {"loss"}
    summary_out = stack.tmp / "summary.csv"
    result = stack.cli("export", "--sweep", str(sweep_id), "--summary", "--target", "0.02", "-o", str(summary_out))
    assert result.returncode == 0, result.stderr
    summary = pd.read_csv(summary_out).set_index("optimizer.lr")
    assert summary.loc[0.1, "final_loss"] == pytest.approx(0.02) and summary.loc[0.1, "target_step"] == 5
    assert summary.loc[0.01, "target_step"] == 1
    for name, rows in (("long.parquet", 10), ("summary.parquet", 2)):
        args = ["--summary"] if name.startswith("summary") else []
        assert stack.cli("export", "--sweep", str(sweep_id), *args, "-o", str(stack.tmp / name)).returncode == 0
        assert len(pd.read_parquet(stack.tmp / name)) == rows
    missing = stack.cli("export", "--sweep", "999", "-o", str(out))
    assert missing.returncode == 2 and "--sweep: no sweep 999" in missing.stderr
