"""Packed sweeps through the real queue: a sweep submitted from the CLI is grouped into packs, one worker process
claims a pack as a whole and trains it as one model, and each member is still a run of its own: its own metrics,
status and ending (a diverging member and a cancelled one leave the others to finish). `packing: off` trains one
run at a time."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Stack, wait_for
from workers.metrics import EVERY_STEP

pytestmark = pytest.mark.live_worker


def sweep_file(stack: Stack, name: str, body: dict) -> str:  # type: ignore[type-arg]
    path = stack.tmp / f"{name}.json"
    path.write_text(json.dumps({"name": name, **body}))
    return str(path)


def all_finished(stack: Stack, sweep_id: int, timeout: float = 600) -> list:  # type: ignore[type-arg]
    def done() -> list | None:  # type: ignore[type-arg]
        runs = stack.store.list_runs(sweep_id=sweep_id)
        return runs if runs and all(r.status not in ("queued", "running") for r in runs) else None

    return wait_for(done, timeout, f"sweep {sweep_id} to finish")  # type: ignore[no-any-return]


def test_a_32_run_sweep_from_the_cli_trains_as_one_pack_of_separate_runs(stack: Stack, worker) -> None:  # type: ignore[no-untyped-def]
    steps = 60
    path = sweep_file(stack, "lr-x-seed", {
        "base": {"task": "digits-mlp", "optimizer": "adamw", "schedule": "warmup-cosine", "steps": steps,
                 "eval_every": 20, "batch": {"size": 32}},
        "grid": {"optimizer.lr": [1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2, 3e-2], "seed": [0, 1, 2, 3]},
    })  # fmt: skip
    dry = stack.cli("sweep", path, "--dry-run")
    assert dry.returncode == 0 and "32 runs, trained in 1 pack of 32" in dry.stderr, dry.stderr
    done = stack.cli("sweep", path)
    assert done.returncode == 0, done.stderr
    assert "to train in 1 pack of 32" in done.stderr
    sweep_id = int(done.stdout.split()[0])
    runs = all_finished(stack, sweep_id)
    assert len(runs) == 32 and {r.status for r in runs} == {"completed"}
    assert len({r.pack_id for r in runs}) == 1 and runs[0].pack_id is not None
    assert {r.pack_size for r in runs} == {32} and len({r.worker for r in runs}) == 1
    frame = stack.store.metrics([r.id for r in runs])
    per_run = frame.groupby("run_id").size()
    assert set(per_run.index) == {r.id for r in runs}
    assert set(per_run) == {steps * len(EVERY_STEP) + 3 * 2}  # every step's metrics, validation at 20, 40, 60
    finals = frame[(frame.metric == "val_loss") & (frame.step == steps)].set_index("run_id").value
    assert finals.nunique() == 32  # 32 different runs, not one run copied
    lrs = frame[(frame.metric == "lr") & (frame.step == 10)].set_index("run_id").value
    factors = {round(lrs[r.id] / r.spec["optimizer"]["lr"], 9) for r in runs}
    assert len(factors) == 1 and 0 < factors.pop() < 1  # each its own peak LR, one schedule (warming up at 10)
    events = [e.reason or "" for r in runs for e in stack.store.run_events(r.id)]
    assert sum(f"with pack {runs[0].pack_id} (32 runs)" in e for e in events) == 32  # claimed together
    shown = stack.cli("status", str(runs[5].id))
    assert f"trained in pack {runs[0].pack_id} (32 runs" in shown.stdout


def test_a_diverging_and_a_cancelled_member_leave_the_rest_of_the_pack_to_finish(stack: Stack, worker) -> None:  # type: ignore[no-untyped-def]
    steps = 6000  # long enough to cancel a member while the pack trains, on any machine
    path = sweep_file(stack, "members", {
        "base": {"task": "quadratic", "optimizer": {"name": "sgd", "momentum": 0.9}, "steps": steps,
                 "eval_every": 1000, "batch": {"size": 32}},
        "grid": {"optimizer.lr": [0.01, 0.02, 0.005, 100.0], "seed": [0, 1]},  # lr 100 is far above 2/L
    })  # fmt: skip
    done = stack.cli("sweep", path)
    assert done.returncode == 0, done.stderr
    sweep_id = int(done.stdout.split()[0])
    runs = {(r.spec["optimizer"]["lr"], r.spec["seed"]): r for r in stack.store.list_runs(sweep_id=sweep_id)}
    victim = runs[(0.01, 0)]
    wait_for(lambda: (r := stack.store.get_run(victim.id)) and r.status == "running" and r.progress > 0, 300,
             "the pack to start")  # fmt: skip
    assert stack.store.request_cancel(victim.id) == "running"
    ended = {(r.spec["optimizer"]["lr"], r.spec["seed"]): r for r in all_finished(stack, sweep_id)}
    assert ended[(0.01, 0)].status == "cancelled" and ended[(0.01, 0)].progress < steps
    assert {ended[(100.0, s)].status for s in (0, 1)} == {"diverged"}
    assert all("non-finite" in (ended[(100.0, s)].error or "") for s in (0, 1))
    rest = [r for key, r in ended.items() if key[0] != 100.0 and key != (0.01, 0)]
    assert len(rest) == 5 and {r.status for r in rest} == {"completed"} and {r.progress for r in rest} == {steps}
    assert len({r.pack_id for r in ended.values()}) == 1
    frame = stack.store.metrics([victim.id], names=["loss"])
    assert frame.step.max() < steps  # the cancelled member stopped being recorded


def test_packing_off_trains_one_run_at_a_time(stack: Stack, worker) -> None:  # type: ignore[no-untyped-def]
    path = sweep_file(stack, "alone", {
        "base": {"task": "digits-logreg", "optimizer": "adamw", "steps": 20, "eval_every": 10},
        "grid": {"seed": [0, 1, 2]}, "packing": "off",
    })  # fmt: skip
    dry = stack.cli("sweep", path, "--dry-run")
    assert "one at a time (packing: off)" in dry.stderr
    done = stack.cli("sweep", path)
    assert done.returncode == 0, done.stderr
    runs = all_finished(stack, int(done.stdout.split()[0]))
    assert {r.status for r in runs} == {"completed"} and {r.pack_id for r in runs} == {None}
