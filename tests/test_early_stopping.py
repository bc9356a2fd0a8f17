"""Early stopping: each rule on synthetic curves (numbers worked by hand), the store's window means on SQLite and
PostgreSQL, and a real worker stopping a hopeless run of a sweep with the reason recorded."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from db.store import Store
from tests.conftest import Stack, wait_for
from workers.celery_app import rerun, submit_sweep
from workers.early_stopping import EarlyStopping, asha_rule, decide, median_rule
from workers.sweep import build, load_sweep
from workers.tasks import PackGate, SweepJudge


def curve(a: float, b: float, steps: int = 100) -> np.ndarray:
    """A synthetic loss: a·exp(−t/20) + b for t = 1..steps."""
    t = np.arange(1, steps + 1)
    return a * np.exp(-t / 20) + b


def test_median_rule_by_hand() -> None:
    assert median_rule(2.0, [1.0, 3.0, 1.5], "min", min_runs=3) is not None  # median 1.5 < 2.0
    assert median_rule(1.4, [1.0, 3.0, 1.5], "min", min_runs=3) is None
    assert median_rule(9.0, [1.0, 3.0], "min", min_runs=3) is None  # too few others to judge
    assert median_rule(0.7, [0.9, 0.8, 0.6], "max", min_runs=3) is not None  # accuracy: median 0.8 > 0.7
    reason = median_rule(2.0, [1.0, 2.5, 1.5, 1.0], "min", min_runs=1)  # median of four: (1.0 + 1.5) / 2
    assert reason is not None and "median 1.25 of 4 other runs" in reason


def test_asha_rule_by_hand() -> None:
    # fewer than η values at the rung: only the best so far goes on
    assert asha_rule(1.0, [], "min", 3) is None
    assert asha_rule(1.2, [1.0], "min", 3) is not None
    assert asha_rule(0.9, [1.0, 1.1], "min", 3) is None
    # six values, η = 3: the best two go on
    others = [0.5, 0.7, 0.9, 1.1, 1.3]
    assert asha_rule(0.6, others, "min", 3) is None  # 2nd of 6
    assert asha_rule(0.8, others, "min", 3) is not None  # 3rd of 6
    assert asha_rule(0.8, [0.9, 0.7, 0.1, 0.2, 0.3], "max", 3) is None  # accuracies: 2nd best of 6


def test_checkpoints_and_windows() -> None:
    assert list(EarlyStopping(rule="asha", grace_steps=10, reduction_factor=3).checkpoints(100)) == [10, 30, 90]
    assert list(EarlyStopping(rule="median", grace_steps=20, every=30).checkpoints(100)) == [20, 50, 80]
    assert list(EarlyStopping(rule="none").checkpoints(100)) == []
    assert EarlyStopping(rule="median").window(80) == (0, 80)  # running mean from the start
    assert EarlyStopping(rule="asha").window(90) == (81, 90)  # the last tenth
    with pytest.raises(ValidationError, match="unknown metric"):
        EarlyStopping(rule="asha", metric="lossy")


def simulate(config: EarlyStopping, curves: list[np.ndarray]) -> dict[int, str | None]:
    """Runs one after another (one worker), each judged at its checkpoints against those before it."""
    reached: list[np.ndarray] = []  # each earlier run, up to where it stopped
    outcome: dict[int, str | None] = {}
    for i, values in enumerate(curves):
        outcome[i] = None
        for step in config.checkpoints(len(values)):
            lo, hi = config.window(step)
            others = [float(np.mean(c[lo:hi])) for c in reached if len(c) >= hi]
            reason = decide(config, step, float(np.mean(values[lo:hi])), others)
            if reason:
                outcome[i], values = reason, values[:step]
                break
        reached.append(values)
    return outcome


def test_median_stopping_on_synthetic_curves_stops_the_bad_runs_and_never_the_best() -> None:
    floors = [0.2, 0.5, 0.1, 0.9, 0.3, 1.5]  # the third run is the best
    curves = [curve(2.0, b) for b in floors]
    outcome = simulate(EarlyStopping(rule="median", grace_steps=10, every=10, min_runs=2), curves)
    assert outcome[0] is None and outcome[1] is None  # too few runs before them to judge
    assert outcome[2] is None  # the best is never stopped
    assert outcome[3] is not None and "median rule at step 10 on loss" in outcome[3]
    # the running means differ by their floors: at step 10 the median of (0.2, 0.5, 0.1, 0.9) is 0.35 > 0.3,
    # at step 20 the fourth run (stopped at 10) no longer counts and the median of (0.2, 0.5, 0.1) is 0.2 < 0.3
    assert outcome[4] is not None and "at step 20" in outcome[4]
    assert outcome[5] is not None


def test_asha_on_synthetic_curves_keeps_one_in_eta_per_rung() -> None:
    rng = np.random.default_rng(0)
    floors = rng.uniform(0.0, 1.0, size=27)
    curves = [curve(1.0, b, steps=100) for b in floors]
    config = EarlyStopping(rule="asha", grace_steps=10, reduction_factor=3)
    outcome = simulate(config, curves)
    best = int(np.argmin(floors))
    assert outcome[best] is None
    survivors = [i for i, reason in outcome.items() if reason is None]
    assert len(survivors) < 27 / 3  # the ladder thinned the field
    stopped_at = [int(r.split("step ")[1].split(" ")[0]) for r in outcome.values() if r]
    assert set(stopped_at) <= {10, 30, 90}


@pytest.mark.parametrize("rule", ["median", "asha"])
def test_window_means_and_the_judge_on_a_real_database(store: Store, rule: str) -> None:
    config = EarlyStopping(rule=rule, grace_steps=10, every=10, min_runs=2, reduction_factor=2)
    sweep_id = store.create_sweep("s", {"early_stopping": config.model_dump()})
    floors = [0.1, 0.2, 0.9]
    ids = [store.create_run(f"r{b}", {"steps": 40}, sweep_id) for b in floors]
    for rid, b in zip(ids[:2], floors[:2], strict=True):
        store.record(rid, [(t, "loss", float(v)) for t, v in enumerate(curve(1.0, b, 40), start=1)])
    # the third run has written 20 steps; one value is NaN (stored NULL), which a mean skips
    third = curve(1.0, floors[2], 20)
    rows = [(t, "loss", float(v)) for t, v in enumerate(third, start=1)] + [(5, "other", math.nan)]
    store.record(ids[2], rows)
    means = store.window_means(sweep_id, "loss", 0, 20)
    assert set(means) == set(ids)
    assert means[ids[2]] == pytest.approx(float(np.mean(third)))
    assert store.window_means(sweep_id, "loss", 0, 30).keys() == set(ids[:2])  # the third has not reached 30
    judge = SweepJudge(store, ids[2], sweep_id, config, steps=40)
    reason = judge(15)
    assert reason is not None and reason.startswith(f"{rule} rule at step 10 on loss")
    assert judge(15) is None  # each checkpoint is judged once


def test_a_pack_member_is_judged_at_a_checkpoint_once_its_mates_have_recorded_it(store: Store) -> None:
    """Pack-mates record on their own threads: a member's checkpoint waits for its live mates instead of being
    judged against nobody (it was then never judged at that step: a worker stopped such a run at step 320, not 40)."""
    config = EarlyStopping(rule="median", grace_steps=10, every=10, min_runs=1)
    sweep_id = store.create_sweep("s", {"early_stopping": config.model_dump()})
    good, bad, dead = (store.create_run(n, {"steps": 40}, sweep_id) for n in ("good", "bad", "dead"))
    gate = PackGate([good, bad, dead])
    judge = SweepJudge(store, bad, sweep_id, config, steps=40, gate=gate)
    store.record(bad, [(t, "loss", 2.0) for t in range(1, 11)])
    gate.recorded(bad, 10)
    assert judge(10) is None  # its mates have not recorded step 10: the checkpoint waits
    store.record(good, [(t, "loss", 0.5) for t in range(1, 11)])
    gate.recorded(good, 10)
    assert judge(10) is None  # the third mate is still training and has not recorded it either
    gate.ended(dead)  # it ended (diverged at step 3, say): nobody waits for it
    reason = judge(10)
    assert reason is not None and reason.startswith("median rule at step 10") and "median 0.5 of 1 other" in reason


def test_a_worker_stops_a_hopeless_run_and_says_why_then_rerun_queues_it_again(stack: Stack, worker) -> None:  # type: ignore[no-untyped-def]
    sweep = load_sweep(
        """
        name: es
        base: {task: digits-mlp, optimizer: adam, steps: 1000, eval_every: 500}
        grid: {optimizer.lr: [0.003, 0.000001]}
        early_stopping: {rule: median, grace_steps: 40, every: 40, min_runs: 1}
        """
    )
    sweep_id = submit_sweep(stack.store, sweep.name, sweep.model_dump(mode="json"), build(sweep))
    runs = sorted(stack.store.list_runs(sweep_id=sweep_id), key=lambda r: r.id)

    def done() -> bool:
        return all(r.status not in ("queued", "running") for r in stack.store.list_runs(sweep_id=sweep_id))

    wait_for(done, 300, "the sweep to finish")
    good, hopeless = (stack.store.get_run(r.id) for r in runs)
    assert good is not None and good.status == "completed"
    assert hopeless is not None and hopeless.status == "stopped", hopeless
    assert (
        hopeless.error
        and hopeless.error.startswith("stopped early at step ")
        and "median rule at step 40" in hopeless.error
    )
    assert hopeless.progress < 1000

    assert rerun(stack.store, [good.id, hopeless.id]) == [hopeless.id]  # only what did not complete
    assert stack.store.get_run(hopeless.id).status in ("queued", "running", "stopped")  # type: ignore[union-attr]
    wait_for(done, 300, "the re-run to finish")
    assert stack.store.get_run(hopeless.id).status == "stopped"  # type: ignore[union-attr]
