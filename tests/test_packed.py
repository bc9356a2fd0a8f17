"""Packed training (workers/packed.py): each member of a pack logs what the same run trained alone logs — loss,
LR, gradient, update and parameter norms, validation — to 1e-5 relative over 200 steps (float32), for every
packable optimizer, with members of different seeds and hyper-parameters in one pack; a diverging or stopped
member leaves the others untouched."""

from __future__ import annotations

import math
import os
from typing import Any

import pytest
import torch

from workers.packed import pack_key, run_pack
from workers.packed_optim import PACKED
from workers.spec import parse_spec
from workers.training import ListSink, run

COMPARED = ("loss", "lr", "grad_l2", "grad_l1", "update_l2", "param_l2", "grad_l1_l2_ratio", "batch_size",
            "samples_seen", "val_loss", "val_accuracy")  # fmt: skip
STEPS = 200
DEVICE = torch.device(os.environ.get("OPTLAB_TEST_DEVICE", "cpu"))  # cuda on a GPU machine: bench/gpu_check.sh

MEMBERS: dict[str, list[dict[str, Any]]] = {  # the optimizer's per-member hyper-parameters
    "sgd": [{"lr": 0.05, "momentum": 0.9}, {"lr": 0.02, "momentum": 0.5, "nesterov": True, "weight_decay": 1e-3}],
    "adam": [{"lr": 1e-3}, {"lr": 3e-3, "beta1": 0.8, "weight_decay": 1e-4}],
    "adamw": [{"lr": 1e-3}, {"lr": 3e-3, "beta2": 0.99, "weight_decay": 0.1}],
    "lion": [{"lr": 1e-4}, {"lr": 3e-4, "beta1": 0.95, "weight_decay": 0.01}],
    "signsgd": [{"lr": 1e-3}, {"lr": 3e-4, "momentum": 0.9}],
    "rmsprop": [{"lr": 1e-3}, {"lr": 3e-4, "alpha": 0.9}],
    "adagrad": [{"lr": 1e-2}, {"lr": 3e-2}],
}


def specs_for(name: str, schedule: dict[str, Any], steps: int = STEPS, task: str = "digits-logreg") -> list:  # type: ignore[type-arg]
    """Members of one pack. On a smooth task (softmax regression): on a ReLU network, float32 rounding that differs
    by an ulp (the batched kernels reduce in another order) can flip a unit at a kink, and the curves then part by
    far more than rounding (see test_on_a_relu_network_members_agree_until_rounding_flips_a_unit)."""
    out = []
    for seed, hyper in zip(
        (0, 7, 3), [*MEMBERS[name], MEMBERS[name][0]], strict=True
    ):  # a third member: same hyper, new seed
        data = {"task": task, "optimizer": {"name": name, **hyper}, "schedule": schedule,
                "steps": steps, "eval_every": 50, "seed": seed, "batch": {"size": 32}, "device": DEVICE.type}  # fmt: skip
        out.append(parse_spec(data))
    return out


def series(sink: ListSink) -> dict[tuple[int, str], float]:
    return {(s, m): v for s, m, v in sink.rows if m in COMPARED}


def assert_same(packed: ListSink, alone: ListSink) -> None:
    """1e-5 relative to the value, or to 1% of its curve's largest value where the value is smaller: an update's
    norm at the end of a cosine schedule is 1e-4 of its peak, the difference of two parameter vectors that agree
    to float32 rounding (~1e-7), so its own relative error says nothing about the two loops."""
    got, want = series(packed), series(alone)
    assert got.keys() == want.keys()
    peak: dict[str, float] = {}
    for (_, metric), v in want.items():
        if math.isfinite(v):
            peak[metric] = max(peak.get(metric, 0.0), abs(v))
    # Accuracy counts examples: a logit that agrees to rounding can still land on the other side of a tie, so it
    # may differ by an example or two (1/359 each), never more.
    accuracy = {k: abs(got[k] - v) for k, v in want.items() if k[1] == "val_accuracy"}
    assert max(accuracy.values(), default=0.0) <= 2.5 / 359, accuracy
    errors = {
        k: abs(got[k] - v) / max(abs(v), 0.01 * peak[k[1]], 1e-12)
        for k, v in want.items()
        if math.isfinite(v) and k[1] != "val_accuracy"
    }
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] <= 1e-5, (worst, errors[worst], got[worst], want[worst])


def assert_members_match(specs: list) -> None:  # type: ignore[type-arg]
    """Train the pack, then each member alone: the same curves."""
    sinks = [ListSink() for _ in specs]
    outcomes = run_pack(specs, sinks, DEVICE)
    assert [o.status for o in outcomes] == ["completed"] * len(specs)
    for spec, sink in zip(specs, sinks, strict=True):
        alone = ListSink()
        run(spec, alone, DEVICE)
        assert_same(sink, alone)


def test_every_packed_optimizer_has_members_here() -> None:
    assert set(MEMBERS) == set(PACKED)


@pytest.mark.parametrize("name", list(MEMBERS))
def test_a_member_logs_what_the_run_alone_logs(name: str) -> None:
    specs = specs_for(name, {"name": "warmup-cosine", "warmup_steps": 20})
    assert len({pack_key(s) for s in specs}) == 1
    assert_members_match(specs)


@pytest.mark.parametrize("schedule", [
    {"name": "constant"}, {"name": "step", "step_size": 50}, {"name": "one-cycle"}, {"name": "wsd"},
    {"name": "cyclic"}, {"name": "inverse-sqrt", "warmup_steps": 10}, {"name": "polynomial"},
    {"name": "exponential"},
    {"name": "multistep"}, {"name": "cosine"}, {"name": "uba"},
], ids=lambda s: s["name"])  # fmt: skip
def test_every_schedule_packs(schedule: dict[str, Any]) -> None:
    specs = specs_for("adamw", schedule, steps=60)
    assert_members_match(specs)


def test_on_a_relu_network_members_agree_until_rounding_flips_a_unit() -> None:
    """digits-mlp (ReLU): the first 30 steps agree to 1e-5 for every member."""
    specs = specs_for("adamw", {"name": "warmup-cosine", "warmup_steps": 10}, steps=30, task="digits-mlp")
    assert_members_match(specs)


def test_a_diverging_and_a_stopped_member_leave_the_others_untouched() -> None:
    specs = [
        parse_spec({"task": "quadratic", "optimizer": {"name": "sgd", "lr": lr}, "steps": 80, "eval_every": 20,
                    "seed": seed, "batch": {"size": 32}, "device": DEVICE.type})
        for seed, lr in enumerate((0.01, 100.0, 0.02, 0.005))  # the second blows up (lr far above 2/L)
    ]  # fmt: skip
    sinks = [ListSink() for _ in specs]
    sinks[2] = ListSink(stop_after_rows=1)  # cancelled at its first flush
    outcomes = run_pack(specs, sinks, DEVICE)
    assert outcomes[1].status == "diverged" and outcomes[2].status == "cancelled"
    assert outcomes[0].status == outcomes[3].status == "completed"
    assert max(s for s, _, _ in sinks[2].rows) < 80  # it stopped being recorded
    for i in (0, 3):
        alone = ListSink()
        run(specs[i], alone, DEVICE)
        assert_same(sinks[i], alone)


def test_what_cannot_pack() -> None:
    base = {"task": "digits-mlp", "optimizer": "adamw", "steps": 10}
    assert pack_key(parse_spec(base)) is not None
    assert pack_key(parse_spec({**base, "optimizer": "muon"})) is None  # no vectorised update
    assert pack_key(parse_spec({**base, "schedule": "hypergradient"})) is None  # an LR learned online
    assert pack_key(parse_spec({**base, "batch": {"name": "adaptive"}})) is None  # sizes differ per member
    assert pack_key(parse_spec(base)) != pack_key(parse_spec({**base, "steps": 11}))
    assert pack_key(parse_spec(base)) == pack_key(
        parse_spec({**base, "seed": 3, "optimizer": {"name": "adamw", "lr": 1}})
    )


class CheckpointSink(ListSink):
    """Keeps its member's checkpoints (step → blob) and can ask to stop once it has logged a given step."""

    def __init__(self, stop_at: int | None = None) -> None:
        super().__init__()
        self.stop_at = stop_at
        self.saved: dict[int, bytes] = {}

    def save_checkpoint(self, step: int, blob: bytes) -> None:
        self.saved[step] = blob

    def should_stop(self) -> bool:
        return self.stop_at is not None and any(s >= self.stop_at for s, _, _ in self.rows)


def test_a_pack_stopped_midway_resumes_to_the_same_curves_in_any_grouping(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pack handed back at a checkpoint, resumed whole and as single members, logs what it logs uninterrupted."""
    from workers.settings import get_settings

    monkeypatch.setattr(get_settings(), "flush_steps", 20)
    monkeypatch.setattr(get_settings(), "flush_seconds", 1e9)  # flushes and checkpoints by step count only
    monkeypatch.setattr(get_settings(), "checkpoint_steps", 40)
    monkeypatch.setattr(get_settings(), "checkpoint_seconds", 0)
    specs = specs_for("adamw", {"name": "warmup-cosine", "warmup_steps": 10}, steps=120)
    whole = [ListSink() for _ in specs]
    run_pack(specs, whole, DEVICE)

    first = [CheckpointSink(stop_at=60) for _ in specs]  # a worker shutting down at step 60
    outcomes = run_pack(specs, first, DEVICE)
    assert [o.status for o in outcomes] == ["cancelled"] * 3
    assert [sorted(s.saved) for s in first] == [
        [41, 61]
    ] * 3  # flushes at 1, 21, 41...: every 40 steps, and where it stopped
    blobs = [s.saved[61] for s in first]

    again = [ListSink() for _ in specs]  # the whole pack resumes on another worker
    assert all(o.status == "completed" for o in run_pack(specs, again, DEVICE, resume=blobs))
    for m, spec in enumerate(specs):
        solo = ListSink()  # and each member resumes alone (a pack of one)
        run_pack([spec], [solo], DEVICE, resume=[blobs[m]])
        before = [r for r in first[m].rows if r[0] <= 61]
        for resumed in (again[m], solo):
            assert min(s for s, _, _ in resumed.rows) == 62
            joined = ListSink(rows=before + resumed.rows)
            got, want = series(joined), series(whole[m])
            assert got.keys() == want.keys()
            for key in want:  # wall-clock metrics excluded: COMPARED holds what training determines
                assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), key


def test_resume_refuses_checkpoints_of_different_steps_or_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.settings import get_settings

    monkeypatch.setattr(get_settings(), "flush_steps", 5)
    monkeypatch.setattr(get_settings(), "flush_seconds", 1e9)
    specs = specs_for("adamw", {"name": "constant"}, steps=30)
    sinks = [CheckpointSink(stop_at=s) for s in (10, 20, 20)]
    for m, spec in enumerate(specs):
        run_pack([spec], [sinks[m]], DEVICE)
    blobs = [max(s.saved.items())[1] for s in sinks]
    with pytest.raises(ValueError, match="one step"):
        run_pack(specs, [ListSink() for _ in specs], DEVICE, resume=blobs)
    other = specs_for("adamw", {"name": "constant"}, steps=31)[0]
    with pytest.raises(ValueError, match="another kind of run"):
        run_pack([other], [ListSink()], DEVICE, resume=[blobs[0]])


def test_plan_packs_groups_what_shares_a_key_up_to_the_cap() -> None:
    from workers.packed import plan_packs

    base = {"task": "digits-mlp", "optimizer": "adamw", "steps": 10}
    specs = [parse_spec({**base, "seed": s, "optimizer": {"name": "adamw", "lr": lr}})
             for lr in (1e-3, 3e-3, 1e-2) for s in range(3)]  # fmt: skip
    specs += [parse_spec({**base, "optimizer": "muon"}), parse_spec({**base, "steps": 11}),
              parse_spec({**base, "steps": 12}), parse_spec({**base, "steps": 12, "seed": 1})]  # fmt: skip
    assert plan_packs(specs, cap=4) == [[0, 1, 2, 3], [4, 5, 6, 7], [11, 12]]  # 8 alone: a pack of one is none
    assert plan_packs(specs, cap=32) == [[0, 1, 2, 3, 4, 5, 6, 7, 8], [11, 12]]
    assert plan_packs(specs, cap=1) == []


def test_a_task_whose_entry_says_it_does_not_pack_trains_alone() -> None:
    """charlm-transformer: vmap loops over members through its fused attention kernels (slower packed)."""
    assert pack_key(parse_spec({"task": "charlm-transformer", "optimizer": "adamw", "steps": 10})) is None
